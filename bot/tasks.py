"""Background loops that outlive their failures and say so once.

Why a supervisor: ``serve`` runs its loops (outbox, alert inbox, scheduler,
proposal sweeper) as tasks nobody awaits until shutdown. A loop that raised
would stop delivering or processing in silence, and Python would only print
"Task exception was never retrieved" when the task is collected, if ever.
``keep_running`` restarts a loop that raised, with a growing pause, so a
store that is gone for a while (``StoreUnavailable``) or a bug that trips on
one row does not stop the bot for good.

Why log only the changes: a loop failing every second for an hour would bury
the one line that says when and why it started. As Home Assistant's update
coordinator does, ``FailureLog`` logs the first failure (with its traceback
when it is not an expected ``StoreUnavailable``) and the recovery, and only
counts the failures in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bot.store.base import StoreUnavailable

__all__ = ["FailureLog", "keep_running", "log_task_end", "start_background"]

log = structlog.get_logger(__name__)


class FailureLog:
    """Logs when a loop starts failing and when it recovers, not every failed attempt."""

    def __init__(self, name: str, *, base_s: float = 1.0, cap_s: float = 60.0) -> None:
        self.name = name
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures > 1:
            return
        if isinstance(exc, StoreUnavailable):
            # Expected while the store is down: its reason says it all.
            log.error("task.failing", task=self.name, error=str(exc))
        else:
            log.error("task.failing", task=self.name, error=repr(exc), exc_info=exc)

    def succeeded(self) -> None:
        if self.failures:
            log.info("task.recovered", task=self.name, failures=self.failures)
            self.failures = 0

    def backoff_s(self) -> float:
        """The pause before the next attempt: doubling from ``base_s`` up to ``cap_s``."""
        if not self.failures:
            return 0.0
        return float(min(self.cap_s, self.base_s * 2 ** min(self.failures - 1, 30)))


async def keep_running(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    base_s: float = 1.0,
    cap_s: float = 60.0,
    healthy_after_s: float = 30.0,
) -> None:
    """Run ``run()`` (a loop meant to last until cancelled) again whenever it raises or ends.

    A restarted loop counts as recovered once it has kept going for
    ``healthy_after_s``; only cancellation stops this.
    """
    failures = FailureLog(name, base_s=base_s, cap_s=cap_s)
    loop = asyncio.get_running_loop()
    while True:
        healthy = loop.call_later(healthy_after_s, failures.succeeded) if failures.failing else None
        try:
            await run()
        except Exception as exc:
            failures.failed(exc)
        else:
            failures.failed(RuntimeError(f"{name} stopped by itself"))
        finally:
            if healthy is not None:
                healthy.cancel()
        await asyncio.sleep(failures.backoff_s())


def log_task_end(task: asyncio.Task[object]) -> None:
    """Done-callback: a background task that ends other than by cancellation is logged.

    Retrieving the exception here is what keeps it from surfacing, much later
    and without context, as "Task exception was never retrieved".
    """
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task.died", task=task.get_name(), error=repr(exc), exc_info=exc)
    else:
        log.warning("task.ended", task=task.get_name())


def start_background(
    name: str, run: Callable[[], Awaitable[None]], *, healthy_after_s: float = 30.0
) -> asyncio.Task[None]:
    """``keep_running(run)`` as a named task whose end, should it come, is logged."""
    task = asyncio.create_task(keep_running(name, run, healthy_after_s=healthy_after_s), name=name)
    task.add_done_callback(log_task_end)
    return task
