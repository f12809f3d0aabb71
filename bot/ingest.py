"""Group commit for the alert webhook: concurrent deliveries share one transaction.

The webhook may answer 200 only once its alerts are durable in the store (an
fsync on SQLite, a WAL flush on PostgreSQL), and then only if the store is
still the one the bot opened (``Store.ping``). Done per delivery, concurrent
webhooks queue behind each other's commits and spend their time waiting for
the disk. So deliveries that arrive while a commit is under way wait
together: the first waiter leads, takes every delivery queued so far, writes
them in one transaction, pings once, and answers each waiter; whoever queued
meanwhile is led by the first of them. The promise per delivery is the same:
a waiter returns only after a commit that holds its alerts (and a ping after
it) succeeded, and a failed commit or ping fails every waiter of that batch
with ``StoreUnavailable``, so each webhook answers 503 and Alertmanager retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from bot.store import Store
from bot.store.base import NewAlertEvent, StoreUnavailable
from bot.store.sql import check_alert_events

__all__ = ["AlertIngest"]

# The result handed to a queued waiter that is to lead the next batch.
_LEAD: Final = object()


@dataclass
class _Waiter:
    events: Sequence[NewAlertEvent]
    received_at: datetime
    future: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _handed_the_lead(future: asyncio.Future[object]) -> bool:
    if not future.done() or future.cancelled() or future.exception() is not None:
        return False
    return future.result() is _LEAD


class AlertIngest:
    """Stores webhook deliveries durably, committing concurrent ones together."""

    def __init__(self, store: Store, *, stored: Callable[[], None] = lambda: None) -> None:
        self._store = store
        # Called once a batch is committed, before the ping: the inbox may start on the
        # alerts while the ping runs (they are durable; the ping only decides the 200).
        self._stored = stored
        self._queue: list[_Waiter] = []
        self._leading = False
        self.commits = 0  # for tests and benchmarks: how many transactions were needed

    async def add(self, events: Sequence[NewAlertEvent], *, received_at: datetime) -> list[int]:
        """Durably store one delivery's alerts (and check the store is still there); ids.

        Raises ``ValueError`` for an event the store refuses (before anything is
        queued, so one bad delivery never fails the others) and
        ``StoreUnavailable`` when the commit or the ping after it failed.
        """
        check_alert_events(events)
        waiter = _Waiter(events, received_at)
        self._queue.append(waiter)
        if self._leading:
            try:
                result = await waiter.future
            except asyncio.CancelledError:
                # Handed the lead just as it was cancelled: pass it on, or nobody commits.
                if _handed_the_lead(waiter.future):
                    self._leading = False
                    self._hand_over()
                raise
            if result is not _LEAD:
                assert isinstance(result, list)
                return result
        return await self._lead(waiter)

    async def _lead(self, me: _Waiter) -> list[int]:
        self._leading = True
        batch, self._queue = self._queue, []
        try:
            ids = await self._commit(batch)
        except BaseException as exc:
            failure = (
                exc
                if isinstance(exc, StoreUnavailable)
                else StoreUnavailable(f"storing the alerts was interrupted: {exc!r}")
            )
            for waiter in batch:
                if waiter is not me and not waiter.future.done():
                    waiter.future.set_exception(failure)
            raise
        finally:
            self._leading = False
            self._hand_over()
        mine: list[int] = []
        for waiter, got in zip(batch, ids, strict=True):
            if waiter is me:
                mine = got
            elif not waiter.future.done():
                waiter.future.set_result(got)
        return mine

    def _hand_over(self) -> None:
        """Make the first still-waiting queued delivery lead the next batch."""
        while self._queue and not self._leading:
            first = self._queue[0]
            if first.future.done():  # cancelled while queued: its alerts are not stored
                self._queue.pop(0)
                continue
            self._leading = True
            first.future.set_result(_LEAD)

    async def _commit(self, batch: Sequence[_Waiter]) -> list[list[int]]:
        ids = await self._store.alert_events_add_groups([(w.events, w.received_at) for w in batch])
        self.commits += 1
        self._stored()
        # Checked after the commit: a store deleted or replaced under the bot still
        # takes writes, so only a store that is still there may be promised with a 200.
        await self._store.ping()
        return ids
