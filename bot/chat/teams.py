"""Microsoft Teams: activities in (``POST /api/messages``), outbox deliveries out (Bot Connector).

The only module that imports the Microsoft 365 Agents SDK (``microsoft_agents``):
its Activity, ConversationReference and ConversationParameters models read and
write the Bot Framework JSON, and its ``ConnectorClient`` makes the
``/v3/conversations`` calls. The SDK's ``CloudAdapter`` and JWT middleware are
not used: the token is validated by ``TeamsTokenValidator`` (PyJWT; the
middleware does not require ``exp``, check endorsements or the service URL),
and an invoke is answered here, where the click's outcome is known.

Inbound, a request is refused with 401 before anything runs unless its token
is valid for the activity's ``channelId`` and ``serviceUrl``; then the
conversation reference (Bot Framework JSON, ``tenantId`` as the protocol
spells it) is stored, so that any replica may later deliver into that
conversation through that validated ``serviceUrl``. A message becomes a
``Command`` (mentions stripped, ``/sms`` optional), a card button a
``Click``: an ``adaptiveCard/action`` invoke (``Action.Execute``), or a
message whose ``value`` is the button's data (the ``Action.Submit`` fallback
of old clients). Users are ``teams:<aadObjectId>``, as SMS_OPERATORS and
SMS_APPROVERS name them.

An invoke must be answered with a card. The click runs in a task the engine
tracks; the first thing it shows decides the answer: the updated card (which
the outbox also sends to everyone with ``update_activity``) or, when the
click is refused, an error card for the clicker only (nothing is queued).

Outbound, ``TeamsDelivery`` renders the neutral message as an Adaptive Card
when it sends it: a post into a channel is a new channel thread (create
conversation, no prior message needed), a post into a conversation (a
command's reply chain, a chat) a new message in it, a reply goes into the
first message's reply chain, an update is ``update_activity``. The connector's
answers are sorted as Slack's are: 429 (with Retry-After, pausing that
conversation), 412, 5xx and outages are retried later; 400, 403, 404, 413 are
undeliverable; a 401 renews the token once. Sends and edits are paced per
conversation within Teams' limits (7 per second, 60 per 30 seconds). A post
whose answer was lost may show twice: the connector offers no way to look
an earlier attempt up.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import pydantic
import structlog
from aiohttp import web
from microsoft_agents.activity import (
    Activity,
    Attachment,
    ChannelAccount,
    ConversationParameters,
)
from microsoft_agents.hosting.core.connector.client import ConnectorClient

from bot.chat.adaptive_card import to_adaptive_card
from bot.chat.teams_auth import TeamsAuthError, TeamsTokenValidator
from bot.chat.teams_token import TeamsTokenError, TeamsTokenProvider
from bot.clock import Clock
from bot.events import Click, Command
from bot.http import read_body
from bot.messages import Conversation, Message, MessageRef
from bot.outbox import (
    LostClaim,
    OutboxSurface,
    Outgoing,
    RetryLater,
    Undeliverable,
    chat_message,
)
from bot.store import Store

__all__ = [
    "CARD_CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "USER_PREFIX",
    "InvokeAnswer",
    "Pacer",
    "TeamsDelivery",
    "TeamsSurface",
    "event_from",
    "strip_mentions",
    "teams_messages_route",
]

log = structlog.get_logger(__name__)

CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
USER_PREFIX: Final = "teams:"
MAX_BODY_BYTES: Final = 1_000_000
# How long an invoke waits for the click's first visible outcome (Teams gives up near 15 s).
INVOKE_WAIT_S: Final = 5.0
_INVOKE_CARD_ACTION: Final = "adaptiveCard/action"
_MENTION = re.compile(r"<at[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
# A channel (not a thread in it, nor a chat): a post there opens a new channel thread.
_CHANNEL = re.compile(r"^19:[^;]+@thread\.(tacv2|skype)$")
# Statuses worth another try; Retry-After is honoured on 429.
_RETRY: Final = frozenset({412, 429, 500, 502, 503, 504})
_TIMEOUT = aiohttp.ClientTimeout(total=15)

CommandSink = Callable[[Command], Awaitable[Any]]
ClickSink = Callable[[Click], Awaitable[Any]]
Spawn = Callable[[Awaitable[Any], str], Any]


# -- inbound ------------------------------------------------------------------


def strip_mentions(text: str) -> str:
    """The command typed after ``@sms-bot``: mentions, tags and entities removed."""
    without = _MENTION.sub(" ", text or "")
    return " ".join(html.unescape(_TAG.sub(" ", without)).split())


def _user(activity: Activity) -> str:
    sender = activity.from_property
    aad = (sender.aad_object_id if sender else None) or ""
    if not aad:
        raise ValueError("the activity names no aadObjectId")
    return USER_PREFIX + aad


def _button_data(value: Any) -> tuple[str, str] | None:
    if isinstance(value, Mapping) and isinstance(value.get("action"), str):
        return str(value["action"]), str(value.get("value") or "")
    return None


def event_from(activity: Activity) -> Command | Click | None:
    """The activity normalised; None for what the bot does not act on (typing, updates).

    ``ValueError`` for an activity that claims to be a command or a click but
    cannot be one (no user, no conversation).
    """
    conversation_id = activity.conversation.id if activity.conversation else ""
    if not conversation_id:
        raise ValueError("the activity names no conversation")
    if activity.type == "invoke" and activity.name == _INVOKE_CARD_ACTION:
        action = activity.value.get("action") if isinstance(activity.value, Mapping) else None
        data = _button_data(action.get("data")) if isinstance(action, Mapping) else None
        if data is None:
            raise ValueError("adaptiveCard/action carries no button data")
        return _click(activity, conversation_id, data)
    if activity.type != "message":
        return None
    data = _button_data(activity.value)
    if data is not None:  # Action.Submit, the fallback of clients without Universal Actions
        return _click(activity, conversation_id, data)
    text = strip_mentions(activity.text or "")
    if not text:
        return None
    return Command(
        text=text,
        user=_user(activity),
        source="teams",
        conversation=Conversation(surface="teams", channel=conversation_id),
    )


def _click(activity: Activity, conversation_id: str, data: tuple[str, str]) -> Click:
    return Click(
        action=data[0],
        value=data[1],
        user=_user(activity),
        source="teams",
        conversation=Conversation(
            surface="teams", channel=conversation_id, thread=activity.reply_to_id
        ),
    )


# -- the invoke's answer ----------------------------------------------------------


@dataclass
class InvokeAnswer:
    """What a click showed first: the updated card, or an error for the clicker only."""

    user: str
    future: asyncio.Future[tuple[str, Message] | None]

    def offer(self, kind: str, msg: Message) -> bool:
        if self.future.done():
            return False
        self.future.set_result((kind, msg))
        return True


# Set around the task that handles one invoke; read by the surface it posts through.
_ANSWER: contextvars.ContextVar[InvokeAnswer | None] = contextvars.ContextVar(
    "teams_invoke_answer", default=None
)


class TeamsSurface(OutboxSurface):
    """The outbox surface of Teams, which also answers the invoke a click came in.

    Teams has no ephemeral message outside an invoke's answer: a refusal during
    an invoke becomes that answer (seen by the clicker only); any other
    ``ephemeral`` is a message in the conversation.
    """

    def __init__(self, *, store: Store, clock: Clock, wake: Callable[[], None]) -> None:
        super().__init__(name="teams", store=store, clock=clock, wake=wake)

    async def update(self, ref: MessageRef, msg: Message) -> None:
        answer = _ANSWER.get()
        if answer is not None:
            answer.offer("card", msg)
        await super().update(ref, msg)

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        answer = _ANSWER.get()
        if answer is not None and answer.user == user and answer.offer("error", msg):
            return
        await super().ephemeral(where, user, msg)


def _invoke_body(answer: tuple[str, Message] | None) -> dict[str, Any]:
    if answer is None:
        # The click is still being handled: the card changes for everyone when it is.
        return {
            "statusCode": 200,
            "type": "application/vnd.microsoft.activity.message",
            "value": "Working on it.",
        }
    return {"statusCode": 200, "type": CARD_CONTENT_TYPE, "value": to_adaptive_card(answer[1])}


def teams_messages_route(
    *,
    validator: TeamsTokenValidator,
    store: Store,
    clock: Clock,
    on_command: CommandSink,
    on_click: ClickSink,
    spawn: Spawn,
    invoke_wait_s: float = INVOKE_WAIT_S,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``POST /api/messages``: token, activity, then the handlers."""

    async def handle(request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        if not authorization:
            log.warning("teams.unauthorized", reason="no bearer token")
            return web.Response(status=401)
        raw = await read_body(request, limit=MAX_BODY_BYTES)
        if raw is None:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.Response(status=401)  # nothing to validate the token against
        channel_id, service_url = body.get("channelId"), body.get("serviceUrl")
        if not isinstance(channel_id, str) or not isinstance(service_url, str):
            log.warning("teams.unauthorized", reason="no channelId or serviceUrl")
            return web.Response(status=401)
        try:
            await validator.validate(authorization, channel_id=channel_id, service_url=service_url)
        except TeamsAuthError as exc:
            log.warning("teams.unauthorized", reason=exc.reason)
            return web.Response(status=401)
        try:
            activity = Activity.model_validate(body)
            event = event_from(activity)
        except (pydantic.ValidationError, ValueError) as exc:
            log.warning("teams.malformed_activity", error=str(exc)[:300])
            return web.json_response({"error": "malformed activity"}, status=400)
        if activity.conversation is not None and activity.conversation.id:
            reference = activity.get_conversation_reference()
            await store.teams_reference_put(
                activity.conversation.id,
                reference.model_dump(by_alias=True, exclude_none=True, mode="json"),
                now=clock(),
            )
        if isinstance(event, Command):
            spawn(on_command(event), "teams:command")
        elif isinstance(event, Click):
            if activity.type == "invoke":
                return web.json_response(await _answer_invoke(event))
            spawn(on_click(event), "teams:click")
        return web.json_response({}, status=200)

    async def _answer_invoke(click: Click) -> dict[str, Any]:
        answer = InvokeAnswer(click.user, asyncio.get_running_loop().create_future())
        token = _ANSWER.set(answer)
        try:
            spawn(_settle(on_click(click), answer), "teams:click")
        finally:
            _ANSWER.reset(token)
        try:
            result = await asyncio.wait_for(asyncio.shield(answer.future), invoke_wait_s)
        except TimeoutError:
            result = None
        return _invoke_body(result)

    return handle


async def _settle(work: Awaitable[Any], answer: InvokeAnswer) -> Any:
    """Run the click; whatever it showed (or nothing), the invoke stops waiting."""
    try:
        return await work
    finally:
        if not answer.future.done():
            answer.future.set_result(None)


# -- outbound -------------------------------------------------------------------


class Pacer:
    """Teams' per-conversation limits, kept here so the connector never has to say 429.

    Each window is (sends, seconds); ``wait`` is how long to hold the next send
    (0 when it may go now, and then it is counted).
    """

    def __init__(
        self,
        windows: tuple[tuple[int, float], ...] = ((7, 1.0), (60, 30.0)),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._windows = windows
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        now = self._clock()
        sent = self._sent.setdefault(key, deque())
        longest = max(seconds for _, seconds in self._windows)
        while sent and sent[0] <= now - longest:
            sent.popleft()
        hold = 0.0
        for limit, seconds in self._windows:
            recent = [t for t in sent if t > now - seconds]
            if len(recent) >= limit:
                hold = max(hold, recent[-limit] + seconds - now)
        if hold <= 0:
            sent.append(now)
        return hold


def _conversation_key(conversation_id: str) -> str:
    """What Teams limits: the conversation (a channel with all its threads)."""
    return "teams " + conversation_id.split(";", 1)[0]


class TeamsDelivery:
    """Sends outbox items to the Bot Connector, rendering each as an Adaptive Card."""

    surface = "teams"

    def __init__(
        self,
        *,
        store: Store,
        tokens: TeamsTokenProvider,
        app_id: str,
        tenant_id: str,
        service_url: str,
        connector: aiohttp.BaseConnector | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._bot = ChannelAccount(id=f"28:{app_id}")
        self._tenant_id = tenant_id
        self._default_url = service_url
        self._connector = connector
        self._pacer = pacer or Pacer()
        # One session per service URL (the SDK's client keeps its base URL and token in it).
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def rate_keys(self, out: Outgoing) -> tuple[str, ...]:
        return (_conversation_key(out.item.channel),)

    async def deliver(self, out: Outgoing) -> None:
        item = out.item
        if out.message is None:
            raise Undeliverable("no neutral message to render for Teams")
        activity = _activity(out.message)
        if item.op == "post" or item.op == "ephemeral":
            await self._post(out, activity, store=item.op == "post")
        elif item.op == "reply":
            await self._reply(out, activity)
        elif item.op == "update":
            await self._update(out, activity)
        else:
            raise Undeliverable(f"unknown outbox op {item.op!r}")

    async def _post(self, out: Outgoing, activity: Activity, *, store: bool) -> None:
        item = out.item
        target = item.channel
        if _CHANNEL.match(target):
            params = ConversationParameters(
                is_group=True,
                bot=self._bot,
                channel_data={"channel": {"id": target}},
                activity=activity,
                tenant_id=self._tenant_id,
            )
            created = await self._call(
                target, lambda c: c.conversations.create_conversation(params), out=out
            )
            conversation_id = str(created.id or "")
            activity_id = str(created.activity_id or conversation_id.rpartition("=")[2])
        else:
            sent = await self._call(
                target, lambda c: c.conversations.send_to_conversation(target, activity), out=out
            )
            conversation_id, activity_id = target, str(sent.id or "")
        if store:
            await _landed(self._store, out, channel=conversation_id, ts=activity_id, thread_ts=None)

    async def _reply(self, out: Outgoing, activity: Activity) -> None:
        item = out.item
        parent = await self._store.chat_message_get(item.parent_key) if item.parent_key else None
        if parent is None or parent.ts is None:
            raise Undeliverable("the thread's first message was never posted")
        root = parent.thread_ts or parent.ts
        conversation_id = parent.channel
        sent = await self._call(
            conversation_id,
            lambda c: c.conversations.reply_to_activity(conversation_id, root, activity),
            out=out,
        )
        await _landed(
            self._store, out, channel=conversation_id, ts=str(sent.id or ""), thread_ts=root
        )

    async def _update(self, out: Outgoing, activity: Activity) -> None:
        item = out.item
        target = await self._store.chat_message_get(item.message_key)
        if target is None or target.ts is None:
            raise Undeliverable("the message to update was never posted")
        activity.id = target.ts
        conversation_id, activity_id = target.channel, target.ts
        await self._call(
            conversation_id,
            lambda c: c.conversations.update_activity(conversation_id, activity_id, activity),
            out=out,
        )

    async def _service_url(self, conversation_id: str) -> str:
        """Where this conversation is served: a validated activity's serviceUrl, or the setting."""
        for key in (conversation_id, conversation_id.split(";", 1)[0]):
            reference = await self._store.teams_reference_get(key)
            url = (reference or {}).get("serviceUrl")
            if isinstance(url, str) and url:
                return url
        return self._default_url

    def _session(self, service_url: str) -> tuple[str, aiohttp.ClientSession]:
        base = service_url if service_url.endswith("/") else service_url + "/"
        session = self._sessions.get(base)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                base_url=base,
                timeout=_TIMEOUT,
                connector=self._connector,
                connector_owner=self._connector is None,
            )
            self._sessions[base] = session
        return base, session

    async def _call(
        self, conversation_id: str, call: Callable[[ConnectorClient], Any], *, out: Outgoing
    ) -> Any:
        """One connector call, paced, with the token renewed once on a 401.

        The claim on ``out`` is checked right before the call (see ``bot.outbox``).
        """
        pause = _conversation_key(conversation_id)
        hold = self._pacer.wait(pause)
        if hold > 0:
            raise RetryLater("Teams conversation limit reached", after=hold, pause=pause)
        base, session = self._session(await self._service_url(conversation_id))
        for attempt in (1, 2):
            try:
                token = await self._tokens.token()
            except TeamsTokenError as exc:
                if exc.retryable:
                    raise RetryLater(f"token: {exc.reason}") from exc
                raise Undeliverable(f"token: {exc.reason}", reason="token_refused") from exc
            # The SDK's client only sets headers on the session it is given; never close it here.
            client = ConnectorClient(endpoint=base, token=token, session=session)
            await out.check_claim()
            try:
                return await call(client)
            except aiohttp.ClientResponseError as exc:
                if exc.status == 401 and attempt == 1:
                    self._tokens.invalidate()
                    continue
                raise _sorted(exc, pause) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RetryLater(f"connector: {type(exc).__name__}: {exc}") from exc
        raise RetryLater("connector refused the renewed token")  # pragma: no cover


async def _landed(
    store: Store, out: Outgoing, *, channel: str, ts: str, thread_ts: str | None
) -> None:
    """Record where the item's activity is, while the item is still this worker's."""
    landed = chat_message(out.item, channel=channel, ts=ts, thread_ts=thread_ts)
    if not await store.chat_message_put(landed, claim=out.item):
        raise LostClaim(f"outbox item {out.item.id} was claimed by another worker")


def _sorted(exc: aiohttp.ClientResponseError, pause: str) -> RetryLater | Undeliverable:
    """The connector's error as the outbox understands it."""
    status = exc.status
    if status == 429:
        return RetryLater(
            "connector: throttled (429)",
            after=_retry_after(exc.headers),
            pause=pause,
            reason="throttled",
        )
    if status in _RETRY or status >= 500:
        return RetryLater(
            f"connector: HTTP {status}",
            after=_retry_after_or_none(exc.headers),
            reason=f"http_{status}",
        )
    # A 401 here came after a renewed token (``_call`` renews once): the app is refused.
    reason = "unauthorized" if status == 401 else f"http_{status}"
    return Undeliverable(f"connector: HTTP {status}: {str(exc.message)[:200]}", reason=reason)


def _retry_after_or_none(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _retry_after(headers: Any) -> float:
    found = _retry_after_or_none(headers)
    return 1.0 if found is None else found


def _activity(msg: Message) -> Activity:
    """A message activity carrying the card; ``summary`` is what notifications show."""
    return Activity(
        type="message",
        summary=msg.title[:200],
        attachments=[Attachment(content_type=CARD_CONTENT_TYPE, content=to_adaptive_card(msg))],
    )
