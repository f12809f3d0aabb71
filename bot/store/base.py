"""The store's records and protocol, shared by every backend.

The engine, handlers and the HTTP server are written against ``Store`` only, so
the embedded SQLite default and the multi-replica PostgreSQL backend are
interchangeable; one contract test suite holds both to the same behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.errors import AdapterError

__all__ = [
    "AUDIT_SOURCES",
    "RUN_STATUSES",
    "STEP_STATUSES",
    "AuditEvent",
    "RunRecord",
    "StepRecord",
    "Store",
    "StoreUnavailable",
    "UnknownRun",
    "check_status",
    "decode_detail",
    "encode_detail",
    "to_utc",
]

STEP_STATUSES = frozenset({"pending", "running", "ok", "warn", "crit", "failed"})
# A run normally ends ok/warn/crit/failed, but one left with a step still pending
# reports "pending" (the engine's worst-of), which must not make saving it fail.
RUN_STATUSES = STEP_STATUSES
AUDIT_SOURCES = frozenset({"console", "slack", "teams", "cli", "scheduler", "alertmanager"})


class StoreUnavailable(AdapterError):
    """The store cannot be reached or a query on it failed (``/readyz`` turns red)."""


class UnknownRun(StoreUnavailable):
    """``finish_run`` named a run the store does not have.

    A ``StoreUnavailable`` because the usual cause is the store having been down
    when the run started, and callers already handle that case by logging it.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} in the store")
        self.run_id = run_id


@dataclass(frozen=True)
class RunRecord:
    """One procedure run, as the audit trail and ``status`` command show it."""

    id: str
    command: str
    user: str
    source: str
    conversation: str
    started_at: datetime
    status: str = "running"
    finished_at: datetime | None = None


@dataclass(frozen=True)
class StepRecord:
    """One step of a run; saved again (upserted) each time its state changes."""

    run_id: str
    index: int
    name: str
    status: str
    started_at: datetime | None
    duration_s: float | None
    summary: str
    error: str | None = None


@dataclass(frozen=True)
class AuditEvent:
    """Who did what from where, and how it ended; ``detail`` is stored as JSON."""

    at: datetime
    actor: str
    source: str
    action: str
    target: str
    outcome: str
    conversation: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """The bot's own state. Every method raises ``StoreUnavailable`` on backend failure."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Release connections; safe to call twice."""

    async def ping(self) -> None:
        """Round-trip to the backend; used by ``GET /readyz``."""

    async def start_run(self, run: RunRecord) -> None:
        """Record a new run."""

    async def save_step(self, step: StepRecord) -> None:
        """Insert or replace the step at ``(run_id, index)``."""

    async def finish_run(self, run_id: str, *, status: str, finished_at: datetime) -> None:
        """Set a run's final status; ``UnknownRun`` if it was never started."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps ordered by index."""

    async def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        """Newest first."""

    async def audit(self, event: AuditEvent) -> None:
        """Append an audit event."""

    async def recent_audit(self, limit: int = 50) -> list[AuditEvent]:
        """Newest first."""

    async def schema_version(self) -> int:
        """Highest applied migration version, 0 for an empty database."""


def to_utc(value: datetime) -> datetime:
    """Normalise to aware UTC; naive datetimes are refused because their zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given; the store needs aware UTC")
    return value.astimezone(UTC)


def check_status(status: str, allowed: frozenset[str], *, what: str) -> None:
    """Refuse statuses outside the documented set before they reach the database."""
    if status not in allowed:
        raise ValueError(f"invalid {what} status {status!r}; expected one of {sorted(allowed)}")


def encode_detail(detail: Mapping[str, Any]) -> str:
    """JSON for an audit detail; odd values become strings so auditing never fails."""
    return json.dumps(dict(detail), default=str, sort_keys=True)


def decode_detail(raw: str | None) -> dict[str, Any]:
    """Inverse of ``encode_detail``; tolerant of NULL."""
    if not raw:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}
