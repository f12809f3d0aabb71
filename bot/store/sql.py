"""Every query of the store, written once, over a small per-dialect session.

Why shared SQL text and not SQLAlchemy Core: SQLite 3.35+ and PostgreSQL accept
the same statements for everything this store does (``RETURNING``, ``ON
CONFLICT ... DO NOTHING/UPDATE``, partial indexes, ``WITH ... MATERIALIZED``),
so a query is one string a reader can paste into ``psql`` or ``sqlite3``. What
differs is small and lives in ``sqlite.py`` and ``postgres.py``: placeholders
(``:name`` here; asyncpg wants ``$1``), how a time is stored (ISO text or
``timestamptz``), transactions (``BEGIN IMMEDIATE`` or a pooled connection),
``FOR UPDATE SKIP LOCKED`` in the claims, advisory locks, ping and leadership.

Claims are one guarded ``UPDATE ... RETURNING``: PostgreSQL's row locks (plus
``SKIP LOCKED``) and SQLite's single writer each make a row go to one claimer.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Protocol, TypeVar, get_args, get_origin, get_type_hints

from bot.store.base import (
    AlertEvent,
    Approval,
    AuditEvent,
    CapacitySample,
    Change,
    ChatMessage,
    Digest,
    Incident,
    JobRun,
    KeyRotation,
    NewAlertEvent,
    OutboxItem,
    Proposal,
    PruneCutoffs,
    RunRecord,
    StepRecord,
    StoreUnavailable,
    UnknownRun,
    to_utc,
)
from bot.store.migrations import Migration, validate_migrations

__all__ = [
    "ALERT_INBOX_LOCK_KEY",
    "APPROVAL_LOCK_KEY",
    "DIGEST_LOCK_KEY",
    "JOB_LEASE_S",
    "JOB_LOCK_KEY",
    "MIGRATION_LOCK_KEY",
    "IncidentRepo",
    "JobRepo",
    "OutboxRepo",
    "ProposalRepo",
    "Row",
    "RunRepo",
    "Session",
    "Store",
    "check_alert_events",
    "decode_time",
]

# Transaction-scoped advisory lock keys (PostgreSQL; SQLite's write lock covers all).
# Replicas started together would race to create the same tables.
MIGRATION_LOCK_KEY = 0x736D732D626F74
# Ids come from a sequence: without the lock a webhook transaction holding id 10
# could commit after one holding id 11, and a processor would see a fingerprint's
# "resolved" before its "firing". Under it, ids are committed in order.
ALERT_INBOX_LOCK_KEY = 0x736D732D616C7274
# "Is there a current digest? If not, create one" is a read then a write.
DIGEST_LOCK_KEY = 0x736D732D64696773
# Serialises the clicks on proposals that need several approvers ("sms-appr").
APPROVAL_LOCK_KEY = 0x736D732D61707072
# "Is a slot of this job running? If not, claim mine" is a read then a write ("sms-jobx").
JOB_LOCK_KEY = 0x736D732D6A6F6278

T = TypeVar("T")

# Rows per multi-row INSERT of alerts: 8 parameters each stays far below both
# engines' limit on parameters in one statement (32766 SQLite, 32767 asyncpg).
_INSERT_ROWS = 500

# Refused before they reach the database.
STEP_STATUSES = frozenset({"pending", "running", "ok", "warn", "crit", "failed"})
# A run normally ends ok/warn/crit/failed, but one left with a step still pending
# reports "pending" (the engine's worst-of), which must not make saving it fail.
RUN_STATUSES = STEP_STATUSES
OUTBOX_OPS = frozenset({"post", "update", "reply", "ephemeral"})
PROPOSAL_STATUSES = frozenset({"pending", "approved", "cancelled", "expired", "done", "failed"})
FINISHED_PROPOSAL_STATUSES = frozenset({"done", "failed"})
ALERT_STATUSES = frozenset({"firing", "resolved"})
INCIDENT_STATUSES = frozenset({"open", "resolved"})
INCIDENT_PRIORITIES = frozenset({"P0", "P1", "P2", "P3"})
JOB_STATUSES = frozenset({"running", "ok", "warn", "crit", "failed"})
JOB_FINISHED_STATUSES = JOB_STATUSES - {"running"}
# How long a claimed slot is held without a heartbeat (``job_renew``) from its runner.
JOB_LEASE_S = 120.0


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


def check_alert_events(events: Sequence[NewAlertEvent]) -> Sequence[NewAlertEvent]:
    """Refuse a status or fingerprint the inbox would misread; the events, all checked."""
    for event in events:
        check_status(event.status, ALERT_STATUSES, what="alert")
        if not event.fingerprint:
            raise ValueError("an alert event needs a fingerprint")
    return events


def check_incident(incident: Incident) -> None:
    """Refuse a status, priority or fingerprint the incident service would misread."""
    check_status(incident.status, INCIDENT_STATUSES, what="incident")
    if incident.priority not in INCIDENT_PRIORITIES:
        raise ValueError(
            f"invalid incident priority {incident.priority!r};"
            f" expected one of {sorted(INCIDENT_PRIORITIES)}"
        )
    if incident.fingerprint == "":
        raise ValueError("an incident's fingerprint is None (manual) or non-empty")


RUN = "id, command, user_id, source, conversation, started_at, status, finished_at"
STEP = "run_id, idx, name, status, started_at, duration_s, summary, error"
AUDIT = "at, actor, source, action, target, outcome, conversation, detail"
OUTBOX = (
    "id, message_key, op, surface, channel, parent_key, payload, attempts, created_at,"
    " next_attempt_at, last_error, claim_token"
)
PROPOSAL = (
    "id, action, args, summary, run_id, conversation, message_key, requested_by,"
    " approver_role, created_at, expires_at, status, decided_by, decided_at, result"
)
ALERT = (
    "id, fingerprint, status, labels, annotations, starts_at, ends_at, generator_url,"
    " received_at, attempts, last_error"
)
INCIDENT = (
    "id, fingerprint, title, priority, procedure, labels, annotations, opened_at, opened_by,"
    " status, last_seen_at, repeats, root_key, conversation, acknowledged_by, acknowledged_at,"
    " escalated_at, resolved_at, record_path, digest_id"
)
DIGEST = "id, started_at, root_key, conversation"
CHAT = "key, surface, channel, ts, thread_ts"
ALERT_NEW = (
    "fingerprint, status, labels, annotations, starts_at, ends_at, generator_url, received_at"
)
JOB = "job, slot, started_at, runner, status, finished_at"
CHANGE = (
    "id, description, critical, started_by, started_at, status, conversation, silence_id,"
    " before, ended_at"
)
_SAMPLE_UPSERT = " ON CONFLICT (metric, at) DO UPDATE SET value = excluded.value"
# Each key's newest rotation (portable: no DISTINCT ON in SQLite).
_LAST_ROTATIONS = (
    "SELECT key, rotated_at, rotated_by FROM key_rotations k WHERE seq = (SELECT seq"
    " FROM key_rotations r WHERE r.key = k.key ORDER BY rotated_at DESC, seq DESC LIMIT 1)"
    " ORDER BY key"
)
# Runs old enough to prune and pending nothing (not running, no proposal waiting for a
# click), and their steps.
_PRUNE_RUNS = (
    "DELETE FROM {what} IN (SELECT id FROM runs WHERE started_at < :at"
    " AND status NOT IN ('running', 'pending')"
    " AND id NOT IN (SELECT run_id FROM proposals WHERE status IN ('pending', 'approved')))"
)
# A real read of the tables a 200 from the webhook relies on; a missing table fails it.
PING = (
    "SELECT (SELECT MAX(version) FROM schema_migrations) AS version,"
    " EXISTS (SELECT 1 FROM alert_events) AS a, EXISTS (SELECT 1 FROM outbox) AS o,"
    " EXISTS (SELECT 1 FROM audit) AS u"
)
# Due, unleased, and no earlier undelivered item for its message or its thread's root.
_CLAIMABLE = (
    "SELECT o.id FROM outbox o WHERE o.state = 'pending' AND o.next_attempt_at <= :now"
    " AND (o.leased_until IS NULL OR o.leased_until <= :now)"
    " AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.state = 'pending' AND b.id < o.id"
    " AND (b.message_key = o.message_key OR b.message_key = o.parent_key))"
)
_LEASE = "UPDATE outbox SET leased_until = :until, claim_token = :token WHERE id IN "
_CLAIM_OUTBOX = (
    f"{_LEASE}({_CLAIMABLE} ORDER BY o.id LIMIT :limit{{skip_locked}}) RETURNING {OUTBOX}"
)
# The same claim for one item, just added in the same transaction.
_CLAIM_ADDED = f"{_LEASE}({_CLAIMABLE} AND o.id = :id) RETURNING {OUTBOX}"
# cand: the oldest claimable events this claimer could lock. An event is leased
# only if every older pending event of its fingerprint is in cand too: one locked
# by another claimer, leased, or deferred by a retry is not, and holds it back
# (a firing goes before its resolved).
_CLAIM_ALERTS = (
    "WITH cand AS MATERIALIZED (SELECT id, fingerprint FROM alert_events"
    " WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= :now)"
    " AND (leased_until IS NULL OR leased_until <= :now) ORDER BY id LIMIT :limit{skip_locked})"
    " UPDATE alert_events SET leased_until = :until WHERE id IN (SELECT c.id FROM cand c"
    " WHERE NOT EXISTS (SELECT 1 FROM alert_events b WHERE b.fingerprint = c.fingerprint"
    " AND b.state = 'pending' AND b.id < c.id AND b.id NOT IN (SELECT id FROM cand)))"
    f" RETURNING {ALERT}"
)
# Coalesce into the newest undelivered item of the message if it is an unleased
# update: a payload is never replaced under a worker already sending the old one.
_COALESCE = (
    "UPDATE outbox SET payload = :payload WHERE id = (SELECT max(id) FROM outbox"
    " WHERE message_key = :message_key AND state = 'pending') AND op = 'update'"
    " AND state = 'pending' AND (leased_until IS NULL OR leased_until <= :now) RETURNING id"
)
_OUTBOX_END = (
    "UPDATE outbox SET {set}, leased_until = NULL, claim_token = NULL"
    " WHERE id = :id AND state = 'pending'{fence}"
)
# The fence: the claim the caller holds is still the item's latest (NULL never matches).
_FENCE = " AND claim_token = :token"
# Where a delivered item landed, recorded only while its claim is the caller's. SQLite
# needs the WHERE for INSERT ... SELECT ... ON CONFLICT to parse; there is one here.
_CHAT_UPSERT = (
    " ON CONFLICT (key) DO UPDATE SET surface = excluded.surface,"
    " channel = excluded.channel, ts = excluded.ts, thread_ts = excluded.thread_ts"
)
_CHAT_FENCED = (
    f"INSERT INTO chat_messages ({CHAT}) SELECT :key, :surface, :channel, :ts, :thread_ts"
    " WHERE EXISTS (SELECT 1 FROM outbox WHERE id = :item AND state = 'pending'"
    f" AND claim_token = :token){_CHAT_UPSERT}"
)
_RETRY = "attempts = attempts + 1, next_attempt_at = :at, last_error = :error"
_ALERT_END = (
    "UPDATE alert_events SET {set}, leased_until = NULL WHERE id = :id AND state = 'pending'"
)
# The conflict target names the partial unique index: a second open incident for
# a fingerprint is skipped, while a duplicate id still fails loudly.
_OPEN_INCIDENT = " ON CONFLICT (fingerprint) WHERE status = 'open' AND fingerprint IS NOT NULL"
_PROPOSAL_DECIDE = (
    "UPDATE proposals SET status = :status, decided_by = :by, decided_at = :now"
    " WHERE id = :id AND status = 'pending'{extra} RETURNING " + PROPOSAL
)
_APPROVERS = "SELECT approver FROM proposal_approvals WHERE proposal_id = :id ORDER BY seq"
_INCIDENT_CHANGE = "UPDATE incidents SET {set} WHERE id = :id AND status = 'open'{extra} RETURNING "


class Row(Protocol):
    """A result row by column name: ``sqlite3.Row`` or ``asyncpg.Record``."""

    def __getitem__(self, key: str, /) -> Any: ...


class Session(Protocol):
    """One connection of a dialect, in a transaction or not; ``:name`` parameters."""

    async def fetch(self, sql: str, /, **params: Any) -> list[Row]: ...

    async def execute(self, sql: str, /, **params: Any) -> int:
        """Run a statement; the number of rows it changed."""

    async def lock(self, key: int) -> None:
        """Hold an advisory lock until the transaction ends (a no-op under one writer)."""


# Record fields stored under another column name.
_COLUMN = {"user": "user_id", "index": "idx"}


def _insert(table: str, columns: str, tail: str = "") -> str:
    values = ", ".join(f":{name.strip()}" for name in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({values}){tail}"


def _thread(id: str, root_key: str, conversation: str) -> dict[str, str]:
    return {"id": id, "root_key": root_key, "conversation": conversation}


def _lease_until(now: datetime, lease_s: float) -> datetime:
    """When a lease of ``lease_s`` taken ``now`` ends; a lease must be positive."""
    if not lease_s > 0:
        raise ValueError(f"lease_s must be positive, got {lease_s!r}")
    return to_utc(now) + timedelta(seconds=lease_s)


def decode_time(value: str | datetime | None) -> datetime | None:
    """A stored time (ISO text from SQLite, a datetime from asyncpg) as aware UTC."""
    if value is None:
        return None
    return to_utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


@cache
def _codecs(cls: Callable[..., Any]) -> dict[str, str]:
    """How each field of a record is stored: "time", "labels", "detail", "json" or "" (as is)."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        if hint is datetime or datetime in get_args(hint):
            out[name] = "time"
        elif get_origin(hint) is Mapping:
            value_type = get_args(hint)[1]
            out[name] = "detail" if name == "detail" else "labels" if value_type is str else "json"
        else:
            out[name] = ""
    return out


