"""The store's records and protocol, shared by every backend.

The engine, handlers and the HTTP server are written against ``Store`` only, so
the embedded SQLite default and the multi-replica PostgreSQL backend are
interchangeable; one contract test suite holds both to the same behaviour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.errors import AdapterError

__all__ = [
    "ALERT_STATUSES",
    "AUDIT_SOURCES",
    "FINISHED_PROPOSAL_STATUSES",
    "INCIDENT_PRIORITIES",
    "INCIDENT_STATUSES",
    "JOB_FINISHED_STATUSES",
    "JOB_STATUSES",
    "OUTBOX_OPS",
    "PROPOSAL_STATUSES",
    "RUN_STATUSES",
    "STEP_STATUSES",
    "AlertEvent",
    "Approval",
    "AuditEvent",
    "ChatMessage",
    "Digest",
    "Incident",
    "JobRun",
    "NewAlertEvent",
    "OutboxItem",
    "Proposal",
    "RunRecord",
    "StepRecord",
    "Store",
    "StoreUnavailable",
    "UnknownRun",
    "check_alert_event",
    "check_incident",
    "check_job",
    "check_leader_name",
    "check_lease",
    "check_outbox_op",
    "check_outcomes",
    "check_status",
    "decode_detail",
    "decode_object",
    "encode_detail",
    "encode_labels",
    "encode_object",
    "to_utc",
]

STEP_STATUSES = frozenset({"pending", "running", "ok", "warn", "crit", "failed"})
# A run normally ends ok/warn/crit/failed, but one left with a step still pending
# reports "pending" (the engine's worst-of), which must not make saving it fail.
RUN_STATUSES = STEP_STATUSES
AUDIT_SOURCES = frozenset({"console", "slack", "teams", "cli", "scheduler", "alertmanager"})
OUTBOX_OPS = frozenset({"post", "update", "reply", "ephemeral"})
PROPOSAL_STATUSES = frozenset({"pending", "approved", "cancelled", "expired", "done", "failed"})
FINISHED_PROPOSAL_STATUSES = frozenset({"done", "failed"})
ALERT_STATUSES = frozenset({"firing", "resolved"})
INCIDENT_STATUSES = frozenset({"open", "resolved"})
INCIDENT_PRIORITIES = frozenset({"P0", "P1", "P2", "P3"})
JOB_STATUSES = frozenset({"running", "ok", "warn", "crit", "failed"})
JOB_FINISHED_STATUSES = JOB_STATUSES - {"running"}
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


# --- migration 8 (recovery, issue 11) ----------------------------------------------
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


@dataclass(frozen=True)
class NewAlertEvent:
    """One alert of a webhook delivery, as written to the inbox before answering 200."""

    fingerprint: str
    status: str  # "firing" | "resolved"
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str


@dataclass(frozen=True)
class AlertEvent:
    """A stored alert event, as a processor claims it from the inbox.

    Why an inbox and not a task: the webhook is answered only once the event
    is committed, so a bot killed right after answering still processes it.
    """

    id: int
    fingerprint: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str
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

    async def count_audit(
        self,
        *,
        action: str,
        target: str,
        since: datetime,
        outcomes: Collection[str] | None = None,
    ) -> int:
        """Audit events with this action and target at or after ``since``.

        ``outcomes`` narrows to those outcomes (an empty collection counts nothing).
        """

    # --- outbox -----------------------------------------------------------

    async def outbox_add(
        self,
        *,
        message_key: str,
        op: str,
        surface: str,
        channel: str,
        parent_key: str | None,
        payload: Mapping[str, Any],
        now: datetime,
    ) -> int:
        """Queue a chat operation due ``now``; return its id.

        An ``update`` replaces the payload of the newest pending, unleased
        ``update`` of the same message instead (latest state wins) and returns
        that item's id.
        """

    async def outbox_claim(
        self, *, now: datetime, limit: int = 20, lease_s: float = 30.0
    ) -> list[OutboxItem]:
        """Lease up to ``limit`` due items until ``now + lease_s``, oldest first.

        An item waits while an earlier undelivered item has its message key or,
        for one with a ``parent_key``, has the parent's key (a post goes before
        its updates and its thread replies). Two claimers never get one item.
        """

    async def outbox_done(self, item_id: int) -> None:
        """Delivered; a no-op for an item already done or dead."""

    async def outbox_retry(self, item_id: int, *, at: datetime, error: str) -> None:
        """A failed attempt: count it, release the lease, try again at ``at``."""

    async def outbox_dead(self, item_id: int, *, error: str) -> None:
        """Give up on an item (counted as a failed attempt); kept for inspection."""

    async def outbox_pending(self) -> int:
        """Items neither done nor dead."""

    async def outbox_items(self, *, include_done: bool = False) -> list[OutboxItem]:
        """Items in id order: pending and dead ones, and done ones if asked."""

    # --- chat messages ----------------------------------------------------

    async def chat_message_put(self, msg: ChatMessage) -> None:
        """Insert or replace the message with this key."""

    async def chat_message_get(self, key: str) -> ChatMessage | None:
        """The message, or None."""

    # --- proposals --------------------------------------------------------

    async def proposal_add(self, p: Proposal) -> None:
        """Store a new proposal; a duplicate id is refused (``StoreUnavailable``)."""

    async def proposal_get(self, id: str) -> Proposal | None:
        """The proposal, or None."""

    async def proposal_claim(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        """``pending -> approved`` if pending and unexpired, exactly once; else None."""

    async def proposal_cancel(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        """``pending -> cancelled`` if pending; else None."""

    async def proposal_expire_due(self, *, now: datetime) -> list[Proposal]:
        """Mark pending proposals with ``expires_at <= now`` expired; return them."""

    async def proposal_finish(self, id: str, *, status: str, result: str) -> None:
        """``approved -> done|failed`` with a result line; other states are left as is."""

    # migration 8 (recovery): proposals that need several different approvers
    async def proposal_approve(self, id: str, *, by: str, now: datetime, needed: int) -> Approval:
        """Record ``by``'s approval; the one completing ``needed`` claims, in one transaction."""

    async def proposal_approvals(self, id: str) -> tuple[str, ...]:
        """Who approved the proposal so far, in click order."""

    # --- timelines --------------------------------------------------------

    async def audit_between(
        self, start: datetime, end: datetime | None = None, *, limit: int = 1000
    ) -> list[AuditEvent]:
        """Audit events with ``start <= at < end`` (no upper bound if None), oldest first."""

    async def runs_for_conversation(self, conversation: str) -> list[RunRecord]:
        """Runs whose ``conversation`` is exactly this one, oldest first."""

    # --- alert inbox ------------------------------------------------------

    async def alert_events_add(
        self, events: Sequence[NewAlertEvent], *, received_at: datetime
    ) -> list[int]:
        """Store a webhook's alerts in one transaction; their ids, in input order.

        Durable when it returns: the webhook may be answered 200 right after.
        """

    async def alert_events_claim(
        self, *, now: datetime, limit: int = 100, lease_s: float = 30.0
    ) -> list[AlertEvent]:
        """Lease up to ``limit`` unprocessed, due events until ``now + lease_s``, oldest first.

        An event is returned only with every older unprocessed event of its
        fingerprint in the same batch (a firing goes before its resolved). Two
        claimers never get one event.
        """

    async def alert_event_done(self, id: int) -> None:
        """Processed; a no-op for an event already done."""

    async def alert_event_retry(self, id: int, *, at: datetime, error: str) -> None:
        """A failed attempt: count it, release the lease, not claimable before ``at``.

        Later events of its fingerprint wait for it.
        """

    async def alert_events_pending(self) -> int:
        """Events not yet processed."""

    # --- incidents --------------------------------------------------------

    async def incident_open(self, incident: Incident) -> Incident | None:
        """Store a new incident; None (and nothing stored) if its fingerprint has one open.

        Atomic across replicas. A duplicate id is refused (``StoreUnavailable``).
        """

    async def incident_get(self, id: str) -> Incident | None:
        """The incident, or None."""

    async def incident_open_for(self, fingerprint: str) -> Incident | None:
        """The open incident of this fingerprint, or None."""

    async def incident_set_thread(self, id: str, *, root_key: str, conversation: str) -> None:
        """Record where the incident's thread is; a no-op for an unknown id."""

    async def incident_touch(self, id: str, *, now: datetime) -> Incident | None:
        """A repeat notification: ``repeats + 1``, ``last_seen_at = now``; None unless open."""

    async def incident_ack(self, id: str, *, by: str, now: datetime) -> Incident | None:
        """Acknowledge an open, unacknowledged incident, exactly once; else None."""

    async def incident_escalate(self, id: str, *, now: datetime) -> Incident | None:
        """Mark an open, unacknowledged, unescalated incident escalated, exactly once."""

    async def incident_resolve(self, id: str, *, now: datetime) -> Incident | None:
        """``open -> resolved``, exactly once; else None."""

    async def incident_set_record(self, id: str, *, path: str, text: str | None = None) -> None:
        """Record where the incident's markdown record was written, and keep its text."""

    async def incident_record_text(self, id: str) -> str | None:
        """The incident's markdown record as kept in the store, if any."""

    async def incidents_open(self) -> list[Incident]:
        """Open incidents, oldest first."""

    async def incidents_between(self, start: datetime, end: datetime) -> list[Incident]:
        """Incidents opened in ``[start, end)``, oldest first."""

    async def incidents_opened_since(self, since: datetime) -> int:
        """How many incidents were opened at or after ``since`` (alert-storm limiting)."""

    # --- alert-storm digests ----------------------------------------------

    async def digest_join(
        self, incident_id: str, *, now: datetime, window: timedelta, new_id: str
    ) -> tuple[Digest, bool]:
        """Put the incident in the current digest, creating the digest if there is none.

        The current digest is the newest one started after ``now - window``;
        when there is none, one with id ``new_id`` starting at ``now`` is
        created. Atomic across replicas: of any number of concurrent calls
        exactly one creates it (and gets True), the others join it. Returns the
        digest as it stands (without a ``root_key`` while its creator has not
        posted it yet) and whether this call created it.
        """

    async def digest_set_thread(
        self, id: str, *, root_key: str, conversation: str
    ) -> Digest | None:
        """Record where the digest message is; the digest, or None for an unknown id."""

    async def digest_get(self, id: str) -> Digest | None:
        """The digest, or None."""

    async def digest_incidents(self, id: str) -> list[Incident]:
        """The incidents in the digest, oldest first: what its message lists."""

    # --- scheduled jobs ---------------------------------------------------

    async def job_claim(self, job: str, *, slot: datetime, runner: str, now: datetime) -> bool:
        """Record ``(job, slot)`` as started by ``runner``; True for exactly one caller ever.

        Atomic across replicas: of any number of concurrent claims of one slot,
        one returns True and the others False. A slot is never claimed again,
        even if its runner died before finishing it.
        """

    async def job_finish(self, job: str, *, slot: datetime, status: str, now: datetime) -> None:
        """``running -> ok|warn|crit|failed``; a finished or never-claimed slot is left as is."""

    async def job_last(self, job: str) -> JobRun | None:
        """The claimed slot of this job with the latest ``slot`` time, or None."""

    async def job_runs(self, job: str, *, limit: int = 10) -> list[JobRun]:
        """This job's claimed slots, newest slot first."""

    # --- leadership -------------------------------------------------------

    async def leader_acquire(self, name: str) -> bool:
        """Try, without waiting, to become the leader for ``name``.

        True if this store now holds it (or already did). Leadership lasts until
        ``leader_release``, ``close``, or the process dying: it is tied to a
        resource the operating system or the database frees then (a PostgreSQL
        session, a locked file), never to a row that a dead replica leaves behind.
        """

    async def leader_check(self, name: str) -> bool:
        """Does this store still hold leadership for ``name``? False once it was lost."""

    async def leader_release(self, name: str) -> None:
        """Give up leadership for ``name``; a no-op if not held."""


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


