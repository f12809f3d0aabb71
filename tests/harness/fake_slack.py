"""A fake of Slack's Web API on loopback, for tests that drive the real ``slack_sdk``.

``AsyncWebClient(token=..., base_url=f"{fake.url}/api/")`` (and slack-bolt on
top of it) talks to this server unchanged: ``POST`` (or ``GET``) ``/api/<method>`` with a
form, JSON or query-string body and an ``Authorization: Bearer`` header,
answered with ``application/json`` the way Slack answers (HTTP 200 with
``{"ok": false, "error": ...}`` for API errors). Every call is recorded, and
the fake keeps the channels, the latest version of each message, thread
replies, ephemerals and ``response_url`` posts for assertions.

Outage tests inject failures: ``fail_next`` (HTTP 500 with an HTML body, like
a load balancer in trouble), ``rate_limit_next`` (HTTP 429 with
``Retry-After``), ``down()``/``up()`` (503 for everything) and
``error_next`` (one API error for one method), and ``slow_next``: the request
is carried out but answered only after a delay, longer than the client's
timeout, as Slack does when it is slow (the client gives up; the message is
posted all the same).

Messages keep the ``metadata`` they were posted with; ``conversations.history``
and ``conversations.replies`` return it only with ``include_all_metadata``, and
honour ``oldest``, ``latest``, ``inclusive``, ``limit`` and ``cursor`` as Slack
does (history newest first, replies oldest first); both take a channel id
only, as Slack does. ``conversations.list`` lists the channels.

``validate_blocks`` checks the Block Kit limits the bot relies on; the fake
answers ``invalid_blocks`` when it finds a problem, and the renderer's tests
use the same function, so renderer and fake cannot drift apart.

Socket Mode works as with Slack: ``apps.connections.open`` with the app-level
token (``xapp-...``) answers a ``ws://127.0.0.1`` URL on the same server, which
slack_sdk's ``SocketModeClient`` (and Bolt's ``AsyncSocketModeHandler``)
connects to unchanged. The server greets each connection with ``hello``,
answers pings, and records what the client sends. A test pushes envelopes
with ``send_envelope`` and waits for their acknowledgement with ``wait_ack``.

Loaded as a pytest plugin (``tests.harness.fake_slack``) it provides the
``fake_slack`` fixture.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple

import pytest
from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "APP_ID",
    "BOT_ID",
    "BOT_USER_ID",
    "ENVELOPE_TYPES",
    "TEAM_ID",
    "Call",
    "Ephemeral",
    "FakeChannel",
    "FakeMessage",
    "FakeSlack",
    "ResponsePost",
    "fake_slack",
    "validate_blocks",
]

TEAM_ID = "T0001"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0001"
APP_ID = "A0SMSBOT"  # the api_app_id of tests.harness.slack_signing
ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
# Methods Slack takes only as a query string or form: it ignores a JSON body.
_NO_JSON_METHODS = frozenset(
    {"conversations.history", "conversations.replies", "conversations.list"}
)
# What Slack says in hello: a connection lives about this long before a refresh.
_APPROXIMATE_CONNECTION_TIME_S = 18060
_TS_STEP_MICROS = 100
_TS_PATTERN = re.compile(r"^\d{1,12}\.\d{1,6}$")
_BOUND_PATTERN = re.compile(r"^\d{1,12}(\.\d{1,6})?$")
_OUTAGE_HTML = "<html><head><title>{status}</title></head><body>Service unavailable</body></html>"

# -- Block Kit limits ------------------------------------------------------------

_MAX_BLOCKS = 50
_MAX_SECTION_TEXT = 3000
_MAX_HEADER_TEXT = 150
_MAX_FIELDS = 10
_MAX_FIELD_TEXT = 2000
_MAX_CONTEXT_ELEMENTS = 10
_MAX_CONTEXT_TEXT = 3000
_MAX_ACTIONS = 25
_MAX_BUTTON_TEXT = 75
_MAX_BUTTON_VALUE = 2000
_MAX_ACTION_ID = 255
_MAX_BLOCK_ID = 255
_KNOWN_BLOCKS = {"section", "header", "context", "actions", "divider"}


def _length(text: str) -> int:
    """UTF-16 code units: never less than what Slack counts."""
    return len(text.encode("utf-16-le")) // 2


def _check_text(obj: object, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: must be a text object"]
    kind = obj.get("type")
    allowed = {"plain_text"} if plain_only else {"plain_text", "mrkdwn"}
    problems = []
    if kind not in allowed:
        problems.append(f"{where}.type: must be one of {sorted(allowed)}, not {kind!r}")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        problems.append(f"{where}.text: must be a non-empty string")
    elif _length(text) > limit:
        problems.append(f"{where}.text: {_length(text)} characters, more than {limit}")
    return problems


def _check_button(element: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    problems = _check_text(element.get("text"), f"{where}.text", _MAX_BUTTON_TEXT, plain_only=True)
    action_id = element.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or not action_id:
            problems.append(f"{where}.action_id: must be a non-empty string")
        elif _length(action_id) > _MAX_ACTION_ID:
            problems.append(f"{where}.action_id: longer than {_MAX_ACTION_ID}")
        elif action_id in action_ids:
            problems.append(f"{where}.action_id: {action_id!r} is not unique in the message")
        else:
            action_ids.add(action_id)
    value = element.get("value")
    if value is not None and (not isinstance(value, str) or _length(value) > _MAX_BUTTON_VALUE):
        problems.append(f"{where}.value: must be a string of at most {_MAX_BUTTON_VALUE}")
    style = element.get("style")
    if style is not None and style not in ("primary", "danger"):
        problems.append(f"{where}.style: must be 'primary' or 'danger', not {style!r}")
    return problems


def _check_block(block: object, where: str, action_ids: set[str]) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: must be an object"]
    kind = block.get("type")
    problems: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None and (
        not isinstance(block_id, str) or _length(block_id) > _MAX_BLOCK_ID
    ):
        problems.append(f"{where}.block_id: must be a string of at most {_MAX_BLOCK_ID}")
    if kind == "header":
        problems += _check_text(
            block.get("text"), f"{where}.text", _MAX_HEADER_TEXT, plain_only=True
        )
    elif kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            problems.append(f"{where}: a section needs text or fields")
        if text is not None:
            problems += _check_text(text, f"{where}.text", _MAX_SECTION_TEXT)
        if fields is not None:
            if not isinstance(fields, list) or not fields or len(fields) > _MAX_FIELDS:
                problems.append(f"{where}.fields: must hold 1 to {_MAX_FIELDS} text objects")
            else:
                for i, f in enumerate(fields):
                    problems += _check_text(f, f"{where}.fields[{i}]", _MAX_FIELD_TEXT)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > _MAX_CONTEXT_ELEMENTS:
            problems.append(f"{where}.elements: must hold 1 to {_MAX_CONTEXT_ELEMENTS} elements")
        else:
            for i, e in enumerate(elements):
                problems += _check_text(e, f"{where}.elements[{i}]", _MAX_CONTEXT_TEXT)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > _MAX_ACTIONS:
            problems.append(f"{where}.elements: must hold 1 to {_MAX_ACTIONS} elements")
        else:
            for i, e in enumerate(elements):
                if not isinstance(e, dict) or e.get("type") != "button":
                    problems.append(f"{where}.elements[{i}]: only buttons are expected")
                else:
                    problems += _check_button(e, f"{where}.elements[{i}]", action_ids)
    elif kind not in _KNOWN_BLOCKS:
        problems.append(f"{where}.type: unknown block type {kind!r}")
    return problems


def validate_blocks(blocks: object) -> list[str]:
    """Every Block Kit limit the bot's messages can break, as readable problems.

    An empty list means Slack would accept the blocks as far as these rules
    go. One rule is stricter than Slack: action_ids must be unique in the
    whole message, not only in their block, because a click is routed by
    action_id whichever block it came from.
    """
    if not isinstance(blocks, list):
        return ["blocks: must be a list"]
    problems: list[str] = []
    if len(blocks) > _MAX_BLOCKS:
        problems.append(f"blocks: {len(blocks)} blocks, more than {_MAX_BLOCKS}")
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        problems += _check_block(block, f"blocks[{i}]", action_ids)
    return problems


# -- recorded state -------------------------------------------------------------


class Call(NamedTuple):
    """One request as the fake saw it: method (or ``response_url``), arguments, HTTP status."""

    method: str
    args: dict[str, Any]
    status: int


@dataclass
class FakeChannel:
    """A conversation the fake knows; ``member`` says whether the bot was invited."""

    id: str
    name: str
    member: bool = True
    users: set[str] | None = None  # None: every user is in the channel


@dataclass
class FakeMessage:
    """A posted message in its latest version; ``versions`` keeps every earlier one."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: int = 0
    versions: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass(frozen=True)
