"""Slack: slash commands and clicks in (slack-bolt), outbox deliveries out (Web API).

Inbound, Bolt verifies every request's signature (401 and nothing runs when it
fails), the listener acknowledges at once, and the command or click is
normalised into a ``Command`` or ``Click`` handed to the handlers in a task
the engine tracks. Outbound, the bot never calls Slack from a procedure: the
``OutboxSurface`` writes the neutral message to the store and ``SlackDelivery``
renders it as Block Kit when it sends it (a thread reply, and every update of
one, with the thread's look: the store says which messages are replies), mapping
Slack's answers onto retry-later (429 with Retry-After, 5xx, outages) and
undeliverable (bad blocks, revoked token). A 429 pauses the method it hit
for every item (in that channel for the ``chat.*`` methods, where Slack
counts per channel), so a rate limit is not met again by a burst of the
other queued messages.

Posts are idempotent: each post and thread reply carries message metadata
with its outbox key (``sms_bot_outbox``), and when an attempt ended without
an answer (a timeout, a reset connection, a 5xx: Slack may have posted it)
the next attempt first looks for it in the channel's history or the thread
(``include_all_metadata``) and adopts its ts instead of posting it again.
That needs the ``channels:history``/``groups:history`` scopes (and
``channels:read``/``groups:read`` to find a channel given by name); without
them the bot says so once in the log and posts again. Posts through a
command's ``response_url`` cannot be looked up (Slack gives them no ts and
no history), so one of those that timed out may show twice.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import (
    warning_client_prioritized_and_token_skipped,
    warning_token_skipped,
)
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.chat.blockkit import to_block_kit, to_thread_reply
from bot.chat.slack_inbound import (
    MalformedPayload,
    check_payload,
    click_from,
    command_from,
    parse_slack_body,
)
from bot.clock import Clock
from bot.events import Click, Command
from bot.http import read_body
from bot.outbox import (
    LostClaim,
    MaybeDelivered,
    OutboxSurface,
    OutboxWorker,
    Outgoing,
    RetryLater,
    Undeliverable,
    chat_message,
    maybe_delivered,
)
from bot.store import Store
from bot.store.base import OutboxItem

__all__ = [
    "MAX_BODY_BYTES",
    "METADATA_EVENT",
    "VIA_RESPONSE_URL",
    "SlackDelivery",
    "build_slack_app",
    "slack_client",
    "slack_events_route",
    "slack_http_routes",
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
# Errors that mean Slack may have done part of the work before failing.
_MAYBE_DONE = frozenset({"fatal_error", "internal_error", "service_unavailable"})
# The event_type of the metadata that names a post by its outbox key.
METADATA_EVENT = "sms_bot_outbox"
# Looking for an earlier attempt: from a minute before the item was queued
# (the bot's and Slack's clocks differ a little), a bounded number of pages.
_LOOKBACK_S = 60.0
_LOOKUP_PAGE = 200
_LOOKUP_PAGES = 5
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
# Methods whose rate limit Slack keeps per channel (about one message a second);
# the others are limited per method and workspace.
_PER_CHANNEL = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral"})

CommandSink = Callable[[Command], Awaitable[Any]]
ClickSink = Callable[[Click], Awaitable[Any]]


def slack_client(
    *,
    token: str,
    base_url: str,
    timeout: float = 10.0,
    session: aiohttp.ClientSession | None = None,
) -> AsyncWebClient:
    """A Web API client with no retries of its own: the outbox does the retrying.

    ``timeout`` (seconds) bounds each call; a post that outlives it is not
    known to have failed (see ``MaybeDelivered``). ``session``: without one,
    slack_sdk opens a new session, and so a new connection, for every call,
    which puts a TCP (and TLS) handshake before every post; the outbox's
    client gets one that keeps its connections (closed by its owner).
    """
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        session=session,
        # slack_sdk annotates int but hands it to aiohttp's ClientTimeout, which takes float.
        timeout=timeout,  # type: ignore[arg-type]
        retry_handlers=[],
    )


def slack_surface(
    *,
    store: Store,
    clock: Clock,
    wake: Callable[[], None],
    worker: OutboxWorker | None = None,
) -> OutboxSurface:
    """Slack's ``ChatSurface``: the outbox, delivered (and rendered) by ``SlackDelivery``.

    ``worker``: the running worker that new items are claimed for and handed to.
    """
    return OutboxSurface(name="slack", store=store, clock=clock, wake=wake, worker=worker)


class SlackDelivery:
    """Sends outbox items to Slack's Web API (or a command's response_url)."""

    surface = "slack"

    def __init__(
        self, client: AsyncWebClient, session: aiohttp.ClientSession, store: Store
    ) -> None:
        self._client = client
        self._session = session
        self._store = store
        # Channel names (``#sms-alerts``) to the ids Slack answered for them.
        self._channel_ids: dict[str, str] = {}
        # Why the bot could not look for an earlier attempt, each logged once.
        self._cannot_look: set[str] = set()

    def rate_keys(self, out: Outgoing) -> tuple[str, ...]:
        """The methods (and channels) this item may call, as ``_call`` names their pauses."""
        item = out.item
        if item.op == "update":
            return (self._pause_key("chat.update", item.channel),)
        if item.op == "ephemeral":
            if out.reply_url:
                return ()
            return (self._pause_key("chat.postEphemeral", item.channel),)
        keys: tuple[str, ...] = (self._pause_key("chat.postMessage", item.channel),)
        if maybe_delivered(item):
            keys += ("conversations.history", "conversations.replies", "conversations.list")
        return keys

    def _pause_key(self, method: str, channel: Any) -> str:
        if method not in _PER_CHANNEL:
            return method
        name = str(channel or "")
        return f"{method} {self._channel_ids.get(name, name)}"

    async def deliver(self, out: Outgoing) -> None:
        item = out.item
        if item.op == "post":
            await self._post(out, _content(out, thread=False))
        elif item.op == "update":
            await self._update(out)
        elif item.op == "reply":
            await self._reply(out, _content(out, thread=True))
        elif item.op == "ephemeral":
            await self._ephemeral(out, _content(out, thread=False))
        else:
            raise Undeliverable(f"unknown outbox op {item.op!r}")

    async def _landed(self, out: Outgoing, *, channel: str, ts: str, thread_ts: str | None) -> None:
        """Record where the item's message is, while the item is still this worker's."""
        landed = chat_message(out.item, channel=channel, ts=ts, thread_ts=thread_ts)
        if not await self._store.chat_message_put(landed, claim=out.item):
            raise LostClaim(f"outbox item {out.item.id} was claimed by another worker")

    async def _post(self, out: Outgoing, content: dict[str, Any]) -> None:
        item, reply_url = out.item, out.reply_url
        if maybe_delivered(item):
            found = await self._find_earlier(item, channel=item.channel, thread_ts=None)
            if found is not None:
                await self._landed(out, channel=found[0], ts=found[1], thread_ts=None)
                return
        try:
            await out.check_claim()
            resp = await self._call(
                "chat.postMessage", channel=item.channel, metadata=_metadata(item), **content
            )
        except Undeliverable as exc:
            if str(exc) in _USE_RESPONSE_URL and reply_url:
                await out.check_claim()
                await self._respond(reply_url, {"response_type": "in_channel", **content})
                await self._landed(out, channel=item.channel, ts=VIA_RESPONSE_URL, thread_ts=None)
                return
            raise
        self._channel_ids[item.channel] = str(resp["channel"])
        await self._landed(out, channel=str(resp["channel"]), ts=str(resp["ts"]), thread_ts=None)

    async def _update(self, out: Outgoing) -> None:
        target = await self._store.chat_message_get(out.item.message_key)
        if target is None or target.ts is None:
            raise Undeliverable("the message to update was never posted")
        # A delivered thread reply is stored with its thread (see ``_reply``): whoever
        # queued this update, and whenever, it keeps the look the reply was posted with.
        content = _content(out, thread=target.thread_ts is not None)
        if target.ts == VIA_RESPONSE_URL:
            # No ts to update: only the final state is worth another message.
            if out.final and out.reply_url:
                await out.check_claim()
                await self._respond(out.reply_url, {"response_type": "in_channel", **content})
            return
        await out.check_claim()
        await self._call("chat.update", channel=target.channel, ts=target.ts, **content)

    async def _reply(self, out: Outgoing, content: dict[str, Any]) -> None:
        item, reply_url = out.item, out.reply_url
        parent = await self._store.chat_message_get(item.parent_key) if item.parent_key else None
        if parent is None or parent.ts is None:
            raise Undeliverable("the thread's first message was never posted")
        if parent.ts == VIA_RESPONSE_URL:
            # No lookup possible here: Slack keeps no ts or history of response_url posts.
            if not reply_url:
                raise Undeliverable("no thread and no response_url to answer in")
            await out.check_claim()
            await self._respond(reply_url, {"response_type": "in_channel", **content})
            # Stored as a reply (a thread with no ts either), so its updates keep its look.
            await self._landed(
                out, channel=parent.channel, ts=VIA_RESPONSE_URL, thread_ts=VIA_RESPONSE_URL
            )
            return
        thread_ts = parent.thread_ts or parent.ts
        if maybe_delivered(item):
            found = await self._find_earlier(item, channel=parent.channel, thread_ts=thread_ts)
            if found is not None:
                await self._landed(out, channel=found[0], ts=found[1], thread_ts=thread_ts)
                return
        await out.check_claim()
        resp = await self._call(
            "chat.postMessage",
            channel=parent.channel,
            thread_ts=thread_ts,
            metadata=_metadata(item),
            **content,
        )
        await self._landed(
            out, channel=str(resp["channel"]), ts=str(resp["ts"]), thread_ts=thread_ts
        )

    async def _ephemeral(self, out: Outgoing, content: dict[str, Any]) -> None:
        item, reply_url, user = out.item, out.reply_url, out.user
        await out.check_claim()
        if reply_url:
            await self._respond(
                reply_url,
                {"response_type": "ephemeral", "replace_original": False, **content},
            )
            return
        await self._call("chat.postEphemeral", channel=item.channel, user=user, **content)

    async def _find_earlier(
        self, item: OutboxItem, *, channel: str, thread_ts: str | None
    ) -> tuple[str, str] | None:
        """(channel id, ts) of the message an earlier attempt posted, if Slack has it.

        Raises ``MaybeDelivered`` when the lookup itself fails (timeout, 429):
        posting without knowing could make the duplicate this is here to avoid.
        """
        channel_id = await self._channel_id(channel)
        if channel_id is None:
            return None
        method = "conversations.replies" if thread_ts else "conversations.history"
        args: dict[str, Any] = {
            "channel": channel_id,
            "oldest": f"{item.created_at.timestamp() - _LOOKBACK_S:.6f}",
            "include_all_metadata": True,
            "limit": _LOOKUP_PAGE,
        }
        if thread_ts:
            args["ts"] = thread_ts
        for _ in range(_LOOKUP_PAGES):
            resp = await self._lookup(method, args)
            if resp is None:
                return None
            for message in resp.get("messages") or []:
                if isinstance(message, dict) and _is_post_of(message, item.message_key):
                    log.info("slack.earlier_post_adopted", message_key=item.message_key)
                    self._channel_ids[channel] = channel_id
                    return channel_id, str(message.get("ts"))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
            args["cursor"] = cursor
        log.warning("slack.earlier_post_not_found", message_key=item.message_key)
        return None

    async def _channel_id(self, channel: str) -> str | None:
        """The id the history methods need; posts take a ``#name`` too."""
        if _CHANNEL_ID.match(channel):
            return channel
        if channel in self._channel_ids:
            return self._channel_ids[channel]
        wanted = channel.lstrip("#")
        args: dict[str, Any] = {
            "types": "public_channel,private_channel",
            "exclude_archived": True,
            "limit": _LOOKUP_PAGE,
        }
        for _ in range(_LOOKUP_PAGES):
            resp = await self._lookup("conversations.list", args)
            if resp is None:
                return None
            for found in resp.get("channels") or []:
                if isinstance(found, dict) and found.get("name") == wanted:
                    self._channel_ids[channel] = str(found.get("id"))
                    return self._channel_ids[channel]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
            args["cursor"] = cursor
        self._cannot_look_for(f"no channel named {wanted} found")
        return None

    async def _lookup(self, method: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """One page of a lookup; None when Slack refuses to answer it (then: post again)."""
        try:
            return await self._call(method, form=True, **args)
        except (Undeliverable, _Refused) as exc:
            self._cannot_look_for(f"{method}: {exc}")
            return None
        except RetryLater as exc:
            raise MaybeDelivered(
                f"looking for the earlier attempt: {exc}", after=exc.after, pause=exc.pause
            ) from exc

    def _cannot_look_for(self, reason: str) -> None:
        if reason not in self._cannot_look:
            self._cannot_look.add(reason)
            log.warning(
                "slack.cannot_look_for_earlier_posts",
                reason=reason,
                consequence="a post whose answer timed out is posted again and may show twice",
                scopes="channels:history groups:history channels:read groups:read",
            )

    async def _call(self, method: str, *, form: bool = False, **args: Any) -> dict[str, Any]:
        """One Web API call; ``form`` for the read methods, which Slack takes only as a form."""
        try:
            if form:
                params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in args.items()}
                resp = await self._client.api_call(method, params=params)
            else:
                resp = await self._client.api_call(method, json=args)
        except SlackApiError as exc:
            response = exc.response
            if response.status_code == 429:
                after = _retry_after(response.headers)
                pause = self._pause_key(method, args.get("channel"))
                raise RetryLater(
                    f"{method}: rate limited", after=after, pause=pause, reason="ratelimited"
                ) from exc
            error = str(response.get("error") or f"HTTP {response.status_code}")
            reason = _reason(error, response.status_code)
            if response.status_code >= 500 or error in _MAYBE_DONE:
                raise MaybeDelivered(f"{method}: {error}", reason=reason) from exc
            if error in _PERMANENT:
                raise Undeliverable(error, reason=reason) from exc
            raise _Refused(f"{method}: {error}", reason=reason) from exc
        except aiohttp.ClientConnectorError as exc:
            # Never connected, so nothing was sent.
            raise RetryLater(f"{method}: {type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # Sent, perhaps carried out, but no answer (or none that could be read).
            raise MaybeDelivered(f"{method}: {type(exc).__name__}: {exc}") from exc
        return dict(resp.data) if isinstance(resp.data, dict) else {}

    async def _respond(self, url: str, body: dict[str, Any]) -> None:
        # A timed-out response_url post is retried as it is: Slack gives it no ts and
        # it cannot be looked up, so it may show twice (see the module's docstring).
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


def _content(out: Outgoing, *, thread: bool) -> dict[str, Any]:
    """``{"text", "blocks"}``: the message rendered now, in the root or the thread look.

    An item queued before the outbox stored neutral messages holds Slack's
    payload already rendered: that is sent as it is.
    """
    if out.message is None:
        return {"text": out.rendered.get("text", ""), "blocks": out.rendered.get("blocks", [])}
    render = to_thread_reply if thread else to_block_kit
    return dict(render(out.message))


class _Refused(RetryLater):
    """Slack answered with an error worth retrying: known not to have been carried out."""


def _reason(error: str, status: int) -> str:
    """A metric label for Slack's answer: its error code, or the HTTP status without one."""
    return error if _ERROR_CODE.fullmatch(error) else f"http_{status}"


def _metadata(item: OutboxItem) -> dict[str, Any]:
    """The identity Slack keeps with a post, to find it again after a timeout."""
    return {"event_type": METADATA_EVENT, "event_payload": {"key": item.message_key}}


def _is_post_of(message: dict[str, Any], key: str) -> bool:
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_EVENT:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, dict) and payload.get("key") == key


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
    """Bolt app: ``/sms`` commands and button clicks, acknowledged before any work.

    Bolt's own signature check stays on whatever the mode: Socket Mode
    requests skip it by Bolt's design (the websocket is authenticated by the
    app token), HTTP requests never do. Without a signing secret (Socket Mode
    only) Bolt would fall back to an empty key, which anyone can sign with, so
    it is given a random one nobody knows: an HTTP request that reached this
    app anyway would be a 401.
    """
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
        signing_secret=signing_secret or secrets.token_urlsafe(32),
        request_verification_enabled=True,
        # The listeners below only ack and hand the work to a tracked task, so they
        # may run before the response. Without this Bolt runs them in a task of its
        # own and polls for the ack every 10 ms: at least 10 ms added to every ack,
        # and under a burst of commands a hundred timers waking in turn.
        process_before_response=True,
        logger=_BOLT_LOG,
    )

    @app.command("/sms")
    async def _command(ack: AsyncAck, body: dict[str, Any]) -> None:
        try:
            command = command_from(body)
        except MalformedPayload as exc:
            # Over HTTP the route refused it already; this is Socket Mode's copy.
            await ack()
            log.warning("slack.malformed_request", kind="command", error=str(exc))
            return
        await ack(response_type="in_channel")
        spawn(on_command(command), "slack:command")

    @app.action(re.compile(r".+"))
    async def _action(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        try:
            click = click_from(body)
        except MalformedPayload as exc:
            log.warning("slack.malformed_request", kind="click", error=str(exc))
            return
        spawn(on_click(click), "slack:click")

    return app


def slack_events_route(
    app: AsyncApp, *, signing_secret: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``POST /slack/events``: size, signature, shape, then Bolt.

    The signature is checked before the body is parsed, so a forged request
    is a 401 whatever it contains; Bolt checks it again on its side. There is
    no route without a secret: an unverifiable endpoint would run anyone's
    commands, so the caller mounts none (see ``slack_http_routes``).
    """
    if not signing_secret:
        raise ValueError("POST /slack/events needs a signing secret to verify requests")
    verifier = SignatureVerifier(signing_secret)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await read_body(request, limit=MAX_BODY_BYTES)
        if body is None:
            return web.json_response({"error": "body too large"}, status=413)
        if not _signed(verifier, body, request):
            return web.json_response({"error": "invalid signature"}, status=401)
        # A valid signature means valid UTF-8: the signature is computed over the text.
        text = body.decode("utf-8")
        try:
            check_payload(parse_slack_body(text, request.headers))
            bolt_request = _bolt_request(request, text)
        except MalformedPayload as exc:
            log.warning("slack.malformed_request", error=str(exc))
            return web.json_response({"error": f"malformed request: {exc}"}, status=400)
        bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    return handle


def _signed(verifier: SignatureVerifier, body: bytes, request: web.Request) -> bool:
    """slack_sdk's check, with its exceptions on garbage (a non-numeric timestamp, a
    body that is not UTF-8) answered as what they are: a request not signed by Slack.
    """
    try:
        return verifier.is_valid_request(body, dict(request.headers))
    except ValueError:  # int(timestamp), body.decode("utf-8") (UnicodeDecodeError)
        return False


def _bolt_request(request: web.Request, text: str) -> AsyncBoltRequest:
    """Bolt's request, built as its aiohttp adapter builds it, shape errors refused.

    Bolt reads ids out of the body as it builds the request (``"id" in user``
    on whatever ``user`` is); a payload it cannot read is a 400, not a 500.
    """
    try:
        return AsyncBoltRequest(
            body=text, query=request.query_string, headers=dict(request.headers)
        )
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        raise MalformedPayload(f"unreadable payload ({type(exc).__name__})") from None


def slack_http_routes(app: AsyncApp, *, signing_secret: str) -> list[web.RouteDef]:
    """``POST /slack/events`` when requests can be verified, else no route at all (404).

    With Socket Mode only (SLACK_APP_TOKEN, no SLACK_SIGNING_SECRET) Slack
    never calls the bot over HTTP, and BOT_PORT is reachable by whoever must
    reach the alert webhook: the endpoint is left out rather than left open.
    """
    if not signing_secret:
        return []
    return [web.post("/slack/events", slack_events_route(app, signing_secret=signing_secret))]