def _params(record: Any, **overrides: Any) -> dict[str, Any]:
    """A record's fields as parameters by column name, JSON fields encoded."""
    out: dict[str, Any] = {}
    kind: type = type(record)
    for name, codec in _codecs(kind).items():
        value, what = getattr(record, name), f"{type(record).__name__}.{name}"
        if codec == "detail":
            value = encode_detail(value)
        elif codec == "labels":
            value = encode_labels(value, what=what)
        elif codec == "json":
            value = encode_object(value, what=what)
        out[_COLUMN.get(name, name)] = value
    return out | overrides


def _decode(cls: Callable[..., T], row: Row) -> T:
    """A record from a row, by field name, decoding times and JSON (the inverse of ``_params``)."""
    values: dict[str, Any] = {}
    for name, codec in _codecs(cls).items():
        value = row[_COLUMN.get(name, name)]
        if codec == "time":
            value = decode_time(value)
        elif codec == "detail":
            value = decode_detail(value)
        elif codec == "labels":
            value = {str(k): str(v) for k, v in decode_object(value).items()}
        elif codec == "json":
            value = decode_object(value)
        values[name] = value
    return cls(**values)


def _change(row: Row) -> Change:
    """A change from its row: ``critical`` is stored as 0/1 in both dialects."""
    change = _decode(Change, row)
    return replace(change, critical=bool(change.critical))