def check_outbox_op(op: str, parent_key: str | None) -> None:
    """Refuse unknown ops, and a reply that does not say which thread it belongs to."""
    if op not in OUTBOX_OPS:
        raise ValueError(f"invalid outbox op {op!r}; expected one of {sorted(OUTBOX_OPS)}")
    if op == "reply" and not parent_key:
        raise ValueError("an outbox 'reply' needs the parent_key of its thread's root message")


def check_lease(lease_s: float) -> None:
    if not lease_s > 0:
        raise ValueError(f"lease_s must be positive, got {lease_s!r}")


def check_outcomes(outcomes: Collection[str] | None) -> list[str] | None:
    """The outcomes filter as a list; a bare string would silently match per character."""
    if outcomes is None:
        return None
    if isinstance(outcomes, str):
        raise TypeError("outcomes must be a collection of strings, not one string")
    return list(outcomes)


def encode_object(value: Mapping[str, Any], *, what: str) -> str:
    """Strict JSON for an outbox payload or proposal args.

    Unlike ``encode_detail`` nothing is stringified: these values are read back
    and acted on, so a value that does not round-trip is a bug to fail on now.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object (a mapping), got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc


def decode_object(raw: str) -> dict[str, Any]:
    """Inverse of ``encode_object``."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"stored JSON is not an object: {raw[:80]!r}")
    return value


