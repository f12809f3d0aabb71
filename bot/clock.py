"""The clock: what "now" is, passed in so tests and benchmarks can fix it.

A module of its own so that anything needing the time (the outbox, the
Slack surface, the store's callers) does not import ``bot.deps`` and, with
it, every adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
