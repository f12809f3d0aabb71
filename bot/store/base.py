"""The store's records and errors, shared by every backend and its callers.

The engine, handlers and the HTTP server are written against ``Store`` (in
``sql.py``) only, so the embedded SQLite default and the multi-replica
PostgreSQL backend are interchangeable; one contract test suite holds both to
the same behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.alerts import Alert
from bot.errors import AdapterError

__all__ = [
    "AlertEvent",
    "Approval",
    "AuditEvent",
    "CapacitySample",
    "Change",
    "ChatMessage",
    "Digest",
    "Incident",
    "JobRun",
    "KeyRotation",
    "NewAlertEvent",
    "OutboxItem",
    "Proposal",
    "PruneCutoffs",
    "RunRecord",
    "StoreUnavailable",
    "UnknownRun",
    "check_leader_name",
    "to_utc",
]

# Leader names become part of a lock file name (SQLite), so keep them filename-safe.
_LEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


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


@dataclass(frozen=True)
class OutboxItem:
    """One chat operation waiting for (or past) delivery by the outbox worker.

    Why an outbox: a Slack outage or a bot restart must delay a message, never
    lose it, so every post/update is a row first and a platform call second.
    """

    id: int
    message_key: str  # local id of the chat message this op creates or changes
    op: str  # "post" | "update" | "reply" | "ephemeral"
    surface: str  # "slack" (later "teams")
    channel: str
    parent_key: str | None  # for "reply": the message_key of the thread's root message
    payload: Mapping[str, Any]  # JSON object: the neutral message and extras
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None = None
    # The claim this copy came from (None when read unclaimed). Not part of the item's
    # identity: it only proves, to the store, that the holder still owns the item.
    claim_token: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ChatMessage:
    """Where a local message key landed on a platform, once the outbox delivered it."""

    key: str
    surface: str
    channel: str  # the platform's channel id once known
    ts: str | None  # the platform's message id (Slack ts) once delivered
    thread_ts: str | None = None


@dataclass(frozen=True)
class Proposal:
    """A stored approval request; a button carries only ``id``, the store holds the rest."""

    id: str
    action: str
    args: Mapping[str, Any]
    summary: str  # exactly what will be done, as shown to the user
    run_id: str
    conversation: str
    message_key: str  # the chat message carrying the buttons
    requested_by: str
    approver_role: str
    created_at: datetime
    expires_at: datetime
    status: str = "pending"
    decided_by: str | None = None
    decided_at: datetime | None = None
    result: str | None = None  # one line on the outcome once done/failed


@dataclass(frozen=True)
class Approval:
    """What one click on a proposal needing several approvers did.

    ``outcome``: ``recorded`` (counted, more needed), ``claimed`` (this click
    completed the count and claimed the proposal, exactly once), ``duplicate``
    (this user already approved; nothing changed) or ``not_pending`` (decided,
    expired or missing; nothing changed). ``approvers`` in click order.
    """

    outcome: str
    approvers: tuple[str, ...]
    proposal: Proposal | None


# One alert of a webhook delivery, as written to the inbox before answering 200: the
# same record the webhook parser makes (one alert type, not a copy of its fields).
NewAlertEvent = Alert


@dataclass(frozen=True, kw_only=True)
class AlertEvent(Alert):
    """A stored alert event, as a processor claims it from the inbox: the alert and its row.

    Why an inbox and not a task: the webhook is answered only once the event
    is committed, so a bot killed right after answering still processes it.
    """

    id: int
    received_at: datetime
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class Incident:
    """One incident thread: opened by a firing alert (or by hand), closed when resolved."""

    id: str  # uuid hex
    fingerprint: str | None  # None for a manual incident (/sms incident TITLE)
    title: str
    priority: str  # "P0" | "P1" | "P2" | "P3"
    procedure: str  # routed procedure name, "" for none
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    opened_at: datetime
    opened_by: str  # "alertmanager" or a user id
    status: str = "open"  # "open" | "resolved"
    last_seen_at: datetime | None = None
    repeats: int = 0  # repeat notifications folded into the thread
    root_key: str | None = None  # the chat message key of the thread's root
    conversation: str | None = None  # encoded thread (opaque JSON text)
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    escalated_at: datetime | None = None
    resolved_at: datetime | None = None
    record_path: str | None = None  # the markdown incident record once written
    digest_id: str | None = None  # the storm digest listing it (its thread is the digest's)


@dataclass(frozen=True)
class Digest:
    """One alert-storm digest: a message listing the incidents of a storm minute.

    Kept in the store, not in a processor's memory, so every replica adds to
    the same digest and only one digest message is posted per minute.
    """

    id: str  # uuid hex
    started_at: datetime
    root_key: str | None = None  # the digest message's key, once posted
    conversation: str | None = None  # encoded thread (opaque JSON text)


@dataclass(frozen=True)
class JobRun:
    """One scheduled slot of a job, claimed by the replica that runs it.

    Why keyed by slot and not by start time: every replica computes the same
    slot (the cron fire time) for a run, so ``(job, slot)`` is what makes a
    slot run exactly once however many replicas, restarts or catch-ups try.
    """

    job: str  # e.g. "morning-summary"
    slot: datetime  # the scheduled fire time this run is for (aware UTC)
    started_at: datetime
    runner: str  # which replica, e.g. hostname:pid
    status: str = "running"  # running | ok | warn | crit | failed
    finished_at: datetime | None = None


@dataclass(frozen=True)
class CapacitySample:
    """One daily reading of a capacity figure (``db_bytes``, ``users``, ``courses``...)."""

    at: datetime
    metric: str
    value: float


@dataclass(frozen=True)
class KeyRotation:
    """The newest recorded rotation of one key (``rotated KEY``)."""

    key: str
    rotated_at: datetime
    rotated_by: str


@dataclass(frozen=True)
class Change:
    """A change window (`change start`): open until `change done` or `change abort`."""

    id: str
    description: str
    critical: bool
    started_by: str
    started_at: datetime
    status: str = "open"  # open | done | aborted
    conversation: str | None = None  # the change thread (encoded)
    silence_id: str | None = None
    before: str = "{}"  # the state before the change, JSON
    ended_at: datetime | None = None


@dataclass(frozen=True)
class PruneCutoffs:
    """What is older than these goes (the runbook's retention: audit 1 year, the rest 30 days).

    Nothing pending is ever pruned: a run still running or pending, a run with
    a proposal waiting for a click, an outbox item not yet delivered, an alert
    event not yet processed all stay whatever their age.
    """

    audit: datetime
    runs: datetime
    outbox: datetime
    alerts: datetime


def to_utc(value: datetime) -> datetime:
    """Normalise to aware UTC; naive datetimes are refused because their zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given; the store needs aware UTC")
    return value.astimezone(UTC)


def check_leader_name(name: str) -> None:
    """Refuse leader names that could not be a lock file name beside the database."""
    if not _LEADER_NAME.fullmatch(name):
        raise ValueError(
            f"invalid leader name {name!r}: 1-100 of letters, digits and _.:-,"
            " starting with a letter or digit"
        )
