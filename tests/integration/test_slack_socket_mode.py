"""Slack over Socket Mode: ``sms-bot serve`` with SLACK_APP_TOKEN against the fake Slack.

The bot opens the websocket itself (``apps.connections.open`` with the
app-level token, then the ``ws://`` URL it is given), so nothing reaches it
over HTTP: commands and clicks arrive as envelopes on the websocket, the bot
acknowledges each one there, and its answers go out through the Web API and
``response_url`` as in HTTP mode. The first tests drive the fake with
slack_sdk's own ``SocketModeClient`` so a failure there points at the fake,
not at the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.harness.docker import free_port, wait_until
from tests.harness.fake_slack import APP_ID, Ephemeral, FakeMessage, FakeSlack
from tests.harness.processes import stop_async
from tests.harness.serve_env import serve_env
from tests.harness.slack_signing import (
    FORM_CONTENT_TYPE,
    block_actions_body,
    block_actions_payload,
    sign,
    slash_command_body,
)

pytestmark = pytest.mark.integration

SMS_BOT = str(Path(sys.executable).with_name("sms-bot"))
APP_TOKEN = "xapp-test-token"
BOT_TOKEN = "xoxb-test-token"
CHANNEL = "C0ALERTS"
USER = "UOPS"


def _command_payload(fake: FakeSlack, text: str) -> dict[str, str]:
    """``/sms <text>`` as the JSON object Socket Mode carries (the HTTP form's fields)."""
    body = slash_command_body(
        text,
        user_id=USER,
        channel_id=CHANNEL,
        response_url=fake.response_url(CHANNEL, user=USER),
    )
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


# -- the fake, driven by slack_sdk's SocketModeClient -------------------------------------------


@pytest.fixture
async def sdk_client(fake_slack: FakeSlack) -> AsyncIterator[SocketModeClient]:
    client = SocketModeClient(
        app_token=APP_TOKEN,
        web_client=AsyncWebClient(base_url=fake_slack.api_url, retry_handlers=[]),
        auto_reconnect_enabled=False,
    )
    try:
        yield client
    finally:
        await client.close()  # type: ignore[no-untyped-call]


async def test_sdk_client_connects_gets_hello_and_acks_envelopes(
    fake_slack: FakeSlack, sdk_client: SocketModeClient
) -> None:
    hello = asyncio.get_running_loop().create_future()

    async def on_message(_: AsyncBaseSocketModeClient, message: dict[str, Any], raw: Any) -> None:
        if message.get("type") == "hello" and not hello.done():
            hello.set_result(message)

    async def on_request(client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        answer = {"text": f"got {req.type} {req.accepts_response_payload}"}
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload=answer)
        )

    sdk_client.message_listeners.append(on_message)
    sdk_client.socket_mode_request_listeners.append(on_request)
    assert fake_slack.socket_clients == 0
    await sdk_client.connect()  # type: ignore[no-untyped-call]
    await fake_slack.socket_connected(timeout=10)
    assert fake_slack.socket_clients == 1

    [opened] = fake_slack.calls_to("apps.connections.open")
    assert opened.status == 200
    assert sdk_client.wss_uri is not None
    assert sdk_client.wss_uri.startswith(f"ws://127.0.0.1:{fake_slack.url.rsplit(':', 1)[1]}/")

    greeting = await asyncio.wait_for(hello, timeout=10)
    assert greeting["num_connections"] == 1
    assert greeting["connection_info"] == {"app_id": APP_ID}
    assert greeting["debug_info"]["approximate_connection_time"] > 0

    command = await fake_slack.send_envelope("slash_commands", {"command": "/sms", "text": "x"})
    event = await fake_slack.send_envelope(
        "events_api", {"type": "event_callback"}, accepts_response_payload=False
    )
    assert await fake_slack.wait_ack(command, timeout=10) == {
        "envelope_id": command,
        "payload": {"text": "got slash_commands True"},
    }
    assert (await fake_slack.wait_ack(event, timeout=10))["payload"] == {
        "text": "got events_api False"
    }
    assert [e["envelope_id"] for e in fake_slack.envelopes] == [command, event]
    assert fake_slack.envelopes[1]["retry_attempt"] == 0
    assert {m["envelope_id"] for m in fake_slack.socket_messages} == {command, event}

    await sdk_client.close()  # type: ignore[no-untyped-call]
    await fake_slack.socket_disconnected(timeout=10)
    assert fake_slack.socket_clients == 0
    with pytest.raises(RuntimeError, match="no Socket Mode client"):
        await fake_slack.send_envelope("interactive", {})


