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

The outbox holds the neutral ``Message`` (``bot.chat.codec``), never a
platform's payload: each ``Delivery`` renders it when it sends it, and
decides the look of an update from what the store says about the message
(a thread reply keeps the thread's look), not from the memory of the replica
that queued it. So an update looks the same on any replica and after a
restart, and one item can be rendered by Slack's delivery today and by a
Teams delivery later. Backoff is computed from the item's stored
``attempts`` for the same reason.

Several replicas deliver one item once, as far as the platform allows: a
claim carries a token, and the worker marks the item (done, retry, dead) and
a delivery records where it landed only with that token (fencing). A worker
that stalled past its lease (a paused VM, a blocked loop) and whose item
another replica claimed since would still send it, so each delivery asks
``Outgoing.check_claim`` right before it calls the platform. With more than
half of the lease left by the worker's clock no other claim can have taken
the item, and nothing is asked; otherwise the store answers whether the
claim is still current and, if so, extends the lease past the platform
call's timeout; if not, ``LostClaim`` ends the attempt and the item is left
to its new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from bot.chat.codec import MessageDecodeError, message_from_json, message_to_json
from bot.clock import Clock
from bot.messages import Conversation, Message, MessageRef
from bot.store import Store
from bot.store.base import ChatMessage, OutboxItem, StoreUnavailable
from bot.telemetry import BotMetrics, Metrics

__all__ = [
    "MAYBE_DELIVERED",
    "Delivery",
    "DeliveryError",
    "LostClaim",
    "MaybeDelivered",
    "OutboxSurface",
    "OutboxWorker",
    "Outgoing",
    "RetryLater",
    "Undeliverable",
    "chat_message",
    "maybe_delivered",
    "outgoing",
]

log = structlog.get_logger(__name__)

# Pacing slots remembered for items put back at most; past it, stale ones are dropped.
_MAX_SLOTS = 10_000

# How long after a put-back item's slot the worker looks for it (clock reading gaps).
_DUE_MARGIN_S = 0.005

# The exponent of the backoff stops growing here (max_backoff_s caps the delay anyway).
_MAX_BACKOFF_EXPONENT = 32


class DeliveryError(Exception):
    """A platform refused or failed an item.

    ``reason`` is a short, bounded word for ``smsbot_delivery_failures_total``
    (Slack's error code, ``unauthorized``...), never free text.
    """

    default_reason = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason


class LostClaim(DeliveryError):
    """Another worker claimed the item since this one did: leave it, send nothing more."""

    default_reason = "lost_claim"


class RetryLater(DeliveryError):
    """Transient: try again, after ``after`` seconds when the platform said so.

    ``pause`` names what the platform rate-limited (a method, or a method in
    one channel): every item that would call it waits ``after`` seconds too.
    """

    default_reason = "retry_later"

    def __init__(
        self,
        message: str,
        *,
        after: float | None = None,
        pause: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.after = after
        self.pause = pause


MAYBE_DELIVERED = "maybe delivered: "


class MaybeDelivered(RetryLater):
    """Transient, and the platform may have carried the request out anyway.

    Its message starts with ``MAYBE_DELIVERED``; the worker stores it as the
    item's ``last_error``, which is how the next attempt knows to look for the
    message before posting it again.
    """

    default_reason = "maybe_delivered"

    def __init__(
        self,
        message: str,
        *,
        after: float | None = None,
        pause: str | None = None,
        reason: str | None = None,
    ) -> None:
        text = message if message.startswith(MAYBE_DELIVERED) else MAYBE_DELIVERED + message
        super().__init__(text, after=after, pause=pause, reason=reason)


def maybe_delivered(item: OutboxItem) -> bool:
    """Whether the item's previous attempt may have reached the platform."""
    return (item.last_error or "").startswith(MAYBE_DELIVERED)


class Undeliverable(DeliveryError):
    """Permanent: retrying cannot help (bad blocks, unknown channel, revoked token)."""

    default_reason = "undeliverable"


async def _always_mine() -> bool:
    return True


@dataclass(frozen=True)
class Outgoing:
    """An outbox item with its payload read: what a delivery renders and sends.

    ``message`` is None only for an item queued by a version that stored the
    platform's payload itself; ``rendered`` holds that payload, sent as it is.
    ``thread_reply`` is the op's own flag (a ``reply``); whether an ``update``
    changes a thread reply is for the delivery to read in the store, where the
    delivered reply was recorded, since the replica that queued the update may
    never have seen the reply.
    """

    item: OutboxItem
    message: Message | None
    final: bool = False
    reply_url: str | None = None
    user: str = ""
    thread_reply: bool = False
    rendered: Mapping[str, Any] = field(default_factory=dict)
    # Asks the store whether the worker's claim is still current (and extends it).
    still_mine: Callable[[], Awaitable[bool]] = field(default=_always_mine, compare=False)

    async def check_claim(self) -> None:
        """Call right before the platform: ``LostClaim`` if another worker has the item now."""
        if not await self.still_mine():
            raise LostClaim(f"outbox item {self.item.id} was claimed by another worker")


def outgoing(item: OutboxItem) -> Outgoing:
    """The item's payload decoded; ``MessageDecodeError`` when it cannot be read."""
    payload = item.payload
    raw = payload.get("message")
    message = None if raw is None else message_from_json(raw)
    reply_url = payload.get("reply_url")
    return Outgoing(
        item=item,
        message=message,
        final=bool(payload.get("final")),
        reply_url=str(reply_url) if reply_url else None,
        user=str(payload.get("user") or ""),
        thread_reply=bool(payload.get("thread_reply", item.op == "reply")),
        rendered={} if raw is not None else dict(payload),
    )


class Delivery(Protocol):
    """Sends one outbox item to one platform, rendering its neutral message natively.

    ``deliver`` awaits ``out.check_claim()`` right before each platform call
    that sends or changes a message, and records where a message landed with
    ``chat_message_put(..., claim=out.item)``.
    """

    surface: str

    async def deliver(self, out: Outgoing) -> None: ...

    def rate_keys(self, out: Outgoing) -> tuple[str, ...]:
        """What ``deliver`` may call, named as ``RetryLater.pause`` names it."""
        ...


class OutboxSurface:
    """A ``ChatSurface`` that writes the neutral message to the outbox; deliveries render it."""

    def __init__(
        self,
        *,
        name: str,
        store: Store,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        worker: OutboxWorker | None = None,
    ) -> None:
        self.name = name
        self._store = store
        self._clock = clock
        self._wake = wake
        # This replica's worker: an item is claimed for it as it is queued and handed
        # over, so it goes out without a claim (a commit) of the worker's own.
        self._worker = worker

    @staticmethod
    def _payload(msg: Message, where: Conversation, *, op: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"message": message_to_json(msg), "final": msg.status.is_done}
        if op == "reply":
            payload["thread_reply"] = True
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
        now = self._clock()
        _, claimed = await self._store.outbox_add_claimed(
            message_key=key,
            op=op,
            surface=self.name,
            channel=where.channel,
            parent_key=parent_key,
            payload=payload,
            now=now,
            lease_s=None if self._worker is None else self._worker.lease_s,
        )
        if claimed is not None and self._worker is not None:
            self._worker.hand_over(claimed, claimed_at=now)
        self._wake()

    async def post(
        self, where: Conversation, msg: Message, *, key: str | None = None
    ) -> MessageRef:
        """Queue a post; ``key`` (given by ``FanOut`` to each copy) becomes the ref's id."""
        key = key or uuid.uuid4().hex
        await self._add(
            key=key,
            op="post",
            where=where,
            parent_key=None,
            payload=self._payload(msg, where, op="post"),
        )
        return MessageRef(where, key)

    async def update(self, ref: MessageRef, msg: Message) -> None:
        await self._add(
            key=ref.id,
            op="update",
            where=ref.conversation,
            parent_key=None,
            payload=self._payload(msg, ref.conversation, op="update"),
        )

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        new_key = key or uuid.uuid4().hex
        await self._add(
            key=new_key,
            op="reply",
            where=ref.conversation,
            parent_key=ref.id,
            payload=self._payload(msg, ref.conversation, op="reply"),
        )
        return MessageRef(ref.conversation, new_key)

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        payload = self._payload(msg, where, op="ephemeral")
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
        metrics: Metrics | None = None,
        post_interval_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._deliveries = dict(deliveries)
        self._clock = clock
        self._monotonic = monotonic  # the pacing clock (injectable for tests)
        self._min_update_interval_s = min_update_interval_s
        self._idle_s = idle_s
        self._max_backoff_s = max_backoff_s
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        # Items claimed for this worker and kept in memory: handed over as they were
        # queued (``OutboxSurface``), or back a moment early for their pacing slot.
        # With when their lease ends and when (monotonic) they may go; sent before
        # the next claim, in order.
        self._held: list[tuple[OutboxItem, datetime, float]] = []
        self._last_update: dict[str, float] = {}
        # Pacing of new messages (posts and replies) per channel: Slack allows about
        # one a second in a channel, and a storm would otherwise burst past it.
        self._post_interval_s = post_interval_s
        self._last_post: dict[tuple[str, str], float] = {}
        # Each waiting new message gets its own slot, one interval after the one
        # before it in its channel, and is put back in the store once, due then
        # (not every time the worker passes while the channel is busy).
        self._free_slot: dict[tuple[str, str], float] = {}  # channel -> next slot free
        self._slots: dict[int, float] = {}  # item id -> its slot
        self._next_due: float | None = None  # monotonic: when a paced item may go
        # Rate-limited methods (or method and channel): paused until this time.
        self._paused: dict[str, datetime] = {}
        self._failing = False
        self._metrics = metrics or BotMetrics()
        self.delivered = 0

    def add_delivery(self, delivery: Delivery) -> None:
        self._deliveries[delivery.surface] = delivery

    @property
    def lease_s(self) -> float:
        return self._lease_s

    def wake(self) -> None:
        """Look at the outbox now rather than at the next idle tick."""
        self._wake.set()

    def hand_over(self, item: OutboxItem, *, claimed_at: datetime) -> None:
        """Take an item claimed for this worker at ``claimed_at`` (``outbox_add_claimed``).

        Only for a worker whose ``run`` loop is going: a handed item is sent by
        nothing else until its lease runs out.
        """
        self._held.append((item, claimed_at + timedelta(seconds=self._lease_s), -math.inf))
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            # Cleared before the pass, not after: a wake-up during it (an item queued or
            # handed over meanwhile) then ends the wait below at once instead of being lost.
            self._wake.clear()
            try:
                worked = await self.drain_once()
            except StoreUnavailable as exc:
                log.error("outbox.store_unavailable", error=str(exc))
                worked = 0
            if not worked:
                timeout = self._idle_s
                if self._next_due is not None:  # a paced item: look again when it may go
                    timeout = min(timeout, max(0.0, self._next_due - self._monotonic()))
                    self._next_due = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def drain_once(self) -> int:
        """Send the items handed over, claim one batch of due items and try each; how many."""
        mono = self._monotonic()
        ready = [held for held in self._held if held[2] <= mono]
        self._held = [held for held in self._held if held[2] > mono]
        for item, until, _ in ready:
            await self._one(
                item, _Lease(self._store, self._clock, item, until=until, lease_s=self._lease_s)
            )
        for _, _, due in self._held:
            self._look_again_at(due)
        now = self._clock()
        items = await self._store.outbox_claim(now=now, lease_s=self._lease_s)
        leased_until = now + timedelta(seconds=self._lease_s)
        for item in items:
            lease = _Lease(
                self._store, self._clock, item, until=leased_until, lease_s=self._lease_s
            )
            await self._one(item, lease)
        return len(ready) + len(items)

    async def _dead(self, item: OutboxItem, error: str) -> None:
        await self._store.outbox_dead(item.id, error=error, token=item.claim_token)

    async def _one(self, item: OutboxItem, lease: _Lease) -> None:
        bound = log.bind(outbox_id=item.id, op=item.op, message_key=item.message_key)
        delivery = self._deliveries.get(item.surface)
        if delivery is None:
            self._failed(item, "no_delivery")
            await self._dead(item, f"no delivery for surface {item.surface}")
            bound.error("outbox.no_delivery", surface=item.surface)
            return
        try:
            out = replace(outgoing(item), still_mine=lease.still_mine)
        except MessageDecodeError as exc:
            # Retrying cannot make it readable: kept, dead, for inspection.
            self._failed(item, "unreadable")
            await self._dead(item, f"unreadable message: {exc}")
            bound.error("outbox.unreadable_message", error=str(exc))
            return
        if item.op == "update":
            wait = self._last_update.get(item.message_key, -1e9) + self._min_update_interval_s
            early = wait - self._monotonic()
            if early > 0:
                # Release it: newer states coalesce into it while it waits.
                await self._store.outbox_retry(
                    item.id, at=self._at(early), error=item.last_error or "", token=item.claim_token
                )
                return
        if await self._paced(item, lease):
            return
        resume = self._paused_until(delivery.rate_keys(out))
        if resume is not None:
            # Not sent and not a failure: back when the platform said it may be.
            # last_error is kept as it is: it may say the last post may have arrived.
            await self._store.outbox_retry(
                item.id, at=resume, error=item.last_error or "", token=item.claim_token
            )
            return
        try:
            await delivery.deliver(out)
        except LostClaim:
            # Its new owner sends it; nothing here may mark it.
            bound.warning("outbox.claim_lost", surface=item.surface)
            return
        except Undeliverable as exc:
            self._failed(item, exc.reason)
            await self._dead(item, str(exc))
            bound.error("outbox.undeliverable", error=str(exc))
            return
        except RetryLater as exc:
            self._failed(item, exc.reason)
            if exc.pause is not None and exc.after is not None:
                self._pause(exc.pause, exc.after)
            await self._retry(item, str(exc), exc.after)
            return
        except Exception as exc:
            bound.exception("outbox.delivery_crashed")
            self._failed(item, "crashed")
            error = f"internal error: {exc!r}"
            if item.op in ("post", "reply"):
                # It may have crashed after Slack posted (storing the ts, say): look first.
                error = MAYBE_DELIVERED + error
            await self._retry(item, error, None)
            return
        if not await self._store.outbox_done(item.id, token=item.claim_token):
            bound.warning("outbox.claim_lost_after_delivery", surface=item.surface)
        self.delivered += 1
        if item.op in ("update", "post"):
            self._last_update[item.message_key] = self._monotonic()
        if item.op in ("post", "reply"):
            self._last_post[(item.surface, item.channel)] = self._monotonic()
        if self._failing:
            self._failing = False
            log.info("outbox.delivering_again")

    async def _paced(self, item: OutboxItem, lease: _Lease) -> bool:
        """Hold a new message back until its channel's slot; False when it may go now.

        A message that must wait is given the channel's next free slot, one
        ``post_interval_s`` after the slot before it, and put back in the store
        once, due then: a storm's waiting posts are written back once each, not
        on every pass of the worker. Back at its slot a moment before the
        channel's last post is an interval old (that post went late), it waits
        the rest in memory, still claimed, rather than being written back again.
        """
        if item.op not in ("post", "reply") or self._post_interval_s <= 0:
            return False
        channel = (item.surface, item.channel)
        now = self._monotonic()
        after_last = self._last_post.get(channel, -math.inf) + self._post_interval_s
        slot = self._slots.pop(item.id, None)
        if slot is not None:  # back for the slot it was given
            due = max(slot, after_last)
            if due <= now:
                return False
            self._hold(item, lease, due)
            return True
        slot = max(after_last, self._free_slot.get(channel, -math.inf))
        if slot <= now:
            return False
        self._free_slot[channel] = slot + self._post_interval_s
        self._slots[item.id] = slot
        if len(self._slots) > _MAX_SLOTS:  # items that never came back (sent elsewhere)
            self._slots = {k: v for k, v in self._slots.items() if v > now - self._lease_s}
        await self._store.outbox_retry(
            item.id, at=self._at(slot - now), error=item.last_error or "", token=item.claim_token
        )
        # Looked at a moment after the slot: the stored due time is a hair later.
        self._look_again_at(slot + _DUE_MARGIN_S)
        return True

    def _hold(self, item: OutboxItem, lease: _Lease, due: float) -> None:
        self._held.append((item, lease.until, due))
        self._look_again_at(due)

    def _look_again_at(self, due: float) -> None:
        """Make the idle wait end by ``due`` (monotonic) at the latest."""
        self._next_due = due if self._next_due is None else min(self._next_due, due)

    def backoff_s(self, item: OutboxItem) -> float:
        """Seconds before the next try of an item that failed just now: 1, 2, 4 ... capped.

        Computed from the stored ``attempts`` (the failures before this one), so
        a replica that claims the item after another one failed it, or a worker
        restarted mid-backoff, goes on with the sequence rather than starting it
        over. The store counts every time an item was put back, a wait for a
        rate limit or for the update interval included: such a wait makes the
        next backoff one step longer, never longer than ``max_backoff_s``.
        """
        exponent = min(item.attempts + 1, _MAX_BACKOFF_EXPONENT)
        return float(min(self._max_backoff_s, 0.5 * 2**exponent))

    def _failed(self, item: OutboxItem, reason: str) -> None:
        self._metrics.delivery_failed(item.surface, reason)

    async def _retry(self, item: OutboxItem, error: str, after: float | None) -> None:
        delay = after if after is not None else self.backoff_s(item)
        await self._store.outbox_retry(
            item.id, at=self._at(delay), error=error, token=item.claim_token
        )
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


class _Lease:
    """One claimed item's lease, as the worker that holds it knows it.

    While more than half of the lease is left by this worker's clock, no other
    claim can have taken the item, so ``still_mine`` answers without a store
    round trip (a delivery's usual case: no latency added). Past that, a stall
    may have let the lease run out: the store is asked, and extends the lease
    when the claim is still the item's latest.
    """

    def __init__(
        self, store: Store, clock: Clock, item: OutboxItem, *, until: datetime, lease_s: float
    ) -> None:
        self._store = store
        self._clock = clock
        self._item = item
        self._until = until
        self._lease = timedelta(seconds=lease_s)

    @property
    def until(self) -> datetime:
        """When the lease ends, as far as this worker knows."""
        return self._until

    async def still_mine(self) -> bool:
        now = self._clock()
        if now + self._lease / 2 < self._until:
            return True
        lease_s = self._lease.total_seconds()
        if not await self._store.outbox_still_mine(self._item, now=now, lease_s=lease_s):
            return False
        self._until = now + self._lease
        return True


def chat_message(item: OutboxItem, *, channel: str, ts: str, thread_ts: str | None) -> ChatMessage:
    """What the platform answered for a delivered post or reply."""
    return ChatMessage(
        key=item.message_key, surface=item.surface, channel=channel, ts=ts, thread_ts=thread_ts
    )
