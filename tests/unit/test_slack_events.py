"""``POST /slack/events`` through the real aiohttp route and Bolt app, signed as Slack signs.

Nothing here reaches Slack: the sinks record what would have run, and the
Web API client points at a closed port (the listeners never call it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.chat.slack import build_slack_app, slack_client, slack_events_route, slack_http_routes
from bot.events import Click, Command
from bot.http import build_http_app
from tests.harness.slack_signing import (
    FORM_CONTENT_TYPE,
    block_actions_body,
    block_actions_payload,
    sign,
    signed_headers,
    slash_command_body,
)

SECRET = "signing-secret-for-unit-tests"


class Sinks:
    """What the Bolt app hands on: nothing, when a request is refused."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.clicks: list[Click] = []
        self.spawned: list[str] = []

    async def command(self, command: Command) -> None:
        self.commands.append(command)

    async def click(self, click: Click) -> None:
        self.clicks.append(click)

    def spawn(self, work: Awaitable[Any], name: str) -> None:
        self.spawned.append(name)
        # Run nothing: the test only needs to know whether work was handed on.
        close = getattr(work, "close", None)
        if close is not None:
            close()

    @property
    def ran(self) -> bool:
        return bool(self.commands or self.clicks or self.spawned)


def bolt_app(sinks: Sinks, *, secret: str) -> Any:
    return build_slack_app(
        client=slack_client(token="xoxb-test", base_url="http://127.0.0.1:1/api/"),
        signing_secret=secret,
        on_command=sinks.command,
        on_click=sinks.click,
        spawn=sinks.spawn,
    )


async def always_ready() -> None:
    return None


def http_app(sinks: Sinks, *, secret: str = SECRET) -> web.Application:
    app = build_http_app(ready_check=always_ready, registry=CollectorRegistry())
    app.add_routes(slack_http_routes(bolt_app(sinks, secret=secret), signing_secret=secret))
    return app


def test_no_route_can_be_built_without_a_signing_secret() -> None:
    app = bolt_app(Sinks(), secret="")
    with pytest.raises(ValueError, match="needs a signing secret"):
        slack_events_route(app, signing_secret="")
    assert slack_http_routes(app, signing_secret="") == []
    assert len(slack_http_routes(app, signing_secret=SECRET)) == 1


async def test_without_a_secret_the_route_is_not_mounted(aiohttp_client: AiohttpClient) -> None:
    sinks = Sinks()
    client = await aiohttp_client(http_app(sinks, secret=""))
    body = slash_command_body("restart backend", user_id="UAPPROVER")
    for headers in ({"Content-Type": FORM_CONTENT_TYPE}, signed_headers(body, secret="")):
        resp = await client.post("/slack/events", data=body, headers=headers)
        assert resp.status == 404
    assert not sinks.ran


async def test_a_bolt_app_without_a_secret_refuses_http_requests() -> None:
    """Socket Mode only: Bolt's own check is still on and no key signs for it, not even ''."""
    sinks = Sinks()
    app = bolt_app(sinks, secret="")
    for body in (
        slash_command_body("restart backend", user_id="UAPPROVER"),
        block_actions_body("restart", "proposal-1", user_id="UAPPROVER"),
    ):
        for headers in ({}, sign(body, secret="")):
            request = AsyncBoltRequest(
                body=body.decode(), headers={"Content-Type": FORM_CONTENT_TYPE, **headers}
            )
            response = await app.async_dispatch(request)
            assert response.status == 401
    assert not sinks.ran


async def test_a_signed_command_and_click_run(aiohttp_client: AiohttpClient) -> None:
    sinks = Sinks()
    client = await aiohttp_client(http_app(sinks))
    for body in (
        slash_command_body("health", user_id="U1"),
        block_actions_body("restart", "proposal-1", user_id="U1"),
    ):
        resp = await client.post(
            "/slack/events", data=body, headers=signed_headers(body, secret=SECRET)
        )
        assert resp.status == 200
    assert sinks.spawned == ["slack:command", "slack:click"]


async def test_a_command_is_acknowledged_without_waiting_for_a_timer() -> None:
    """The ack is the listener's return, not something Bolt polls for every 10 ms.

    Counted in turns of the event loop, not in time: the dispatch is done after
    a few turns, where Bolt's polling needs its 10 ms timer to fire first.
    """
    sinks = Sinks()
    app = bolt_app(sinks, secret=SECRET)
    body = slash_command_body("health", user_id="U1")
    headers = {k: [v] for k, v in signed_headers(body, secret=SECRET).items()}
    request = AsyncBoltRequest(body=body.decode(), headers=headers)
    dispatch = asyncio.ensure_future(app.async_dispatch(request))
    turns = 0
    while not dispatch.done() and turns < 100:
        await asyncio.sleep(0)
        turns += 1
    assert dispatch.done(), "the ack waited for a timer"
    assert (await dispatch).status == 200
    assert sinks.spawned == ["slack:command"]


# -- garbage: 401 when unsigned, 400 when signed but not what Slack sends ------------------------