async def test_connections_open_takes_only_the_app_level_token(fake_slack: FakeSlack) -> None:
    web = AsyncWebClient(base_url=fake_slack.api_url, retry_handlers=[])

    async def error(call: Any) -> str:
        with pytest.raises(SlackApiError) as info:
            await call
        return str(info.value.response["error"])

    assert await error(web.apps_connections_open(app_token=BOT_TOKEN)) == "not_allowed_token_type"
    assert await error(web.apps_connections_open(app_token="xapp-other")) == "invalid_auth"
    assert await error(web.api_call("apps.connections.open")) == "not_authed"
    app_web = AsyncWebClient(token=APP_TOKEN, base_url=fake_slack.api_url, retry_handlers=[])
    assert await error(app_web.chat_postMessage(channel=CHANNEL, text="x")) == (
        "not_allowed_token_type"
    )
    assert fake_slack.messages(CHANNEL) == []
    opened = await web.apps_connections_open(app_token=APP_TOKEN)
    assert opened["ok"] is True and opened["url"].startswith("ws://127.0.0.1:")


async def test_socket_answers_pings_and_refuses_unknown_tickets(fake_slack: FakeSlack) -> None:
    web = AsyncWebClient(base_url=fake_slack.api_url, retry_handlers=[])
    url = str((await web.apps_connections_open(app_token=APP_TOKEN))["url"])
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, autoping=False) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello"
            await ws.ping(b"sdk-ping-pong:1")
            pong = await ws.receive(timeout=5)
            assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"sdk-ping-pong:1")
            await ws.send_str("not json")
            envelope_id = await fake_slack.send_envelope("interactive", {"type": "block_actions"})
            sent = await ws.receive_json(timeout=5)
            assert sent == {
                "envelope_id": envelope_id,
                "type": "interactive",
                "payload": {"type": "block_actions"},
                "accepts_response_payload": True,
            }
            await ws.send_json({"envelope_id": envelope_id})
            assert await fake_slack.wait_ack(envelope_id, timeout=5) == {"envelope_id": envelope_id}
            assert fake_slack.socket_messages[0] == {"raw": "not json"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"{url.rsplit('/', 1)[0]}/0000")
        assert info.value.status == 401
    with pytest.raises(TimeoutError, match="ack of nope"):
        await fake_slack.wait_ack("nope", timeout=0.1)


async def test_hello_counts_connections_and_close_sends_going_away() -> None:
    fake = await FakeSlack().start()
    web = AsyncWebClient(base_url=fake.api_url, retry_handlers=[])
    try:
        async with aiohttp.ClientSession() as session:
            urls = [
                str((await web.apps_connections_open(app_token=APP_TOKEN))["url"]) for _ in "ab"
            ]
            first = await session.ws_connect(urls[0])
            assert (await first.receive_json(timeout=5))["num_connections"] == 1
            second = await session.ws_connect(urls[1])
            assert (await second.receive_json(timeout=5))["num_connections"] == 2
            await fake.socket_connected(timeout=5, count=2)
            assert fake.socket_clients == 2

            envelope_id = await fake.send_envelope("events_api", {"type": "event_callback"})
            assert (await second.receive_json(timeout=5))["envelope_id"] == envelope_id

            await fake.close()
            for ws in (first, second):
                closing = await ws.receive(timeout=5)
                assert (closing.type, closing.data) == (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSCloseCode.GOING_AWAY,
                )
            assert fake.socket_clients == 0
    finally:
        await fake.close()


# -- sms-bot serve over Socket Mode --------------------------------------------------------------


