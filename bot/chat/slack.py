"""Slack: slash commands and clicks in (slack-bolt), outbox deliveries out (Web API).

Inbound, Bolt verifies every request's signature (401 and nothing runs when it
fails), the listener acknowledges at once, and the command or click is
normalised into a ``Command`` or ``Click`` handed to the handlers in a task
the engine tracks. Outbound, the bot never calls Slack from a procedure: the
``OutboxSurface`` writes to the store and ``SlackDelivery`` sends it, mapping
Slack's answers onto retry-later (429 with Retry-After, 5xx, outages) and
undeliverable (bad blocks, revoked token).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import (
    warning_client_prioritized_and_token_skipped,
    warning_token_skipped,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.chat.base import Conversation
from bot.chat.blockkit import base_action, to_block_kit, to_thread_reply
from bot.deps import Clock
from bot.events import Click, Command
from bot.http import read_body
from bot.outbox import OutboxSurface, RetryLater, Undeliverable, chat_message
from bot.store.base import OutboxItem, Store

__all__ = [
    "MAX_BODY_BYTES",
    "VIA_RESPONSE_URL",
    "SlackDelivery",
    "build_slack_app",
    "slack_client",
    "slack_events_route",
    "slack_surface",
]

log = structlog.get_logger(__name__)

# A chat message that had to go through the command's response_url: it has no ts.
VIA_RESPONSE_URL = "response_url"
# Slack's own requests are small; anything bigger is not Slack.
MAX_BODY_BYTES = 1_000_000

# Errors that retrying cannot fix.
_PERMANENT = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "user_not_in_channel",
        "invalid_arguments",
    }
)
# When the bot cannot post in the channel, the command's response_url still works.
_USE_RESPONSE_URL = frozenset({"not_in_channel", "channel_not_found", "is_archived"})

CommandSink = Callable[[Command], Awaitable[Any]]
ClickSink = Callable[[Click], Awaitable[Any]]


def slack_client(*, token: str, base_url: str) -> AsyncWebClient:
    """A Web API client with no retries of its own: the outbox does the retrying."""
    return AsyncWebClient(token=token, base_url=base_url, timeout=10, retry_handlers=[])


def slack_surface(*, store: Store, clock: Clock, wake: Callable[[], None]) -> OutboxSurface:
    return OutboxSurface(
        name="slack",
        store=store,
        render=to_block_kit,
        render_reply=to_thread_reply,
        clock=clock,
        wake=wake,
    )


class SlackDelivery:
    """Sends outbox items to Slack's Web API (or a command's response_url)."""

    surface = "slack"

    def __init__(
        self, client: AsyncWebClient, session: aiohttp.ClientSession, store: Store
    ) -> None:
        self._client = client
        self._session = session
        self._store = store

    async def deliver(self, item: OutboxItem) -> None:
        payload = dict(item.payload)
        content = {"text": payload.get("text", ""), "blocks": payload.get("blocks", [])}
        reply_url = payload.get("reply_url")
        if item.op == "post":
            await self._post(item, content, reply_url)
        elif item.op == "update":
            await self._update(item, content, reply_url, final=bool(payload.get("final")))
        elif item.op == "reply":
            await self._reply(item, content, reply_url)
        elif item.op == "ephemeral":
            await self._ephemeral(item, content, reply_url, str(payload.get("user", "")))
        else:
            raise Undeliverable(f"unknown outbox op {item.op!r}")

    async def _post(self, item: OutboxItem, content: dict[str, Any], reply_url: Any) -> None:
        try:
            resp = await self._call("chat.postMessage", channel=item.channel, **content)
        except Undeliverable as exc:
            if str(exc) in _USE_RESPONSE_URL and reply_url:
                await self._respond(str(reply_url), {"response_type": "in_channel", **content})
                await self._store.chat_message_put(
                    chat_message(item, channel=item.channel, ts=VIA_RESPONSE_URL, thread_ts=None)
                )
                return
            raise
        await self._store.chat_message_put(
            chat_message(item, channel=str(resp["channel"]), ts=str(resp["ts"]), thread_ts=None)
        )

    async def _update(
        self, item: OutboxItem, content: dict[str, Any], reply_url: Any, *, final: bool
    ) -> None:
        target = await self._store.chat_message_get(item.message_key)
        if target is None or target.ts is None:
            raise Undeliverable("the message to update was never posted")
        if target.ts == VIA_RESPONSE_URL:
            # No ts to update: only the final state is worth another message.
            if final and reply_url:
                await self._respond(str(reply_url), {"response_type": "in_channel", **content})
            return
        await self._call("chat.update", channel=target.channel, ts=target.ts, **content)

    async def _reply(self, item: OutboxItem, content: dict[str, Any], reply_url: Any) -> None:
        parent = await self._store.chat_message_get(item.parent_key) if item.parent_key else None
        if parent is None or parent.ts is None:
            raise Undeliverable("the thread's first message was never posted")
        if parent.ts == VIA_RESPONSE_URL:
            if not reply_url:
                raise Undeliverable("no thread and no response_url to answer in")
            await self._respond(str(reply_url), {"response_type": "in_channel", **content})
            await self._store.chat_message_put(
                chat_message(item, channel=parent.channel, ts=VIA_RESPONSE_URL, thread_ts=None)
            )
            return
        thread_ts = parent.thread_ts or parent.ts
        resp = await self._call(
            "chat.postMessage", channel=parent.channel, thread_ts=thread_ts, **content
        )
        await self._store.chat_message_put(
            chat_message(
                item, channel=str(resp["channel"]), ts=str(resp["ts"]), thread_ts=thread_ts
            )
        )

    async def _ephemeral(
        self, item: OutboxItem, content: dict[str, Any], reply_url: Any, user: str
    ) -> None:
        if reply_url:
            await self._respond(
                str(reply_url),
                {"response_type": "ephemeral", "replace_original": False, **content},
            )
            return
        await self._call("chat.postEphemeral", channel=item.channel, user=user, **content)

    async def _call(self, method: str, **args: Any) -> dict[str, Any]:
        try:
            resp = await self._client.api_call(method, json=args)
        except SlackApiError as exc:
            response = exc.response
            if response.status_code == 429:
                after = _retry_after(response.headers)
                raise RetryLater(f"{method}: rate limited", after=after) from exc
            error = str(response.get("error") or f"HTTP {response.status_code}")
            if response.status_code < 500 and error in _PERMANENT:
                raise Undeliverable(error) from exc
            raise RetryLater(f"{method}: {error}") from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RetryLater(f"{method}: {type(exc).__name__}: {exc}") from exc
        return dict(resp.data) if isinstance(resp.data, dict) else {}

    async def _respond(self, url: str, body: dict[str, Any]) -> None:
        try:
            async with self._session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                if resp.status == 429:
                    raise RetryLater("response_url: rate limited", after=_retry_after(resp.headers))
                if resp.status in (404, 410):
                    raise Undeliverable(f"response_url expired (HTTP {resp.status})")
                if resp.status >= 400:
                    raise RetryLater(f"response_url: HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"response_url: {type(exc).__name__}: {exc}") from exc


def _retry_after(headers: Any) -> float:
    raw = None
    for name in ("Retry-After", "retry-after"):
        raw = headers.get(name) if headers else None
        if raw:
            break
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    try:
        return max(0.0, float(raw)) if raw is not None else 1.0
    except ValueError:
        return 1.0


class _ChosenOnPurpose(logging.Filter):
    """Drops Bolt's two start-up warnings about choices this module makes deliberately.

    Bolt reads ``SLACK_BOT_TOKEN`` from the environment on its own and then
    warns that it ignores it, because a client (ours, without retries) and an
    ``authorize`` (no ``auth.test`` round trip) were given. Both are intended:
    the warnings would only teach operators to ignore stderr. Every other
    Bolt message passes.
    """

    _MESSAGES = frozenset({warning_client_prioritized_and_token_skipped(), warning_token_skipped()})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._MESSAGES


_BOLT_LOG = logging.getLogger("bot.chat.slack.bolt")
_BOLT_LOG.addFilter(_ChosenOnPurpose())


def build_slack_app(
    *,
    client: AsyncWebClient,
    signing_secret: str,
    on_command: CommandSink,
    on_click: ClickSink,
    spawn: Callable[[Awaitable[Any], str], Any],
) -> AsyncApp:
    """Bolt app: ``/sms`` commands and button clicks, acknowledged before any work."""
    token = client.token or ""

    async def authorize(
        enterprise_id: str | None, team_id: str | None, **_: Any
    ) -> AuthorizeResult:
        # One workspace and a known bot token: no auth.test round trip, so a
        # command is still acknowledged (and queued) while Slack's API is down.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

    app = AsyncApp(
        client=client,
        authorize=authorize,
        signing_secret=signing_secret or None,
        request_verification_enabled=bool(signing_secret),
        process_before_response=False,
        logger=_BOLT_LOG,
    )

    @app.command("/sms")
    async def _command(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack(response_type="in_channel")
        command = Command(
            text=str(body.get("text") or ""),
            user=str(body.get("user_id") or "unknown"),
            source="slack",
            conversation=Conversation(
                surface="slack",
                channel=str(body.get("channel_id") or ""),
                reply_url=body.get("response_url") or None,
            ),
        )
        spawn(on_command(command), "slack:command")

    @app.action(re.compile(r".+"))
    async def _action(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id") or ""
        click = Click(
            action=base_action(str(action.get("action_id") or "")),
            value=str(action.get("value") or ""),
            user=str((body.get("user") or {}).get("id") or "unknown"),
            source="slack",
            conversation=Conversation(
                surface="slack",
                channel=str(channel),
                thread=container.get("message_ts"),
                reply_url=body.get("response_url") or None,
            ),
        )
        spawn(on_click(click), "slack:click")

    return app


def slack_events_route(
    app: AsyncApp, *, signing_secret: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``POST /slack/events``: size, signature, shape, then Bolt.

    The signature is checked before the body is parsed, so a forged request
    is a 401 whatever it contains; Bolt checks it again on its side.
    """
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await read_body(request, limit=MAX_BODY_BYTES)
        if body is None:
            return web.json_response({"error": "body too large"}, status=413)
        if verifier is not None and not verifier.is_valid_request(body, dict(request.headers)):
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            bolt_request = await to_bolt_request(_Replayed(request, body))  # type: ignore[arg-type]
        except ValueError as exc:
            log.warning("slack.malformed_request", error=str(exc))
            return web.json_response({"error": "malformed request body"}, status=400)
        bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    return handle


class _Replayed:
    """The parts of a request ``to_bolt_request`` reads, with the body already read."""

    def __init__(self, request: web.Request, body: bytes) -> None:
        self.query_string = request.query_string
        self.headers = request.headers
        self._text = body.decode("utf-8", errors="replace")

    async def text(self) -> str:
        return self._text