NOW = str(int(time.time()))
COMMAND = slash_command_body("restart backend", user_id="UAPPROVER")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(COMMAND, {}, id="no-headers"),
        pytest.param(COMMAND, {"X-Slack-Request-Timestamp": NOW}, id="no-signature"),
        pytest.param(COMMAND, {"X-Slack-Signature": "v0=00"}, id="no-timestamp"),
        pytest.param(
            COMMAND,
            {"X-Slack-Request-Timestamp": "not-a-number", "X-Slack-Signature": "v0=00"},
            id="timestamp-not-a-number",
        ),
        pytest.param(
            COMMAND,
            {"X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": "v0=00"},
            id="timestamp-too-long-for-int",
        ),
        pytest.param(
            b"text=\xff\xfe\xfd",
            {"X-Slack-Request-Timestamp": NOW, "X-Slack-Signature": "v0=00"},
            id="body-not-utf8",
        ),
        pytest.param(
            b"text=\xff\xfe\xfd",
            sign(b"text=\xff\xfe\xfd", secret=SECRET),
            id="body-not-utf8-signed",
        ),
    ],
)
async def test_unsigned_garbage_is_a_401(
    aiohttp_client: AiohttpClient, body: bytes, headers: dict[str, str]
) -> None:
    sinks = Sinks()
    client = await aiohttp_client(http_app(sinks))
    resp = await client.post(
        "/slack/events", data=body, headers={"Content-Type": FORM_CONTENT_TYPE, **headers}
    )
    assert resp.status == 401
    assert await resp.json() == {"error": "invalid signature"}
    assert not sinks.ran


def _click(**changes: Any) -> bytes:
    payload = block_actions_payload("restart", "proposal-1", user_id="UAPPROVER")
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    return urlencode({"payload": json.dumps(payload)}).encode()


def _command(**changes: str | None) -> bytes:
    fields = dict(parse_qsl(COMMAND.decode(), keep_blank_values=True))
    for key, value in changes.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    return urlencode(fields).encode()


JSON_TYPE = "application/json"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"payload=%5B1%2C2%5D", FORM_CONTENT_TYPE, id="payload-json-list"),
        pytest.param(b"payload=%22x%22", FORM_CONTENT_TYPE, id="payload-json-string"),
        pytest.param(b"payload=%7Bnot-json", FORM_CONTENT_TYPE, id="payload-not-json"),
        pytest.param(b"[1, 2]", JSON_TYPE, id="json-list"),
        pytest.param(
            urlencode({"payload": "[" * 100_000 + "]" * 100_000}).encode(),
            FORM_CONTENT_TYPE,
            id="payload-nested-100000-deep",
        ),
        pytest.param(_click(actions=[{}]), FORM_CONTENT_TYPE, id="action-without-id"),
        pytest.param(_click(actions=[]), FORM_CONTENT_TYPE, id="no-actions"),
        pytest.param(_click(actions="restart"), FORM_CONTENT_TYPE, id="actions-a-string"),
        pytest.param(_click(actions=[1]), FORM_CONTENT_TYPE, id="action-a-number"),
        pytest.param(_click(user="UAPPROVER"), FORM_CONTENT_TYPE, id="user-a-string"),
        pytest.param(_click(user=None), FORM_CONTENT_TYPE, id="no-user"),
        pytest.param(_click(user={"id": 5}), FORM_CONTENT_TYPE, id="user-id-a-number"),
        pytest.param(
            _click(channel=None, container=None), FORM_CONTENT_TYPE, id="click-without-channel"
        ),
        pytest.param(_click(container="x"), FORM_CONTENT_TYPE, id="container-a-string"),
        pytest.param(_click(enterprise=5), FORM_CONTENT_TYPE, id="enterprise-a-number"),
        pytest.param(_command(user_id=None), FORM_CONTENT_TYPE, id="command-without-user"),
        pytest.param(_command(user_id=""), FORM_CONTENT_TYPE, id="command-with-empty-user"),
        pytest.param(_command(channel_id=None), FORM_CONTENT_TYPE, id="command-without-channel"),
        pytest.param(
            json.dumps(
                {"command": "/sms", "text": "health", "user_id": 5, "channel_id": "C1"}
            ).encode(),
            JSON_TYPE,
            id="json-command-user-a-number",
        ),
        pytest.param(
            json.dumps({"type": "shortcut", "user": 5}).encode(), JSON_TYPE, id="other-kind-user-5"
        ),
    ],
)
async def test_signed_but_malformed_is_a_400_and_runs_nothing(
    aiohttp_client: AiohttpClient, body: bytes, content_type: str
) -> None:
    sinks = Sinks()
    client = await aiohttp_client(http_app(sinks))
    headers = signed_headers(body, secret=SECRET, content_type=content_type)
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"].startswith("malformed request")
    assert not sinks.ran


async def test_over_socket_mode_a_malformed_request_is_acknowledged_and_dropped() -> None:
    """Socket Mode bypasses the route: the listeners refuse what they cannot read."""
    sinks = Sinks()
    app = bolt_app(sinks, secret="")
    command = dict(parse_qsl(COMMAND.decode(), keep_blank_values=True))
    del command["user_id"]
    click = block_actions_payload("restart", "proposal-1", user_id="UAPPROVER")
    click["container"] = "x"
    del click["channel"]
    for body in (command, click):
        response = await app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
        assert response.status == 200
    assert not sinks.ran
    good = dict(parse_qsl(COMMAND.decode(), keep_blank_values=True))
    response = await app.async_dispatch(AsyncBoltRequest(body=good, mode="socket_mode"))
    assert response.status == 200
    assert sinks.spawned == ["slack:command"]
