"""Chat posts through an outbox in the store, delivered by a worker.

``OutboxSurface`` is the ``ChatSurface`` of a remote platform: posting only
writes to the store and returns at once, so a chat outage never blocks a
procedure. ``OutboxWorker`` delivers the items in order with retries,
honouring ``Retry-After``; it resumes after a restart (the items are in the
store) and several replicas can share a PostgreSQL store (claims are leased).
Updates to one message are coalesced in the store (latest state wins) and
sent at most about once per second per message, to stay inside rate limits.

A post whose attempt ended without an answer (a timeout, a reset connection,
a 5xx) may have been carried out all the same: the delivery raises
``MaybeDelivered``, the worker keeps that in the item's ``last_error`` (with
``MAYBE_DELIVERED``'s prefix) and the next attempt looks for the message
before posting it again. A rate limit pauses the platform method (per
channel where the platform counts per channel) for every item, not only for
the one that met it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bot.clock import Clock
from bot.messages import Conversation, Message, MessageRef
from bot.store.base import ChatMessage, OutboxItem, Store, StoreUnavailable

__all__ = [
    "MAYBE_DELIVERED",
    "Delivery",
    "DeliveryError",
    "MaybeDelivered",
    "OutboxSurface",
    "OutboxWorker",
    "RetryLater",
    "Undeliverable",
    "chat_message",
    "maybe_delivered",
]

log = structlog.get_logger(__name__)

Render = Callable[[Message], dict[str, Any]]


class DeliveryError(Exception):
    """A platform refused or failed an item."""


class RetryLater(DeliveryError):
    """Transient: try again, after ``after`` seconds when the platform said so.

    ``pause`` names what the platform rate-limited (a method, or a method in
    one channel): every item that would call it waits ``after`` seconds too.
    """

    def __init__(
        self, message: str, *, after: float | None = None, pause: str | None = None
    ) -> None:
        super().__init__(message)
        self.after = after
        self.pause = pause


MAYBE_DELIVERED = "maybe delivered: "


class MaybeDelivered(RetryLater):
    """Transient, and the platform may have carried the request out anyway.

    Its message starts with ``MAYBE_DELIVERED``; the worker stores it as the
    item's ``last_error``, which is how the next attempt knows to look for the
    message before posting it again.
    """

    def __init__(
        self, message: str, *, after: float | None = None, pause: str | None = None
    ) -> None:
        text = message if message.startswith(MAYBE_DELIVERED) else MAYBE_DELIVERED + message
        super().__init__(text, after=after, pause=pause)


def maybe_delivered(item: OutboxItem) -> bool:
    """Whether the item's previous attempt may have reached the platform."""
    return (item.last_error or "").startswith(MAYBE_DELIVERED)


class Undeliverable(DeliveryError):
    """Permanent: retrying cannot help (bad blocks, unknown channel, revoked token)."""


class Delivery(Protocol):
    """Sends one outbox item to one platform."""

    surface: str

    async def deliver(self, item: OutboxItem) -> None: ...

    def rate_keys(self, item: OutboxItem) -> tuple[str, ...]:
        """What ``deliver`` may call, named as ``RetryLater.pause`` names it."""
        ...