class _Sql(ABC):
    """What every repository runs its queries through; a backend supplies the sessions."""

    SKIP_LOCKED = ""  # what a claim's SELECT ends with so claimers pass each other's rows

    @abstractmethod
    def _session(self) -> AbstractAsyncContextManager[Session]:
        """A connection with each statement committed on its own."""

    @abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Session]:
        """A connection in one write transaction, committed on leaving."""

    async def _fetch(self, sql: str, **params: Any) -> list[Row]:
        async with self._session() as session:
            return await session.fetch(sql, **params)

    async def _execute(self, sql: str, **params: Any) -> int:
        async with self._session() as session:
            return await session.execute(sql, **params)

    async def _all(self, cls: Callable[..., T], sql: str, **params: Any) -> list[T]:
        return [_decode(cls, row) for row in await self._fetch(sql, **params)]

    async def _get(self, cls: Callable[..., T], sql: str, **params: Any) -> T | None:
        found = await self._all(cls, sql, **params)
        return found[0] if found else None

    async def _count(self, sql: str, **params: Any) -> int:
        rows = await self._fetch(sql, **params)
        return int(rows[0]["n"]) if rows else 0

    async def _claim(
        self,
        sql: str,
        cls: Callable[..., T],
        now: datetime,
        limit: int,
        lease_s: float,
        **params: Any,
    ) -> list[T]:
        """Lease up to ``limit`` rows until ``now + lease_s``, in id order."""
        until = _lease_until(now, lease_s)
        if limit <= 0:
            return []
        async with self._transaction() as s:
            sql = sql.format(skip_locked=self.SKIP_LOCKED)
            rows = await s.fetch(sql, now=now, limit=limit, until=until, **params)
        return [_decode(cls, row) for row in sorted(rows, key=lambda row: int(row["id"]))]