class Ephemeral:
    """A message only ``user`` saw (chat.postEphemeral or an ephemeral response)."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    message_ts: str
    thread_ts: str | None = None


@dataclass(frozen=True)
class ResponsePost:
    """One JSON body POSTed to a ``response_url`` the fake handed out."""

    channel: str
    payload: dict[str, Any]

    @property
    def response_type(self) -> str:
        return str(self.payload.get("response_type", "ephemeral"))


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    message_ts: str | None
    uses: int = 0


class _Slow(NamedTuple):
    delay_s: float
    method: str | None


class _Failure(NamedTuple):
    status: int
    retry_after: int | None
    method: str | None = None  # None: any method
    channel: str | None = None  # None: any channel (an id)

    def hits(self, method: str, channel: str | None) -> bool:
        return (self.method is None or self.method == method) and (
            self.channel is None or self.channel == channel
        )


@dataclass(eq=False)
class _SocketClient:
    """One open Socket Mode connection."""

    ticket: str
    ws: web.WebSocketResponse


class _ApiError(Exception):
    """An ``{"ok": false}`` answer; raised inside a method handler."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# -- the server -------------------------------------------------------------------


class FakeSlack:
    """Slack's Web API for one workspace, one bot token, on 127.0.0.1."""

    RESPONSE_URL_USES = 5
    """Slack lets a response_url be used five times (within 30 minutes)."""

    def __init__(
        self,
        token: str = "xoxb-test-token",
        *,
        app_token: str = "xapp-test-token",
        strict_threads: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``app_token`` is the app-level token ``apps.connections.open`` takes.

        ``strict_threads``: answer ``thread_not_found`` for an unknown ``thread_ts``.
        Off by default because real Slack accepts a well-formed but unknown
        ``thread_ts`` with ``ok: true`` (the reply is then visible nowhere);
        the fake records such a reply so a test can still see the mistake.

        ``clock`` (seconds since the epoch) makes the messages' ts, which are
        the time of posting, unique and increasing, as Slack's are.
        """
        self.token = token
        self.app_token = app_token
        self.strict_threads = strict_threads
        self.calls: list[Call] = []
        self.ephemerals: list[Ephemeral] = []
        # Incoming-webhook posts (Alertmanager's own Slack notifier): the fake's clock, the body.
        self.hooks: list[tuple[float, dict[str, Any]]] = []
        self.responses: list[ResponsePost] = []
        self._channels: dict[str, FakeChannel] = {}
        self._messages: dict[str, FakeMessage] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._clock = clock
        self._last_ts_micros = 0
        self._failures: deque[_Failure] = deque()
        self._errors: dict[str, deque[str]] = {}
        self._slow: deque[_Slow] = deque()
        self._closing = asyncio.Event()
        self._down = False
        self._runner: web.AppRunner | None = None
        self._url = ""
        # Socket Mode: every envelope sent and every message a client sent, in order.
        self.envelopes: list[dict[str, Any]] = []
        self.socket_messages: list[dict[str, Any]] = []
        self._tickets: set[str] = set()
        self._sockets: list[_SocketClient] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self._socket_changed = asyncio.Condition()
        self.add_channel("sms-alerts", "C0ALERTS")
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.list": self._list,
            "apps.connections.open": self._connections_open,
        }

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> FakeSlack:
        """Listen on a free loopback port; ``url`` is valid afterwards."""
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle_api)
        # slack_sdk sends the read methods (conversations.history, ...) as GET.
        app.router.add_get("/api/{method}", self._handle_api)
        app.router.add_post("/response/{rid}", self._handle_response_url)
        app.router.add_post("/hooks/{path:.+}", self._handle_incoming_webhook)
        app.router.add_get("/socket/{ticket}", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        self._closing.set()  # slow answers end now rather than hold the shutdown up
        # Open websockets would otherwise hold the server's shutdown up.
        for client in list(self._sockets):
            await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; the Web API lives under ``/api/``."""
        if not self._url:
            raise RuntimeError("FakeSlack is not started")
        return self._url

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``AsyncWebClient`` (with its trailing slash)."""
        return f"{self.url}/api/"

    # -- setup ----------------------------------------------------------------------

    def add_channel(
        self,
        name: str,
        channel_id: str | None = None,
        *,
        member: bool = True,
        users: Iterable[str] | None = None,
    ) -> FakeChannel:
        """Create a channel (``#`` optional in ``name``); returns it for later changes."""
        name = name.lstrip("#")
        channel_id = channel_id or f"C{len(self._channels) + 1:04d}{name.upper()[:6]}"
        channel = FakeChannel(channel_id, name, member, set(users) if users is not None else None)
        self._channels[channel_id] = channel
        return channel

    def channel(self, name_or_id: str) -> FakeChannel:
        """A channel by id, ``#name`` or ``name``; KeyError when there is none."""
        found = self._find_channel(name_or_id)
        if found is None:
            raise KeyError(name_or_id)
        return found

    def incoming_webhook_url(self) -> str:
        """An incoming-webhook URL (as Slack's ``hooks.slack.com/services/...``) on the fake."""
        return f"{self.url}/hooks/services/T0FAKE/B0FAKE/fakesecret"

    async def _handle_incoming_webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.hooks.append((self._clock(), body if isinstance(body, dict) else {"body": body}))
        return web.Response(text="ok")

    def response_url(self, channel: str, *, user: str = "U1", message_ts: str | None = None) -> str:
        """A URL on the fake that takes ``response_url`` posts for ``channel``.

        ``message_ts`` is the message a click came from, which
        ``replace_original`` replaces; ``user`` sees the ephemeral answers.
        """
        rid = secrets.token_hex(8)
        self._response_urls[rid] = _ResponseUrl(self.channel(channel).id, user, message_ts)
        return f"{self.url}/response/{rid}"

    # -- failure injection -------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 500) -> None:
        """The next ``n`` requests get ``status`` with an HTML body, as in an outage."""
        self._failures.extend(_Failure(status, None) for _ in range(n))

    def rate_limit_next(
        self,
        n: int = 1,
        *,
        retry_after: int = 1,
        method: str | None = None,
        channel: str | None = None,
    ) -> None:
        """The next ``n`` requests get 429, ``Retry-After: retry_after`` and ``ratelimited``.

        With ``method`` and/or ``channel`` (a name or id) only requests of that
        method and channel do, as Slack limits ``chat.*`` methods per channel;
        the others go through and do not use these failures up.
        """
        channel_id = self.channel(channel).id if channel is not None else None
        self._failures.extend(_Failure(429, retry_after, method, channel_id) for _ in range(n))

    def error_next(self, method: str, error: str) -> None:
        """The next call of ``method`` answers ``{"ok": false, "error": error}``."""
        self._errors.setdefault(method, deque()).append(error)

    def slow_next(self, n: int = 1, *, delay_s: float, method: str | None = None) -> None:
        """Carry out the next ``n`` requests (of ``method``) but answer ``delay_s`` later.

        With ``delay_s`` longer than the client's timeout the client sees a
        timeout although the work was done, as when Slack takes 15 s to answer.
        """
        self._slow.extend(_Slow(delay_s, method) for _ in range(n))

    def down(self) -> None:
        """Every request fails with 503 until ``up()``."""
        self._down = True

    def up(self) -> None:
        self._down = False

    def reset_failures(self) -> None:
        """Forget every injected failure (queued, per-method and ``down``)."""
        self._failures.clear()
        self._errors.clear()
        self._slow.clear()
        self._down = False

    # -- Socket Mode ---------------------------------------------------------------------

    @property
    def socket_clients(self) -> int:
        """How many Socket Mode connections are open now."""
        return len(self._sockets)

    async def socket_connected(self, timeout: float = 10, *, count: int = 1) -> None:
        """Wait until at least ``count`` clients are connected (and were sent ``hello``)."""
        what = f"{count} Socket Mode client(s)"
        await self._wait_socket(lambda: len(self._sockets) >= count, timeout, what)

    async def socket_disconnected(self, timeout: float = 10) -> None:
        """Wait until no Socket Mode client is connected."""
        await self._wait_socket(lambda: not self._sockets, timeout, "every client to disconnect")

    async def send_envelope(
        self, type_: str, payload: dict[str, Any], *, accepts_response_payload: bool = True
    ) -> str:
        """Push ``payload`` to the newest connection as Slack does; returns the envelope_id.

        ``type_`` is ``slash_commands``, ``interactive`` or ``events_api``.
        Slack may pick any open connection; the newest is the one a client
        that just reconnected listens on.
        """
        if type_ not in ENVELOPE_TYPES:
            raise ValueError(f"unknown envelope type {type_!r}; one of {sorted(ENVELOPE_TYPES)}")
        if not self._sockets:
            raise RuntimeError("no Socket Mode client is connected")
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "type": type_,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type_ == "events_api":
            envelope |= {"retry_attempt": 0, "retry_reason": ""}
        await self._sockets[-1].ws.send_json(envelope)
        self.envelopes.append(envelope)
        return str(envelope["envelope_id"])

    async def wait_ack(self, envelope_id: str, timeout: float = 5) -> dict[str, Any]:
        """The message the client acknowledged ``envelope_id`` with (``payload`` optional)."""
        await self._wait_socket(lambda: envelope_id in self._acks, timeout, f"ack of {envelope_id}")
        return self._acks[envelope_id]

    async def _wait_socket(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout), self._socket_changed:
                await self._socket_changed.wait_for(ready)
        except TimeoutError as exc:
            raise TimeoutError(f"FakeSlack: waited {timeout}s for {what}") from exc

    async def _socket_event(self) -> None:
        async with self._socket_changed:
            self._socket_changed.notify_all()

    # -- introspection ----------------------------------------------------------------

    def messages(self, channel: str) -> list[FakeMessage]:
        """Every message in ``channel`` (roots and replies), in posting order."""
        channel_id = self.channel(channel).id
        return [m for m in self._messages.values() if m.channel == channel_id]

    def message(self, ts: str) -> FakeMessage:
        """The message with this ``ts`` (unique across the fake); KeyError if none."""
        return self._messages[ts]

    def replies(self, ts: str) -> list[FakeMessage]:
        """The replies in the thread of ``ts``, in posting order."""
        return [m for m in self._messages.values() if m.thread_ts == ts and m.ts != ts]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # -- HTTP handlers -------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args, token = await _read_args(request, json_body=method not in _NO_JSON_METHODS)
        failure = self._take_failure(method, args)
        if failure is not None:
            self.calls.append(Call(method, args, failure.status))
            return _failure_response(failure)
        try:
            handler = self._methods.get(method)
            queued = self._errors.get(method)
            if queued:
                raise _ApiError(queued.popleft())
            if not token:
                raise _ApiError("not_authed")
            wanted = self.app_token if method in _APP_TOKEN_METHODS else self.token
            if token != wanted:
                # Slack tells a token of the other kind apart from an unknown one.
                known = token in (self.token, self.app_token)
                raise _ApiError("not_allowed_token_type" if known else "invalid_auth")
            if handler is None:
                raise _ApiError("unknown_method")
            body = {"ok": True, **handler(args)}
        except _ApiError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        self.calls.append(Call(method, args, 200))
        slow = self._take_slow(method)
        if slow is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=slow.delay_s)
        return web.json_response(body)

    def _take_slow(self, method: str) -> _Slow | None:
        for i, slow in enumerate(self._slow):
            if slow.method is None or slow.method == method:
                del self._slow[i]
                return slow
        return None

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        try:
            payload = await request.json()
        except json.JSONDecodeError:
            payload = None
        args = payload if isinstance(payload, dict) else {"body": payload}
        failure = self._take_failure("response_url", args)
        if failure is not None:
            self.calls.append(Call("response_url", args, failure.status))
            return _failure_response(failure)
        status, body = self._respond(rid, payload)
        self.calls.append(Call("response_url", args, status))
        return web.json_response(body, status=status)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if ticket not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        # autoping: pings are answered with a pong carrying the same data, as Slack does.
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        client = _SocketClient(ticket, ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets) + 1,
                "debug_info": {
                    "host": "applink-fake-127-0-0-1",
                    "build_number": 1,
                    "approximate_connection_time": _APPROXIMATE_CONNECTION_TIME_S,
                },
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._sockets.append(client)
        await self._socket_event()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(msg.data)
                except json.JSONDecodeError:
                    message = None
                if not isinstance(message, dict):
                    message = {"raw": msg.data}
                self.socket_messages.append(message)
                envelope_id = message.get("envelope_id")
                if isinstance(envelope_id, str):
                    self._acks.setdefault(envelope_id, message)
                await self._socket_event()
        finally:
            self._sockets.remove(client)
            await self._socket_event()
        return ws

    def _take_failure(self, method: str, args: dict[str, Any]) -> _Failure | None:
        """The first queued failure meant for this request, taken off the queue."""
        if self._down:
            return _Failure(503, None)
        found = self._find_channel(str(args.get("channel") or ""))
        channel = found.id if found is not None else None
        for i, failure in enumerate(self._failures):
            if failure.hits(method, channel):
                del self._failures[i]
                return failure
        return None

    # -- methods --------------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"{self.url}/",
            "team": "SMS",
            "user": "sms-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        return {"url": f"{self.url.replace('http://', 'ws://', 1)}/socket/{ticket}"}

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(args)
        text, blocks = _content(args)
        thread_ts = self._thread(channel, args)
        message = FakeMessage(channel.id, self._next_ts(), text, blocks, thread_ts)
        message.metadata = _metadata(args)
        self._messages[message.ts] = message
        return {"channel": channel.id, "ts": message.ts, "message": _message_json(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(args)
        ts = str(args.get("ts") or "")
        message = self._messages.get(ts)
        if message is None or message.channel != channel.id:
            raise _ApiError("message_not_found")
        # Slack keeps what an update leaves out: no "blocks" keeps the old blocks.
        text = str(args["text"]) if args.get("text") is not None else message.text
        blocks = _blocks(args) if "blocks" in args else message.blocks
        if not text and not blocks:
            raise _ApiError("no_text")
        message.versions.append((message.text, message.blocks))
        message.text, message.blocks = text, blocks
        message.updates += 1
        return {"channel": channel.id, "ts": ts, "text": text, "message": _message_json(message)}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable_channel(args)
        user = str(args.get("user") or "")
        if not user:
            raise _ApiError("user_not_found")
        if channel.users is not None and user not in channel.users:
            raise _ApiError("user_not_in_channel")
        text, blocks = _content(args)
        thread_ts = args.get("thread_ts")
        ephemeral = Ephemeral(
            channel.id, user, text, blocks, self._next_ts(), str(thread_ts) if thread_ts else None
        )
        self.ephemerals.append(ephemeral)
        return {"message_ts": ephemeral.message_ts}

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(args)
        found = [
            m
            for m in self._messages.values()
            if m.channel == channel.id and not m.is_reply and _in_range(m.ts, args)
        ]
        found.sort(key=lambda m: _ts_key(m.ts), reverse=True)
        return self._page(found, args, "messages")

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable_channel(args)
        ts = str(args.get("ts") or "")
        parent = self._messages.get(ts)
        if parent is None or parent.channel != channel.id:
            raise _ApiError("thread_not_found")
        thread = [parent, *self.replies(ts)]
        found = [m for m in thread if _in_range(m.ts, args)]
        found.sort(key=lambda m: _ts_key(m.ts))
        return self._page(found, args, "messages")

    def _list(self, args: dict[str, Any]) -> dict[str, Any]:
        channels = [
            {
                "id": c.id,
                "name": c.name,
                "is_channel": True,
                "is_archived": False,
                "is_member": c.member,
            }
            for c in self._channels.values()
        ]
        return self._page(channels, args, "channels")

    def _page(self, items: list[Any], args: dict[str, Any], name: str) -> dict[str, Any]:
        """One page of ``items`` as Slack pages: ``limit`` and an opaque ``cursor``."""
        try:
            limit = int(args.get("limit") or 100)
        except ValueError as exc:
            raise _ApiError("invalid_limit") from exc
        limit = max(1, min(limit, 999))
        start = 0
        cursor = str(args.get("cursor") or "")
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().removeprefix("next:"))
            except ValueError as exc:
                raise _ApiError("invalid_cursor") from exc
        page = items[start : start + limit]
        more = start + limit < len(items)
        next_cursor = base64.b64encode(f"next:{start + limit}".encode()).decode() if more else ""
        with_metadata = _flag(args.get("include_all_metadata"))
        shown = [
            _message_json(m, with_metadata=with_metadata) if isinstance(m, FakeMessage) else m
            for m in page
        ]
        return {name: shown, "has_more": more, "response_metadata": {"next_cursor": next_cursor}}

    def _respond(self, rid: str, payload: object) -> tuple[int, dict[str, Any]]:
        target = self._response_urls.get(rid)
        if target is None:
            return 404, {"ok": False, "error": "expired_url"}
        if target.uses >= self.RESPONSE_URL_USES:
            return 404, {"ok": False, "error": "used_url"}
        if not isinstance(payload, dict):
            return 400, {"ok": False, "error": "invalid_payload"}
        try:
            text, blocks = _content(payload)
        except _ApiError as exc:
            return 400, {"ok": False, "error": exc.error, **exc.extra}
        target.uses += 1
        self.responses.append(ResponsePost(target.channel, payload))
        thread_ts = str(payload["thread_ts"]) if payload.get("thread_ts") else None
        if payload.get("delete_original") and target.message_ts in self._messages:
            del self._messages[target.message_ts]
        elif payload.get("replace_original") and target.message_ts in self._messages:
            message = self._messages[target.message_ts]
            message.versions.append((message.text, message.blocks))
            message.text, message.blocks = text, blocks
            message.updates += 1
        elif payload.get("response_type") == "in_channel":
            message = FakeMessage(target.channel, self._next_ts(), text, blocks, thread_ts)
            self._messages[message.ts] = message
        else:
            ts = self._next_ts()
            self.ephemerals.append(
                Ephemeral(target.channel, target.user, text, blocks, ts, thread_ts)
            )
        return 200, {"ok": True}

    # -- helpers ----------------------------------------------------------------------------

    def _find_channel(self, name_or_id: str) -> FakeChannel | None:
        if name_or_id in self._channels:
            return self._channels[name_or_id]
        name = name_or_id.lstrip("#")
        return next((c for c in self._channels.values() if c.name == name), None)

    def _postable_channel(self, args: dict[str, Any]) -> FakeChannel:
        channel = self._find_channel(str(args.get("channel") or ""))
        if channel is None:
            raise _ApiError("channel_not_found")
        if not channel.member:
            raise _ApiError("not_in_channel")
        return channel

    def _readable_channel(self, args: dict[str, Any]) -> FakeChannel:
        """The history methods take an id only (``#name`` is channel_not_found) and membership."""
        channel = self._channels.get(str(args.get("channel") or ""))
        if channel is None:
            raise _ApiError("channel_not_found")
        if not channel.member:
            raise _ApiError("not_in_channel")
        return channel

    def _thread(self, channel: FakeChannel, args: dict[str, Any]) -> str | None:
        thread_ts = args.get("thread_ts")
        if thread_ts is None or thread_ts == "":
            return None
        thread_ts = str(thread_ts)
        if not _TS_PATTERN.match(thread_ts):
            raise _ApiError("invalid_thread_ts")
        parent = self._messages.get(thread_ts)
        if self.strict_threads and (parent is None or parent.channel != channel.id):
            raise _ApiError("thread_not_found")
        return thread_ts

    def _next_ts(self) -> str:
        now = int(self._clock() * 1_000_000)
        micros = max(now, self._last_ts_micros + _TS_STEP_MICROS)
        self._last_ts_micros = micros
        seconds, fraction = divmod(micros, 1_000_000)
        return f"{seconds}.{fraction:06d}"


# -- request parsing --------------------------------------------------------------------


async def _read_args(request: web.Request, *, json_body: bool = True) -> tuple[dict[str, Any], str]:
    """Arguments from the query string, a form or a JSON body (unless ignored); and the token.

    The token is taken out of the recorded arguments: tests assert on
    what was sent, and a token in ``calls`` would only be noise.
    """
    args: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        if isinstance(body, dict) and json_body:
            args.update(body)
    elif request.can_read_body:
        form = await request.post()
        args.update({k: v for k, v in form.items() if isinstance(v, str)})
    if isinstance(args.get("blocks"), str):
        # Left as sent when it is not JSON: _blocks() answers invalid_blocks_format.
        with contextlib.suppress(json.JSONDecodeError):
            args["blocks"] = json.loads(args["blocks"])
    token = str(args.pop("token", "") or "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        token = auth.removeprefix("Bearer ").strip()
    return args, token


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    """``blocks`` as a list, whether it came as JSON or as a form field holding JSON."""
    raw = args.get("blocks")
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _ApiError("invalid_blocks_format") from exc
    problems = validate_blocks(raw)
    if problems:
        raise _ApiError(
            "invalid_blocks",
            errors=problems,
            response_metadata={"messages": [f"[ERROR] {p}" for p in problems]},
        )
    assert isinstance(raw, list)
    return raw


def _content(args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = str(args.get("text") or "")
    blocks = _blocks(args)
    if not text and not blocks:
        raise _ApiError("no_text")
    return text, blocks


def _metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    """Message metadata as posted (a JSON object, or a form field holding one)."""
    raw = args.get("metadata")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _ApiError("invalid_metadata_format") from exc
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("event_type"), str)
        or not isinstance(raw.get("event_payload"), dict)
    ):
        raise _ApiError("invalid_metadata_schema")
    return {"event_type": raw["event_type"], "event_payload": raw["event_payload"]}


def _flag(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    return int(seconds), int(fraction.ljust(6, "0"))


def _in_range(ts: str, args: dict[str, Any]) -> bool:
    """Within ``oldest`` and ``latest``: exclusive unless ``inclusive``, as Slack has it."""
    inclusive = _flag(args.get("inclusive"))
    key = _ts_key(ts)
    for bound, after in (("oldest", True), ("latest", False)):
        raw = args.get(bound)
        if raw is None or raw == "":
            continue
        try:
            text = str(raw)
            limit = _ts_key(text if _BOUND_PATTERN.match(text) else f"{float(text):.6f}")
        except ValueError as exc:
            raise _ApiError("invalid_ts_" + bound) from exc
        if key == limit and not inclusive:
            return False
        if (key < limit) if after else (key > limit):
            return False
    return True


def _message_json(message: FakeMessage, *, with_metadata: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "text": message.text,
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "ts": message.ts,
        "blocks": message.blocks,
    }
    if message.thread_ts is not None:
        body["thread_ts"] = message.thread_ts
    if with_metadata and message.metadata is not None:
        body["metadata"] = message.metadata
    return body


def _failure_response(failure: _Failure) -> web.Response:
    if failure.retry_after is not None:
        return web.json_response(
            {"ok": False, "error": "ratelimited"},
            status=failure.status,
            headers={"Retry-After": str(failure.retry_after)},
        )
    return web.Response(
        status=failure.status,
        text=_OUTAGE_HTML.format(status=failure.status),
        content_type="text/html",
    )


# -- pytest plugin ------------------------------------------------------------------------


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A started fake Slack accepting the bot token ``xoxb-test-token``."""
    async with FakeSlack(token="xoxb-test-token") as fake:
        yield fake
