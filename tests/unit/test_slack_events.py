"""``POST /slack/events`` through the real aiohttp route and Bolt app, signed as Slack signs.

Nothing here reaches Slack: the sinks record what would have run, and the
Web API client points at a closed port (the listeners never call it).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

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