def encode_labels(value: Mapping[str, str], *, what: str) -> str:
    """Strict JSON for alert labels or annotations: an object of strings."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"{what} must map strings to strings, got {key!r}: {item!r}")
    return json.dumps(dict(value), sort_keys=True)


def check_alert_event(event: NewAlertEvent) -> None:
    """Refuse an event the processor could not act on, before any of its batch is stored."""
    check_status(event.status, ALERT_STATUSES, what="alert")
    if not event.fingerprint:
        raise ValueError("an alert event needs a fingerprint")


def check_job(job: str, *, runner: str | None = None) -> None:
    """Refuse an empty job name or runner: a slot nobody can attribute is a bug."""
    if not job:
        raise ValueError("a job run needs a job name")
    if runner is not None and not runner:
        raise ValueError("a job run needs a runner (which replica runs it)")


def check_leader_name(name: str) -> None:
    """Refuse leader names that could not be a lock file name beside the database."""
    if not _LEADER_NAME.fullmatch(name):
        raise ValueError(
            f"invalid leader name {name!r}: 1-100 of letters, digits and _.:-,"
            " starting with a letter or digit"
        )


def check_incident(incident: Incident) -> None:
    check_status(incident.status, INCIDENT_STATUSES, what="incident")
    if incident.priority not in INCIDENT_PRIORITIES:
        raise ValueError(
            f"invalid incident priority {incident.priority!r};"
            f" expected one of {sorted(INCIDENT_PRIORITIES)}"
        )
    if incident.fingerprint == "":
        raise ValueError("an incident's fingerprint is None (manual) or non-empty")