class OutboxSurface:
    """A ``ChatSurface`` that writes to the outbox; ``render`` makes the platform payload."""

    def __init__(
        self,
        *,
        name: str,
        store: Store,
        render: Render,
        clock: Clock,
        render_reply: Render | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self._store = store
        self._render = render
        self._render_reply = render_reply or render
        # Keys of messages that live in a thread, so their updates keep the thread's look.
        self._in_thread: set[str] = set()
        self._clock = clock
        self._wake = wake

    def _payload(
        self, msg: Message, where: Conversation, *, in_thread: bool = False
    ) -> dict[str, Any]:
        render = self._render_reply if in_thread else self._render
        payload = dict(render(msg))
        payload["final"] = msg.status.is_done
        if where.reply_url:
            payload["reply_url"] = where.reply_url
        return payload

    async def _add(
        self,
        *,
        key: str,
        op: str,
        where: Conversation,
        parent_key: str | None,
        payload: Mapping[str, Any],
    ) -> None:
        await self._store.outbox_add(
            message_key=key,
            op=op,
            surface=self.name,
            channel=where.channel,
            parent_key=parent_key,
            payload=payload,
            now=self._clock(),
        )
        self._wake()

    async def post(self, where: Conversation, msg: Message) -> MessageRef:
        key = uuid.uuid4().hex
        await self._add(
            key=key, op="post", where=where, parent_key=None, payload=self._payload(msg, where)
        )
        return MessageRef(where, key)

    async def update(self, ref: MessageRef, msg: Message) -> None:
        await self._add(
            key=ref.id,
            op="update",
            where=ref.conversation,
            parent_key=None,
            payload=self._payload(msg, ref.conversation, in_thread=ref.id in self._in_thread),
        )

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        new_key = key or uuid.uuid4().hex
        await self._add(
            key=new_key,
            op="reply",
            where=ref.conversation,
            parent_key=ref.id,
            payload=self._payload(msg, ref.conversation, in_thread=True),
        )
        self._in_thread.add(new_key)
        return MessageRef(ref.conversation, new_key)

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        payload = self._payload(msg, where)
        payload["user"] = user
        await self._add(
            key=uuid.uuid4().hex, op="ephemeral", where=where, parent_key=None, payload=payload
        )


class OutboxWorker:
    """Delivers due outbox items; one per replica, any number of replicas."""

    def __init__(
        self,
        store: Store,
        deliveries: Mapping[str, Delivery],
        *,
        clock: Clock,
        min_update_interval_s: float = 1.0,
        idle_s: float = 0.5,
        max_backoff_s: float = 30.0,
        lease_s: float = 30.0,
    ) -> None:
        self._store = store
        self._deliveries = dict(deliveries)
        self._clock = clock
        self._min_update_interval_s = min_update_interval_s
        self._idle_s = idle_s
        self._max_backoff_s = max_backoff_s
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        self._last_update: dict[str, float] = {}
        self._failures: dict[int, int] = {}
        # Rate-limited methods (or method and channel): paused until this time.
        self._paused: dict[str, datetime] = {}
        self._failing = False
        self.delivered = 0

    def add_delivery(self, delivery: Delivery) -> None:
        self._deliveries[delivery.surface] = delivery

    def wake(self) -> None:
        """Look at the outbox now rather than at the next idle tick."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                worked = await self.drain_once()
            except StoreUnavailable as exc:
                log.error("outbox.store_unavailable", error=str(exc))
                worked = 0
            if not worked:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._idle_s)

    async def drain_once(self) -> int:
        """Claim one batch of due items and try each; return how many were claimed."""
        items = await self._store.outbox_claim(now=self._clock(), lease_s=self._lease_s)
        for item in items:
            await self._one(item)
        return len(items)

    async def _one(self, item: OutboxItem) -> None:
        bound = log.bind(outbox_id=item.id, op=item.op, message_key=item.message_key)
        delivery = self._deliveries.get(item.surface)
        if delivery is None:
            await self._store.outbox_dead(item.id, error=f"no delivery for surface {item.surface}")
            bound.error("outbox.no_delivery", surface=item.surface)
            return
        if item.op == "update":
            wait = self._last_update.get(item.message_key, -1e9) + self._min_update_interval_s
            early = wait - time.monotonic()
            if early > 0:
                # Release it: newer states coalesce into it while it waits.
                await self._store.outbox_retry(
                    item.id, at=self._at(early), error=item.last_error or ""
                )
                return
        resume = self._paused_until(delivery.rate_keys(item))
        if resume is not None:
            # Not sent and not a failure: back when the platform said it may be.
            # last_error is kept as it is: it may say the last post may have arrived.
            await self._store.outbox_retry(item.id, at=resume, error=item.last_error or "")
            return
        try:
            await delivery.deliver(item)
        except Undeliverable as exc:
            await self._store.outbox_dead(item.id, error=str(exc))
            self._failures.pop(item.id, None)
            bound.error("outbox.undeliverable", error=str(exc))
            return
        except RetryLater as exc:
            if exc.pause is not None and exc.after is not None:
                self._pause(exc.pause, exc.after)
            await self._retry(item, str(exc), exc.after)
            return
        except Exception as exc:
            bound.exception("outbox.delivery_crashed")
            error = f"internal error: {exc!r}"
            if item.op in ("post", "reply"):
                # It may have crashed after Slack posted (storing the ts, say): look first.
                error = MAYBE_DELIVERED + error
            await self._retry(item, error, None)
            return
        await self._store.outbox_done(item.id)
        self._failures.pop(item.id, None)
        self.delivered += 1
        if item.op in ("update", "post"):
            self._last_update[item.message_key] = time.monotonic()
        if self._failing:
            self._failing = False
            log.info("outbox.delivering_again")

    async def _retry(self, item: OutboxItem, error: str, after: float | None) -> None:
        failures = self._failures.get(item.id, 0) + 1
        self._failures[item.id] = failures
        delay = after if after is not None else min(self._max_backoff_s, 0.5 * 2**failures)
        await self._store.outbox_retry(item.id, at=self._at(delay), error=error)
        if not self._failing:
            self._failing = True
            log.warning("outbox.delivery_failing", error=error, retry_in_s=delay)

    def _pause(self, key: str, seconds: float) -> None:
        until = self._at(seconds)
        if until > self._paused.get(key, until - timedelta(seconds=1)):
            self._paused[key] = until
            log.warning("outbox.rate_limited", paused=key, retry_in_s=seconds)

    def _paused_until(self, keys: tuple[str, ...]) -> datetime | None:
        now = self._clock()
        latest: datetime | None = None
        for key in keys:
            until = self._paused.get(key)
            if until is None:
                continue
            if until <= now:
                del self._paused[key]
            elif latest is None or until > latest:
                latest = until
        return latest

    def _at(self, seconds: float) -> datetime:
        return self._clock() + timedelta(seconds=max(0.0, seconds))


def chat_message(item: OutboxItem, *, channel: str, ts: str, thread_ts: str | None) -> ChatMessage:
    """What the platform answered for a delivered post or reply."""
    return ChatMessage(
        key=item.message_key, surface=item.surface, channel=channel, ts=ts, thread_ts=thread_ts
    )