def _env(tmp_path: Path, fake: FakeSlack) -> dict[str, str]:
    return serve_env(
        tmp_path,
        BOT_PORT=str(free_port()),
        BOT_STATE_URL=f"sqlite:///{tmp_path}/state.db",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=fake.api_url,
        SLACK_ALERT_CHANNEL=CHANNEL,
    )


async def _stop(proc: asyncio.subprocess.Process) -> int:
    await stop_async(proc, timeout=15)
    assert proc.returncode is not None
    return proc.returncode


@contextlib.asynccontextmanager
async def _serving(
    tmp_path: Path, fake_slack: FakeSlack, env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``sms-bot serve`` with ``env``, connected to the fake over Socket Mode; stopped after."""
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            SMS_BOT, "serve", env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        exited = asyncio.create_task(proc.wait())
        connected = asyncio.create_task(fake_slack.socket_connected(timeout=30))
        try:
            done, _ = await asyncio.wait({exited, connected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, connected):
                task.cancel()
        if connected not in done:
            pytest.fail(f"sms-bot serve exited with {proc.returncode} before connecting")
        connected.result()  # a TimeoutError naming what it waited for
        yield proc
    finally:
        await _stop(proc)
        print(f"--- sms-bot serve output ---\n{log.read_text()[-5000:]}")  # shown on failure


@pytest.fixture
async def serve(tmp_path: Path, fake_slack: FakeSlack) -> AsyncIterator[asyncio.subprocess.Process]:
    async with _serving(tmp_path, fake_slack, _env(tmp_path, fake_slack)) as proc:
        yield proc


def _text(item: FakeMessage | Ephemeral) -> str:
    return json.dumps(item.blocks) + item.text


async def test_commands_and_clicks_over_socket_mode(
    serve: asyncio.subprocess.Process, fake_slack: FakeSlack
) -> None:
    # One call checks the app token at start, one opens the connection.
    opened = fake_slack.calls_to("apps.connections.open")
    assert [c.status for c in opened] == [200, 200]
    assert fake_slack.socket_clients == 1

    # /sms help: acknowledged on the websocket, answered only to the user.
    envelope = await fake_slack.send_envelope(
        "slash_commands", _command_payload(fake_slack, "help")
    )
    ack = await fake_slack.wait_ack(envelope, timeout=10)
    assert ack["envelope_id"] == envelope
    assert ack.get("payload", {}).get("response_type") == "in_channel"

    async def help_shown() -> bool:
        return any("sms-bot commands" in _text(e) for e in fake_slack.ephemerals)

    await wait_until(help_shown, timeout=30, what="the help answer via response_url")
    [answer] = fake_slack.ephemerals
    assert (answer.channel, answer.user) == (CHANNEL, USER)
    assert "restart" in _text(answer) and "status" in _text(answer)
    assert fake_slack.messages(CHANNEL) == []

    # /sms status: a procedure whose message is posted in the channel.
    envelope = await fake_slack.send_envelope(
        "slash_commands", _command_payload(fake_slack, "status")
    )
    assert (await fake_slack.wait_ack(envelope, timeout=10))["envelope_id"] == envelope

    def status_posts() -> list[FakeMessage]:
        return [m for m in fake_slack.messages(CHANNEL) if "Container status" in _text(m)]

    async def status_finished() -> bool:
        return any(not m.text.startswith("RUNNING") for m in status_posts())

    await wait_until(status_finished, timeout=30, what="the finished status message in the channel")
    posted = fake_slack.calls_to("chat.postMessage")[0]
    assert (posted.status, posted.args["channel"]) == (200, CHANNEL)
    [status] = status_posts()
    assert not status.is_reply
    assert status.updates >= 1  # posted while running, updated with the outcome
    # No Docker engine here: the outcome says so rather than hiding it.
    assert status.text.startswith("FAILED")
    assert "Docker engine is not reachable" in _text(status)

    # A button this bot version does not know: acknowledged, then refused to the clicker.
    payload = block_actions_payload(
        "nonexistent.button",
        "whatever",
        user_id=USER,
        channel_id=CHANNEL,
        message_ts=status.ts,
        response_url=fake_slack.response_url(CHANNEL, user=USER, message_ts=status.ts),
    )
    envelope = await fake_slack.send_envelope("interactive", payload)
    assert await fake_slack.wait_ack(envelope, timeout=10) == {"envelope_id": envelope}

    async def refused() -> bool:
        return any("not known" in _text(e) for e in fake_slack.ephemerals)

    await wait_until(refused, timeout=30, what="the 'not known' answer to the click")
    [refusal] = [e for e in fake_slack.ephemerals if "not known" in _text(e)]
    assert refusal.user == USER
    assert "not known" not in _text(fake_slack.message(status.ts))  # the message is left alone

    # SIGTERM: the bot closes its websocket and stops cleanly.
    assert await _stop(serve) == 0
    await fake_slack.socket_disconnected(timeout=10)
    assert fake_slack.socket_clients == 0


async def test_a_refused_app_token_stops_the_start_with_a_clear_line(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    env = {**_env(tmp_path, fake_slack), "SLACK_APP_TOKEN": "xapp-wrong"}
    proc = await asyncio.create_subprocess_exec(
        SMS_BOT,
        "serve",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2
    assert "configuration error: SLACK_APP_TOKEN: Slack refused it (invalid_auth)" in err.decode()
    assert fake_slack.socket_clients == 0


async def test_without_a_signing_secret_slack_events_is_not_served(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """Socket Mode only: nobody reaching BOT_PORT can run a command or click over HTTP."""
    env = _env(tmp_path, fake_slack)
    del env["SLACK_SIGNING_SECRET"]
    env.update({"SMS_OPERATORS": USER, "SMS_APPROVERS": USER})
    events = f"http://127.0.0.1:{env['BOT_PORT']}/slack/events"
    restart = slash_command_body(
        "restart backend",
        user_id=USER,
        channel_id=CHANNEL,
        response_url=fake_slack.response_url(CHANNEL, user=USER),
    )
    click = block_actions_body(
        "restart",
        "proposal-1",
        user_id=USER,
        channel_id=CHANNEL,
        response_url=fake_slack.response_url(CHANNEL, user=USER),
    )
    form = {"Content-Type": FORM_CONTENT_TYPE}
    async with _serving(tmp_path, fake_slack, env) as proc:
        async with aiohttp.ClientSession() as session:
            healthz = events.replace("/slack/events", "/healthz")

            async def listening() -> bool:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(healthz) as resp:
                        return resp.status == 200
                return False

            await wait_until(listening, timeout=30, what="the HTTP server")
            for body in (restart, click):
                # Unsigned, and signed with the empty key Bolt would fall back to.
                for headers in (form, {**form, **sign(body, secret="")}):
                    async with session.post(events, data=body, headers=headers) as resp:
                        assert resp.status == 404, await resp.text()

        # Socket Mode still works; once its answer is in, nothing else was run.
        envelope = await fake_slack.send_envelope(
            "slash_commands", _command_payload(fake_slack, "help")
        )
        await fake_slack.wait_ack(envelope, timeout=10)

        async def help_shown() -> bool:
            return any("sms-bot commands" in _text(e) for e in fake_slack.ephemerals)

        await wait_until(help_shown, timeout=30, what="the help answer over Socket Mode")
        assert await _stop(proc) == 0  # drains the outbox: anything queued would be posted

    assert fake_slack.messages(CHANNEL) == []
    assert fake_slack.calls_to("chat.postMessage") == []
    assert [e for e in fake_slack.ephemerals if "sms-bot commands" not in _text(e)] == []
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
        audited = db.execute("SELECT action, target FROM audit").fetchall()
        proposals = db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0]
    assert all("restart" not in target for _, target in audited), audited
    assert [action for action, _ in audited if action == "click"] == []
    assert proposals == 0
    audit_log = (tmp_path / "audit.jsonl").read_text()
    assert "restart" not in audit_log
    log = (tmp_path / "serve.log").read_text().splitlines()
    lines = [json.loads(line) for line in log if line.startswith("{")]
    [mode] = [line for line in lines if line.get("event") == "slack.mode"]
    assert mode["mode"] == (
        "Slack: Socket Mode only; /slack/events not mounted (no SLACK_SIGNING_SECRET)"
    )
    assert (mode["http"], mode["socket_mode"]) == (False, True)