class RunRepo(_Sql):
    """Runs, their steps, and the audit trail."""

    async def start_run(self, run: RunRecord) -> None:
        check_status(run.status, RUN_STATUSES, what="run")
        await self._execute(_insert("runs", RUN), **_params(run))

    async def save_step(self, step: StepRecord) -> None:
        """Insert or replace the step at ``(run_id, index)``."""
        check_status(step.status, STEP_STATUSES, what="step")
        upsert = (
            " ON CONFLICT (run_id, idx) DO UPDATE SET name = excluded.name,"
            " status = excluded.status, started_at = excluded.started_at,"
            " duration_s = excluded.duration_s, summary = excluded.summary, error = excluded.error"
        )
        await self._execute(_insert("steps", STEP, upsert), **_params(step))

    async def finish_run(self, run_id: str, *, status: str, finished_at: datetime) -> None:
        """Set a run's final status; ``UnknownRun`` if it was never started."""
        check_status(status, RUN_STATUSES, what="run")
        sql = "UPDATE runs SET status = :status, finished_at = :at WHERE id = :id"
        if not await self._execute(sql, status=status, at=finished_at, id=run_id):
            raise UnknownRun(run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._get(RunRecord, f"SELECT {RUN} FROM runs WHERE id = :id", id=run_id)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        sql = f"SELECT {STEP} FROM steps WHERE run_id = :id ORDER BY idx"
        return await self._all(StepRecord, sql, id=run_id)

    async def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        sql = f"SELECT {RUN} FROM runs ORDER BY started_at DESC, seq DESC LIMIT :n"
        return await self._all(RunRecord, sql, n=max(limit, 0))

    async def runs_for_conversation(self, conversation: str) -> list[RunRecord]:
        sql = f"SELECT {RUN} FROM runs WHERE conversation = :c ORDER BY started_at, seq"
        return await self._all(RunRecord, sql, c=conversation)

    async def audit(self, event: AuditEvent) -> None:
        await self._execute(_insert("audit", AUDIT), **_params(event))

    async def recent_audit(self, limit: int = 50) -> list[AuditEvent]:
        sql = f"SELECT {AUDIT} FROM audit ORDER BY at DESC, seq DESC LIMIT :n"
        return await self._all(AuditEvent, sql, n=max(limit, 0))

    async def audit_between(
        self, start: datetime, end: datetime | None = None, *, limit: int = 1000
    ) -> list[AuditEvent]:
        """Audit events with ``start <= at < end`` (no upper bound if None), oldest first."""
        upper = "" if end is None else " AND at < :end"
        sql = f"SELECT {AUDIT} FROM audit WHERE at >= :start{upper} ORDER BY at, seq LIMIT :n"
        return await self._all(AuditEvent, sql, start=start, end=end, n=max(limit, 0))

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
        if isinstance(outcomes, str):  # it would match per character
            raise TypeError("outcomes must be a collection of strings, not one string")
        sql = (
            "SELECT outcome, COUNT(*) AS n FROM audit"
            " WHERE action = :action AND target = :target AND at >= :since GROUP BY outcome"
        )
        rows = await self._fetch(sql, action=action, target=target, since=since)
        return sum(int(r["n"]) for r in rows if outcomes is None or r["outcome"] in outcomes)


class OutboxRepo(_Sql):
    """Chat operations waiting for delivery, and where delivered messages landed."""

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
        item_id, _ = await self.outbox_add_claimed(
            message_key=message_key,
            op=op,
            surface=surface,
            channel=channel,
            parent_key=parent_key,
            payload=payload,
            now=now,
            lease_s=None,
        )
        return item_id

    async def outbox_add_claimed(
        self,
        *,
        message_key: str,
        op: str,
        surface: str,
        channel: str,
        parent_key: str | None,
        payload: Mapping[str, Any],
        now: datetime,
        lease_s: float | None,
    ) -> tuple[int, OutboxItem | None]:
        """``outbox_add``, and the item claimed for ``lease_s`` in the same transaction.

        Why: the worker of the replica that queued a message can send it without
        a claim of its own, which is one commit (an fsync on SQLite) less before
        the platform call. The claim is ``outbox_claim``'s, for this one item: it
        is taken only if no earlier undelivered item holds the item back (its
        message key, its parent) and no one else holds a lease on it; otherwise
        (or with ``lease_s`` None) the item is None and a worker's claim takes it
        when it is due, as for ``outbox_add``.
        """
        check_outbox_op(op, parent_key)
        body = encode_object(payload, what="outbox payload")
        columns = "message_key, op, surface, channel, parent_key, payload, created_at"
        insert = _insert("outbox", f"{columns}, next_attempt_at", " RETURNING id")
        token = uuid.uuid4().hex
        claimed: list[Row] = []
        async with self._transaction() as s:
            rows = []
            if op == "update":
                rows = await s.fetch(_COALESCE, message_key=message_key, payload=body, now=now)
            if not rows:
                rows = await s.fetch(
                    insert,
                    message_key=message_key,
                    op=op,
                    surface=surface,
                    channel=channel,
                    parent_key=parent_key,
                    payload=body,
                    created_at=now,
                    next_attempt_at=now,
                )
            item_id = int(rows[0]["id"])
            if lease_s is not None:
                until = _lease_until(now, lease_s)
                claimed = await s.fetch(_CLAIM_ADDED, id=item_id, now=now, until=until, token=token)
        return item_id, (_decode(OutboxItem, claimed[0]) if claimed else None)

    async def outbox_claim(
        self, *, now: datetime, limit: int = 20, lease_s: float = 30.0
    ) -> list[OutboxItem]:
        """Lease up to ``limit`` due items until ``now + lease_s``, oldest first.

        An item waits while an earlier undelivered item has its message key or,
        for one with a ``parent_key``, has the parent's key (a post goes before
        its updates and its thread replies). Two claimers never get one item.

        Each claim writes a fresh ``claim_token`` into its items (the returned
        copies carry it): the worker passes it back to ``outbox_done``,
        ``outbox_retry``, ``outbox_dead``, ``outbox_still_mine`` and
        ``chat_message_put``, which act only while it is still the item's
        token, so a worker whose lease ran out and whose item was claimed
        again can no longer mark it or record where it landed.
        """
        token = uuid.uuid4().hex
        return await self._claim(_CLAIM_OUTBOX, OutboxItem, now, limit, lease_s, token=token)

    async def _outbox_end(self, item_id: int, set: str, token: str | None, **params: Any) -> bool:
        sql = _OUTBOX_END.format(set=set, fence="" if token is None else _FENCE)
        return await self._execute(sql, id=item_id, token=token, **params) == 1

    async def outbox_done(self, item_id: int, *, token: str | None = None) -> bool:
        """Delivered; False (and nothing changed) for an item done, dead, or claimed since.

        ``token`` is the claim's (the worker always passes it); None, for a tool
        holding no claim, marks the item whoever holds it.
        """
        done = "state = 'done', finished_at = :now"
        return await self._outbox_end(item_id, done, token, now=datetime.now(UTC))

    async def outbox_retry(
        self, item_id: int, *, at: datetime, error: str, token: str | None = None
    ) -> bool:
        """A failed attempt: count it, release the lease, try again at ``at``.

        False (nothing changed) when the item is no longer pending or, with
        ``token``, was claimed by someone else since.
        """
        return await self._outbox_end(item_id, _RETRY, token, at=at, error=error)

    async def outbox_dead(self, item_id: int, *, error: str, token: str | None = None) -> bool:
        """Give up on an item (counted as a failed attempt); kept for inspection.

        False (nothing changed) as ``outbox_retry`` says.
        """
        dead = "state = 'dead', attempts = attempts + 1, last_error = :error, finished_at = :now"
        return await self._outbox_end(item_id, dead, token, error=error, now=datetime.now(UTC))

    async def outbox_still_mine(self, item: OutboxItem, *, now: datetime, lease_s: float) -> bool:
        """Is ``item``'s claim still its latest? If so its lease runs ``lease_s`` from ``now``.

        What a delivery asks right before it calls the platform: True means no
        other claim can take the item for ``lease_s`` (longer than a platform
        call may last); False means another worker has it, and this one must
        neither send it nor mark it.
        """
        if item.claim_token is None:
            return False
        until = to_utc(now) + timedelta(seconds=lease_s)
        sql = (
            f"UPDATE outbox SET leased_until = :until WHERE id = :id AND state = 'pending'{_FENCE}"
        )
        return await self._execute(sql, id=item.id, token=item.claim_token, until=until) == 1

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        """Undelivered items, and when the oldest of them was queued (None when none)."""
        sql = "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE state = 'pending'"
        rows = await self._fetch(sql)
        if not rows:
            return 0, None
        return int(rows[0]["n"]), decode_time(rows[0]["oldest"])

    async def outbox_pending(self) -> int:
        return await self._count("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")

    async def outbox_items(self, *, include_done: bool = False) -> list[OutboxItem]:
        """Items in id order: pending and dead ones, and done ones if asked."""
        where = "" if include_done else " WHERE state != 'done'"
        return await self._all(OutboxItem, f"SELECT {OUTBOX} FROM outbox{where} ORDER BY id")

    async def chat_message_put(self, msg: ChatMessage, *, claim: OutboxItem | None = None) -> bool:
        """Record where a message landed; False (nothing written) if ``claim`` is not current.

        A delivery passes the item it delivered as ``claim``: the record is then
        written only while that claim is still the item's latest (see
        ``outbox_claim``). Without ``claim`` (tests, tools) it is always written.
        """
        if claim is None:
            return (
                await self._execute(_insert("chat_messages", CHAT, _CHAT_UPSERT), **_params(msg))
                > 0
            )
        if claim.claim_token is None:
            return False
        params = _params(msg, item=claim.id, token=claim.claim_token)
        return await self._execute(_CHAT_FENCED, **params) > 0

    async def chat_message_get(self, key: str) -> ChatMessage | None:
        sql = f"SELECT {CHAT} FROM chat_messages WHERE key = :key"
        return await self._get(ChatMessage, sql, key=key)

    async def teams_reference_put(
        self, conversation_id: str, reference: Mapping[str, Any], *, now: datetime
    ) -> None:
        """Insert or replace the Bot Framework ConversationReference of a Teams conversation."""
        sql = (
            "INSERT INTO teams_conversations (conversation_id, reference, updated_at)"
            " VALUES (:id, :reference, :now) ON CONFLICT (conversation_id) DO UPDATE"
            " SET reference = excluded.reference, updated_at = excluded.updated_at"
        )
        body = encode_object(reference, what="conversation reference")
        await self._execute(sql, id=conversation_id, reference=body, now=now)

    async def teams_reference_get(self, conversation_id: str) -> dict[str, Any] | None:
        sql = "SELECT reference FROM teams_conversations WHERE conversation_id = :id"
        rows = await self._fetch(sql, id=conversation_id)
        return decode_object(rows[0]["reference"]) if rows else None


class ProposalRepo(_Sql):
    """Stored approval requests."""

    async def proposal_add(self, p: Proposal) -> None:
        """Store a new proposal; a duplicate id is refused (``StoreUnavailable``)."""
        check_status(p.status, PROPOSAL_STATUSES, what="proposal")
        await self._execute(_insert("proposals", PROPOSAL), **_params(p))

    async def proposal_get(self, id: str) -> Proposal | None:
        return await self._get(Proposal, f"SELECT {PROPOSAL} FROM proposals WHERE id = :id", id=id)

    async def _decide(
        self, id: str, status: str, by: str, now: datetime, extra: str = ""
    ) -> Proposal | None:
        """One guarded ``pending -> ...`` update: it happens once however many race for it."""
        sql = _PROPOSAL_DECIDE.format(extra=extra)
        return await self._get(Proposal, sql, id=id, status=status, by=by, now=now)

    async def proposal_claim(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        """``pending -> approved`` if pending and unexpired, exactly once; else None."""
        return await self._decide(id, "approved", by, now, " AND expires_at > :now")

    async def proposal_approve(self, id: str, *, by: str, now: datetime, needed: int) -> Approval:
        """Record ``by``'s approval; the one completing ``needed`` claims, in one transaction."""
        async with self._transaction() as s:
            # One click at a time, on any replica (SQLite: its one writer already).
            await s.lock(APPROVAL_LOCK_KEY)
            rows = await s.fetch(f"SELECT {PROPOSAL} FROM proposals WHERE id = :id", id=id)
            approvers = tuple(r["approver"] for r in await s.fetch(_APPROVERS, id=id))
            current = _decode(Proposal, rows[0]) if rows else None
            if current is None or current.status != "pending" or current.expires_at <= now:
                return Approval("not_pending", approvers, current)
            if by in approvers:
                return Approval("duplicate", approvers, current)
            add = _insert("proposal_approvals", "proposal_id, approver, at")
            await s.execute(add, proposal_id=id, approver=by, at=now)
            approvers += (by,)
            if len(approvers) < needed:
                return Approval("recorded", approvers, current)
            decide = _PROPOSAL_DECIDE.format(extra=" AND expires_at > :now")
            claimed = await s.fetch(decide, id=id, status="approved", by=by, now=now)
        if not claimed:
            return Approval("not_pending", approvers, current)
        return Approval("claimed", approvers, _decode(Proposal, claimed[0]))

    async def proposal_approvals(self, id: str) -> tuple[str, ...]:
        """Who approved the proposal so far, in click order."""
        return tuple(r["approver"] for r in await self._fetch(_APPROVERS, id=id))

    async def proposal_cancel(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        """``pending -> cancelled`` if pending; else None."""
        return await self._decide(id, "cancelled", by, now)

    async def proposal_expire_due(self, *, now: datetime) -> list[Proposal]:
        """Mark pending proposals with ``expires_at <= now`` expired; return them."""
        sql = (
            "UPDATE proposals SET status = 'expired', decided_at = :now"
            f" WHERE status = 'pending' AND expires_at <= :now RETURNING {PROPOSAL}"
        )
        expired = await self._all(Proposal, sql, now=now)
        return sorted(expired, key=lambda p: (p.expires_at, p.id))

    async def proposal_finish(self, id: str, *, status: str, result: str) -> None:
        """``approved -> done|failed`` with a result line; other states are left as is."""
        check_status(status, FINISHED_PROPOSAL_STATUSES, what="finished proposal")
        sql = "UPDATE proposals SET status = :status, result = :result"
        sql += " WHERE id = :id AND status = 'approved'"
        await self._execute(sql, id=id, status=status, result=result)


class IncidentRepo(_Sql):
    """The alert inbox, incidents and alert-storm digests."""

    async def alert_events_add(
        self, events: Sequence[NewAlertEvent], *, received_at: datetime
    ) -> list[int]:
        """Store a webhook's alerts in one transaction; their ids, in input order.

        Durable when it returns: the webhook may be answered 200 right after.
        """
        [ids] = await self.alert_events_add_groups([(events, received_at)])
        return ids

    async def alert_events_add_groups(
        self, groups: Sequence[tuple[Sequence[NewAlertEvent], datetime]]
    ) -> list[list[int]]:
        """Store several webhooks' alerts in one transaction (one commit, one fsync).

        Why: concurrent webhooks each waiting for their own commit spend most of
        their time in fsync; committed together (``bot.ingest.AlertIngest``) they
        share it. All or nothing: a failure stores none of the groups. Each
        group's ids, in input order.
        """
        rows = [
            [_params(e, received_at=at) for e in check_alert_events(events)]
            for events, at in groups
        ]  # every group checked before anything is written
        flat = [params for group in rows for params in group]
        if not flat:
            return [[] for _ in rows]
        ids: list[int] = []
        async with self._transaction() as s:
            await s.lock(ALERT_INBOX_LOCK_KEY)
            for start in range(0, len(flat), _INSERT_ROWS):
                ids += await self._insert_alerts(s, flat[start : start + _INSERT_ROWS])
        out, at = [], 0
        for group in rows:
            out.append(ids[at : at + len(group)])
            at += len(group)
        return out

    @staticmethod
    async def _insert_alerts(s: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """One multi-row INSERT (one round trip); the new ids in the order of ``rows``.

        Both engines number the rows of one ``VALUES`` list in its order (SQLite's
        next rowid, PostgreSQL's ``nextval`` per row), and no other insert runs
        meanwhile (the write lock; ``ALERT_INBOX_LOCK_KEY``), while the order in
        which ``RETURNING`` lists them is not promised: so the ids are sorted.
        """
        columns = [c.strip() for c in ALERT_NEW.split(",")]
        values: list[str] = []
        params: dict[str, Any] = {}
        for n, row in enumerate(rows):
            values.append("(" + ", ".join(f":{c}{n}" for c in columns) + ")")
            params |= {f"{c}{n}": row[c] for c in columns}
        sql = f"INSERT INTO alert_events ({ALERT_NEW}) VALUES {', '.join(values)} RETURNING id"
        return sorted(int(r["id"]) for r in await s.fetch(sql, **params))

    async def alert_events_claim(
        self, *, now: datetime, limit: int = 100, lease_s: float = 30.0
    ) -> list[AlertEvent]:
        """Lease up to ``limit`` unprocessed, due events until ``now + lease_s``, oldest first.

        An event is returned only with every older unprocessed event of its
        fingerprint in the same batch (a firing goes before its resolved). Two
        claimers never get one event.
        """
        return await self._claim(_CLAIM_ALERTS, AlertEvent, now, limit, lease_s)

    async def alert_event_done(self, id: int) -> None:
        """Processed; a no-op for an event already done."""
        done = _ALERT_END.format(set="state = 'done', done_at = :now")
        await self._execute(done, id=id, now=datetime.now(UTC))

    async def alert_events_done(self, ids: Collection[int]) -> None:
        """Several processed at once, in one statement (one commit); done ones are left."""
        if not ids:
            return
        names = {f"id{n}": int(id) for n, id in enumerate(ids)}
        done = (
            "UPDATE alert_events SET state = 'done', done_at = :now, leased_until = NULL"
            f" WHERE id IN ({', '.join(':' + name for name in names)}) AND state = 'pending'"
        )
        await self._execute(done, now=datetime.now(UTC), **names)

    async def alert_event_retry(self, id: int, *, at: datetime, error: str) -> None:
        """A failed attempt: count it, release the lease, not claimable before ``at``.

        Later events of its fingerprint wait for it.
        """
        await self._execute(_ALERT_END.format(set=_RETRY), id=id, at=at, error=error)

    async def alert_events_pending(self) -> int:
        return await self._count("SELECT COUNT(*) AS n FROM alert_events WHERE state = 'pending'")

    async def _incidents(self, where: str, **params: Any) -> list[Incident]:
        sql = f"SELECT {INCIDENT} FROM incidents WHERE {where} ORDER BY opened_at, seq"
        return await self._all(Incident, sql, **params)

    async def incident_open(self, incident: Incident) -> Incident | None:
        """Store a new incident; None (and nothing stored) if its fingerprint has one open.

        Atomic across replicas. A duplicate id is refused (``StoreUnavailable``).
        """
        check_incident(incident)
        sql = _insert("incidents", INCIDENT, f"{_OPEN_INCIDENT} DO NOTHING RETURNING {INCIDENT}")
        return await self._get(Incident, sql, **_params(incident))

    async def incident_get(self, id: str) -> Incident | None:
        return await self._get(Incident, f"SELECT {INCIDENT} FROM incidents WHERE id = :id", id=id)

    async def incident_open_for(self, fingerprint: str) -> Incident | None:
        sql = f"SELECT {INCIDENT} FROM incidents WHERE fingerprint = :fp AND status = 'open'"
        return await self._get(Incident, sql, fp=fingerprint)

    async def incident_set_thread(self, id: str, *, root_key: str, conversation: str) -> None:
        sql = "UPDATE incidents SET root_key = :root_key, conversation = :conversation"
        await self._execute(f"{sql} WHERE id = :id", **_thread(id, root_key, conversation))

    async def _change(self, id: str, set: str, extra: str = "", **params: Any) -> Incident | None:
        """One guarded UPDATE of an open incident: it happens once however many race for it."""
        sql = _INCIDENT_CHANGE.format(set=set, extra=extra) + INCIDENT
        return await self._get(Incident, sql, id=id, **params)

    async def incident_touch(self, id: str, *, now: datetime, times: int = 1) -> Incident | None:
        """``times`` repeat notifications: ``repeats + times``, ``last_seen_at = now``.

        None unless open. ``times`` lets the inbox fold a batch's repeats into one write.
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times!r}")
        touch = "repeats = repeats + :times, last_seen_at = :now"
        return await self._change(id, touch, now=now, times=times)

    async def incident_ack(self, id: str, *, by: str, now: datetime) -> Incident | None:
        ack = "acknowledged_by = :by, acknowledged_at = :now"
        return await self._change(id, ack, " AND acknowledged_at IS NULL", by=by, now=now)

    async def incident_escalate(self, id: str, *, now: datetime) -> Incident | None:
        unacked = " AND acknowledged_at IS NULL AND escalated_at IS NULL"
        return await self._change(id, "escalated_at = :now", unacked, now=now)

    async def incident_resolve(self, id: str, *, now: datetime) -> Incident | None:
        return await self._change(id, "status = 'resolved', resolved_at = :now", now=now)

    async def incident_set_record(self, id: str, *, path: str, text: str | None = None) -> None:
        """Record where the incident's markdown record was written, and keep its text."""
        sql = "UPDATE incidents SET record_path = :path, record_text = COALESCE(:text, record_text)"
        await self._execute(f"{sql} WHERE id = :id", id=id, path=path, text=text)

    async def incident_record_text(self, id: str) -> str | None:
        rows = await self._fetch("SELECT record_text FROM incidents WHERE id = :id", id=id)
        return None if not rows or rows[0]["record_text"] is None else str(rows[0]["record_text"])

    async def incidents_open(self) -> list[Incident]:
        return await self._incidents("status = 'open'")

    async def incidents_between(self, start: datetime, end: datetime) -> list[Incident]:
        where = "opened_at >= :start AND opened_at < :end"
        return await self._incidents(where, start=start, end=end)

    async def incidents_opened_since(self, since: datetime) -> int:
        sql = "SELECT COUNT(*) AS n FROM incidents WHERE opened_at >= :since"
        return await self._count(sql, since=since)

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
        # Under the lock (SQLite: the write lock) the look-up and the insert are one
        # step across replicas; the next holder's SELECT sees the committed row.
        current = (
            f"SELECT {DIGEST} FROM digests WHERE started_at > :since"
            " ORDER BY started_at DESC, seq DESC LIMIT 1"
        )
        insert = _insert("digests", "id, started_at", f" RETURNING {DIGEST}")
        async with self._transaction() as s:
            await s.lock(DIGEST_LOCK_KEY)
            rows = await s.fetch(current, since=to_utc(now) - window)
            created = not rows
            if created:
                rows = await s.fetch(insert, id=new_id, started_at=now)
            digest = _decode(Digest, rows[0])
            sql = "UPDATE incidents SET digest_id = :digest WHERE id = :id"
            await s.execute(sql, digest=digest.id, id=incident_id)
        return digest, created

    async def digest_set_thread(
        self, id: str, *, root_key: str, conversation: str
    ) -> Digest | None:
        """Record where the digest message is; the digest, or None for an unknown id."""
        sql = "UPDATE digests SET root_key = :root_key, conversation = :conversation"
        sql += f" WHERE id = :id RETURNING {DIGEST}"
        return await self._get(Digest, sql, **_thread(id, root_key, conversation))

    async def digest_get(self, id: str) -> Digest | None:
        return await self._get(Digest, f"SELECT {DIGEST} FROM digests WHERE id = :id", id=id)

    async def digest_incidents(self, id: str) -> list[Incident]:
        """The incidents in the digest, oldest first: what its message lists."""
        return await self._incidents("digest_id = :id", id=id)

    async def digests_unnamed(self, *, since: datetime) -> list[Digest]:
        """Posted digests started after ``since`` with incidents not yet named in their thread."""
        unnamed = "SELECT 1 FROM incidents i WHERE i.digest_id = d.id AND i.root_key IS NULL"
        sql = f"SELECT {DIGEST} FROM digests d WHERE started_at > :since AND root_key IS NOT NULL"
        return await self._all(
            Digest, f"{sql} AND EXISTS ({unnamed}) ORDER BY started_at, seq", since=since
        )

    async def digest_name(self, digest: Digest) -> list[Incident]:
        """Claim the posted digest's unnamed incidents: each is returned to one caller, once.

        They take the digest's thread; the caller names them there.
        """
        assert digest.root_key is not None and digest.conversation is not None
        sql = "UPDATE incidents SET root_key = :root_key, conversation = :conversation"
        sql += f" WHERE digest_id = :id AND root_key IS NULL RETURNING {INCIDENT}"
        named = await self._all(
            Incident, sql, **_thread(digest.id, digest.root_key, digest.conversation)
        )
        return sorted(named, key=lambda i: i.opened_at)

    async def incidents_resolved_for(self, fingerprint: str, *, since: datetime) -> list[Incident]:
        """The fingerprint's incidents resolved at or after ``since`` (an event's re-handling)."""
        where = "fingerprint = :fp AND status = 'resolved' AND resolved_at >= :since"
        return await self._incidents(where, fp=fingerprint, since=since)


class JobRepo(_Sql):
    """Scheduled job slots, and leadership among replicas (which each backend holds its way)."""

    async def job_claim(
        self,
        job: str,
        *,
        slot: datetime,
        runner: str,
        now: datetime,
        lease_s: float = JOB_LEASE_S,
        exclusive: bool = False,
    ) -> bool:
        """Record ``(job, slot)`` as started by ``runner``; True for exactly one caller ever.

        Atomic across replicas: of any number of concurrent claims of one slot,
        one returns True and the others False. A slot is never claimed again,
        even if its runner died before finishing it. The runner holds the slot
        for ``lease_s`` and renews it with ``job_renew`` while it runs; once the
        lease has passed, ``job_lost`` reports the slot.

        ``exclusive``: also False while another slot of ``job`` is running under
        a lease not yet passed, on any replica (one restore at a time). A slot
        whose runner stopped renewing does not hold the job.
        """
        # The primary key decides: of concurrent claims of one slot, one inserts a row.
        if not job or not runner:  # a slot nobody can attribute is a bug
            raise ValueError(f"a job run needs a {'runner' if job else 'job name'}")
        claim = " ON CONFLICT (job, slot) DO NOTHING"
        sql = _insert("job_runs", "job, slot, started_at, runner, lease_until", claim)
        until = to_utc(now) + timedelta(seconds=lease_s)
        params = {"job": job, "slot": slot, "started_at": now, "runner": runner}
        if not exclusive:
            return await self._execute(sql, **params, lease_until=until) == 1
        busy = (
            "SELECT 1 FROM job_runs WHERE job = :job AND status = 'running'"
            " AND (lease_until IS NULL OR lease_until > :now)"
        )
        async with self._transaction() as s:
            # One exclusive claim at a time, on any replica (SQLite: its one writer already).
            await s.lock(JOB_LOCK_KEY)
            if await s.fetch(busy, job=job, now=now):
                return False
            return await s.execute(sql, **params, lease_until=until) == 1

    async def job_renew(
        self, job: str, *, slot: datetime, runner: str, now: datetime, lease_s: float
    ) -> bool:
        """The runner's heartbeat: its running slot is held ``lease_s`` from ``now``.

        False when the slot is no longer running under ``runner`` (finished, or
        reported lost by another replica after this one stalled).
        """
        sql = (
            "UPDATE job_runs SET lease_until = :until WHERE job = :job AND slot = :slot"
            " AND runner = :runner AND status = 'running'"
        )
        until = to_utc(now) + timedelta(seconds=lease_s)
        return await self._execute(sql, job=job, slot=slot, runner=runner, until=until) == 1

    async def job_lost(self, *, now: datetime) -> list[JobRun]:
        """Slots left running past their lease (their replica stopped), marked failed.

        Each such slot is returned once, to one caller, however many replicas
        look: the guarded ``running -> failed`` update is the report's claim.
        The slot is not run again (``job_claim`` never claims it twice).
        """
        sql = (
            "UPDATE job_runs SET status = 'failed', finished_at = :now"
            " WHERE status = 'running' AND lease_until IS NOT NULL AND lease_until <= :now"
            f" RETURNING {JOB}"
        )
        lost = await self._all(JobRun, sql, now=now)
        return sorted(lost, key=lambda run: (run.slot, run.job))

    async def job_last_success(self) -> dict[str, tuple[datetime, datetime]]:
        """Per job, the newest slot that finished (ok, warn or crit) and when a run last did."""
        sql = (
            "SELECT job, MAX(slot) AS slot, MAX(finished_at) AS at FROM job_runs"
            " WHERE status IN ('ok', 'warn', 'crit') AND finished_at IS NOT NULL GROUP BY job"
        )
        out: dict[str, tuple[datetime, datetime]] = {}
        for row in await self._fetch(sql):
            slot, at = decode_time(row["slot"]), decode_time(row["at"])
            if slot is not None and at is not None:
                out[str(row["job"])] = (slot, at)
        return out

    async def job_finish(self, job: str, *, slot: datetime, status: str, now: datetime) -> None:
        """``running -> ok|warn|crit|failed``; a finished or never-claimed slot is left as is."""
        check_status(status, JOB_FINISHED_STATUSES, what="finished job")
        sql = (
            "UPDATE job_runs SET status = :status, finished_at = :now"
            " WHERE job = :job AND slot = :slot AND status = 'running'"
        )
        await self._execute(sql, job=job, slot=slot, status=status, now=now)

    async def job_last(self, job: str) -> JobRun | None:
        runs = await self.job_runs(job, limit=1)
        return runs[0] if runs else None

    async def job_runs(self, job: str, *, limit: int = 10) -> list[JobRun]:
        """This job's claimed slots, newest slot first."""
        sql = f"SELECT {JOB} FROM job_runs WHERE job = :job ORDER BY slot DESC LIMIT :n"
        return await self._all(JobRun, sql, job=job, n=max(limit, 0))

    @abstractmethod
    async def leader_acquire(self, name: str) -> bool:
        """Try, without waiting, to become the leader for ``name``.

        True if this store now holds it (or already did). Leadership lasts until
        ``leader_release``, ``close``, or the process dying: it is tied to a
        resource the operating system or the database frees then (a PostgreSQL
        session, a locked file), never to a row that a dead replica leaves behind.
        """

    @abstractmethod
    async def leader_check(self, name: str) -> bool:
        """Does this store still hold leadership for ``name``? False once it was lost."""

    @abstractmethod
    async def leader_release(self, name: str) -> None:
        """Give up leadership for ``name``; a no-op if not held."""


class ReportRepo(_Sql):
    """What the monthly reports read and the daily jobs keep: capacity, keys, changes, retention."""

    async def capacity_sample_put(self, at: datetime, values: Mapping[str, float]) -> None:
        """One reading per figure at ``at``; the same (figure, at) again replaces it."""
        sql = _insert("capacity_samples", "at, metric, value", _SAMPLE_UPSERT)
        async with self._transaction() as s:
            for metric, value in values.items():
                await s.execute(sql, at=at, metric=metric, value=float(value))

    async def capacity_samples(self, since: datetime) -> list[CapacitySample]:
        """Readings at or after ``since``, oldest first."""
        sql = "SELECT at, metric, value FROM capacity_samples WHERE at >= :since"
        return await self._all(CapacitySample, f"{sql} ORDER BY at, metric", since=since)

    async def key_rotation_add(self, key: str, *, at: datetime, by: str) -> None:
        sql = _insert("key_rotations", "key, rotated_at, rotated_by")
        await self._execute(sql, key=key, rotated_at=at, rotated_by=by)

    async def key_rotations_last(self) -> list[KeyRotation]:
        """Each key's newest rotation, by key name."""
        return await self._all(KeyRotation, _LAST_ROTATIONS)

    async def prune(self, cutoffs: PruneCutoffs) -> dict[str, int]:
        """Delete what is older than its cutoff and not pending; rows deleted per kind."""
        async with self._transaction() as s:
            audit = await s.execute("DELETE FROM audit WHERE at < :at", at=cutoffs.audit)
            await s.execute(_PRUNE_RUNS.format(what="steps WHERE run_id"), at=cutoffs.runs)
            runs = await s.execute(_PRUNE_RUNS.format(what="runs WHERE id"), at=cutoffs.runs)
            outbox = await s.execute(
                "DELETE FROM outbox WHERE state IN ('done', 'dead') AND created_at < :at",
                at=cutoffs.outbox,
            )
            alerts = await s.execute(
                "DELETE FROM alert_events WHERE state = 'done' AND received_at < :at",
                at=cutoffs.alerts,
            )
        return {"audit": audit, "runs": runs, "outbox": outbox, "alerts": alerts}

    async def change_start(self, change: Change) -> Change:
        """Open ``change`` unless one is open already; returns the open change either way."""
        params = _params(change) | {"critical": int(change.critical), "status": "open"}
        async with self._transaction() as s:
            await s.execute(_insert("changes", CHANGE, " ON CONFLICT DO NOTHING"), **params)
            rows = await s.fetch(f"SELECT {CHANGE} FROM changes WHERE status = 'open'")
        return _change(rows[0])  # one is open: ours, or the one that was

    async def change_current(self) -> Change | None:
        rows = await self._fetch(f"SELECT {CHANGE} FROM changes WHERE status = 'open'")
        return _change(rows[0]) if rows else None

    async def change_update(
        self,
        id: str,
        *,
        conversation: str | None = None,
        silence_id: str | None = None,
        before: str | None = None,
    ) -> None:
        """Fill in the thread, the silence or the state before (None leaves a field)."""
        sql = (
            "UPDATE changes SET conversation = coalesce(:conversation, conversation),"
            " silence_id = coalesce(:silence_id, silence_id), before = coalesce(:before, before)"
            " WHERE id = :id"
        )
        await self._execute(
            sql, id=id, conversation=conversation, silence_id=silence_id, before=before
        )

    async def change_end(self, id: str, *, status: str, at: datetime) -> Change | None:
        """``open -> done|aborted`` once; None when it was not open (ended already)."""
        check_status(status, frozenset({"done", "aborted"}), what="change")
        sql = (
            "UPDATE changes SET status = :status, ended_at = :at"
            f" WHERE id = :id AND status = 'open' RETURNING {CHANGE}"
        )
        rows = await self._fetch(sql, id=id, status=status, at=at)
        return _change(rows[0]) if rows else None


class Store(RunRepo, OutboxRepo, ProposalRepo, IncidentRepo, JobRepo, ReportRepo):
    """The bot's own state. Every method raises ``StoreUnavailable`` on backend failure.

    Why one class made of repositories: each kind of data reads as one unit,
    while callers keep passing one store around. A backend subclasses it with
    its connections, ping and leadership.
    """

    DIALECT: str  # a key of ``migrations.DIALECT_WORDS``
    SCHEMA_TABLE: str  # CREATE TABLE IF NOT EXISTS schema_migrations, in the dialect

    def __init__(self, migrations: Sequence[Migration]) -> None:
        validate_migrations(migrations)
        self._migrations = tuple(migrations)

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""

    @abstractmethod
    async def ping(self) -> None:
        """Round-trip to the backend; used by ``GET /readyz``."""

    async def _migrate(self) -> None:
        if await self._up_to_date():
            return
        for m in self._migrations:
            async with self._transaction() as s:
                # Lock first: even CREATE TABLE IF NOT EXISTS races without it.
                await s.lock(MIGRATION_LOCK_KEY)
                await s.execute(self.SCHEMA_TABLE)
                if await s.fetch("SELECT 1 FROM schema_migrations WHERE version = :v", v=m.version):
                    continue
                for statement in m.statements(self.DIALECT):
                    await s.execute(statement)
                done = _insert("schema_migrations", "version, name, applied_at")
                await s.execute(done, version=m.version, name=m.name, applied_at=datetime.now(UTC))

    async def _up_to_date(self) -> bool:
        """Whether every migration is applied already: one read, no write lock.

        The usual start (every ``sms-bot run`` from cron, each replica) finds
        the schema current; it then need not take the migration lock in one
        write transaction per migration, nor wait for a writer holding the file.
        """
        try:
            rows = await self._fetch("SELECT version FROM schema_migrations")
        except StoreUnavailable:
            return False  # no schema yet (or busy): the migrations' own path decides
        return {m.version for m in self._migrations} <= {row["version"] for row in rows}

    async def _ping_tables(self, where: str) -> None:
        rows = await self._fetch(PING)
        if not rows or rows[0]["version"] is None:
            raise StoreUnavailable(
                f"{where}: schema_migrations is empty; the bot's tables were emptied while"
                " it ran: restart the bot"
            )

    async def schema_version(self) -> int:
        """Highest applied migration version, 0 for an empty database."""
        return await self._count("SELECT COALESCE(MAX(version), 0) AS n FROM schema_migrations")
