"""PostgreSQL store: for several replicas sharing one state.

Why an advisory lock around migrations: replicas started together would
otherwise race to create the same tables. ``pg_advisory_xact_lock`` is taken
first in each migration's transaction, so the second replica waits, then sees
the version recorded and skips it. Every query carries a timeout so a stuck
database turns ``/readyz`` red instead of hanging a handler.

Why a second advisory lock around ``alert_events_add``: ids come from a
sequence, and without it a webhook transaction holding id 10 could commit
after another holding id 11, letting a processor see a fingerprint's
``resolved`` before its ``firing``. Under the lock ids are handed out and
committed in one order, so a claimer that sees an id sees every older one.

Why leadership is a session advisory lock on a dedicated connection: the
server releases it the moment that session ends, whether the leader called
``leader_release``, crashed, or lost its network (detected by the TCP
keepalives set on that connection). A pooled connection would hand the lock
to whichever coroutine borrows it next and keep it after the pool recycles it,
so the leader's connection never enters the pool. (Through PgBouncer in
transaction mode session locks do not work: point the bot at PostgreSQL.)
Leadership only decides who schedules; ``job_claim`` is what keeps a slot
from running twice while a lost leader has not noticed yet.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from bot.store.base import (
    FINISHED_PROPOSAL_STATUSES,
    JOB_FINISHED_STATUSES,
    PROPOSAL_STATUSES,
    RUN_STATUSES,
    STEP_STATUSES,
    AlertEvent,
    Approval,
    AuditEvent,
    ChatMessage,
    Digest,
    Incident,
    JobRun,
    NewAlertEvent,
    OutboxItem,
    Proposal,
    RunRecord,
    StepRecord,
    StoreUnavailable,
    UnknownRun,
    check_alert_event,
    check_incident,
    check_job,
    check_leader_name,
    check_lease,
    check_outbox_op,
    check_outcomes,
    check_status,
    decode_detail,
    decode_object,
    encode_detail,
    encode_labels,
    encode_object,
    to_utc,
)
from bot.store.migrations import MIGRATIONS, Migration, validate_migrations

__all__ = [
    "ALERT_INBOX_LOCK_KEY",
    "LEADER_CHECK_TIMEOUT_S",
    "MIGRATION_LOCK_KEY",
    "PostgresStore",
    "leader_lock_key",
    "redact_dsn",
]

# Arbitrary constant shared by every replica: "sms-bot migrations" as a bigint.
MIGRATION_LOCK_KEY = 0x736D732D626F74
# Likewise for inserts into the alert inbox (see the module docstring): "sms-bot-alerts".
ALERT_INBOX_LOCK_KEY = 0x736D732D616C7274
# Serialises digest_join: "is there a current digest? if not, create one" is a
# read then a write, and without the lock two replicas could both create one.
DIGEST_LOCK_KEY = 0x736D732D64696773
# A leader that cannot answer a round-trip this quickly is treated as lost.
LEADER_CHECK_TIMEOUT_S = 2.0
# On the leader's own connection: the server notices a vanished leader host in
# about idle + interval * count = 25 s and frees the lock, instead of after the
# kernel default of two hours. Ignored (harmlessly) over a Unix socket.
_LEADER_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

# Literal SQL, column names matching the row mappers below.
_INSERT_RUN = (
    "INSERT INTO runs (id, command, user_id, source, conversation, started_at, status,"
    " finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_SELECT_RUN = (
    "SELECT id, command, user_id, source, conversation, started_at, status, finished_at"
    " FROM runs WHERE id = $1"
)
_RECENT_RUNS = (
    "SELECT id, command, user_id, source, conversation, started_at, status, finished_at"
    " FROM runs ORDER BY started_at DESC, seq DESC LIMIT $1"
)
_UPSERT_STEP = (
    "INSERT INTO steps (run_id, idx, name, status, started_at, duration_s, summary, error)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (run_id, idx) DO UPDATE SET name = excluded.name,"
    " status = excluded.status, started_at = excluded.started_at,"
    " duration_s = excluded.duration_s, summary = excluded.summary, error = excluded.error"
)
_LIST_STEPS = (
    "SELECT run_id, idx, name, status, started_at, duration_s, summary, error"
    " FROM steps WHERE run_id = $1 ORDER BY idx"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, source, action, target, outcome, conversation, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
)
_RECENT_AUDIT = (
    "SELECT at, actor, source, action, target, outcome, conversation, detail::text AS detail"
    " FROM audit ORDER BY at DESC, seq DESC LIMIT $1"
)
_COUNT_AUDIT = (
    "SELECT COUNT(*) FROM audit WHERE action = $1 AND target = $2 AND at >= $3"
    " AND ($4::text[] IS NULL OR outcome = ANY($4::text[]))"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (message_key, op, surface, channel, parent_key, payload, created_at,"
    " next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $7) RETURNING id"
)
# Coalesce into the newest undelivered item of the message if it is an unleased
# update. The lease test sits in the outer WHERE, which PostgreSQL re-checks on
# the row's latest version after a concurrent claim commits: a payload is never
# replaced under a worker that is already sending the old one.
_COALESCE_UPDATE = (
    "UPDATE outbox SET payload = $2::jsonb"
    " WHERE id = (SELECT max(id) FROM outbox WHERE message_key = $1 AND state = 'pending')"
    " AND op = 'update' AND state = 'pending'"
    " AND (leased_until IS NULL OR leased_until <= $3) RETURNING id"
)
# Due, unleased, and no earlier undelivered item for its message or its thread's
# root; SKIP LOCKED lets concurrent claimers (other replicas) pass each other's rows.
_CLAIM_OUTBOX = (
    "UPDATE outbox SET leased_until = $3 WHERE id IN ("
    " SELECT o.id FROM outbox o"
    " WHERE o.state = 'pending' AND o.next_attempt_at <= $1"
    " AND (o.leased_until IS NULL OR o.leased_until <= $1)"
    " AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.state = 'pending' AND b.id < o.id"
    " AND (b.message_key = o.message_key OR b.message_key = o.parent_key))"
    " ORDER BY o.id LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, message_key, op, surface, channel, parent_key, payload::text AS payload,"
    " attempts, created_at, next_attempt_at, last_error"
)
_OUTBOX_ITEMS = (
    "SELECT id, message_key, op, surface, channel, parent_key, payload::text AS payload,"
    " attempts, created_at, next_attempt_at, last_error FROM outbox"
    " WHERE $1 OR state != 'done' ORDER BY id"
)
_OUTBOX_DONE = (
    "UPDATE outbox SET state = 'done', leased_until = NULL, finished_at = now()"
    " WHERE id = $1 AND state = 'pending'"
)
_OUTBOX_RETRY = (
    "UPDATE outbox SET attempts = attempts + 1, leased_until = NULL,"
    " next_attempt_at = $2, last_error = $3 WHERE id = $1 AND state = 'pending'"
)
_OUTBOX_DEAD = (
    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, leased_until = NULL,"
    " last_error = $2, finished_at = now() WHERE id = $1 AND state = 'pending'"
)
_UPSERT_CHAT_MESSAGE = (
    "INSERT INTO chat_messages (key, surface, channel, ts, thread_ts) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (key) DO UPDATE SET surface = excluded.surface,"
    " channel = excluded.channel, ts = excluded.ts, thread_ts = excluded.thread_ts"
)
_INSERT_PROPOSAL = (
    "INSERT INTO proposals (id, action, args, summary, run_id, conversation, message_key,"
    " requested_by, approver_role, created_at, expires_at, status, decided_by, decided_at,"
    " result) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
)
_SELECT_PROPOSAL = (
    "SELECT id, action, args::text AS args, summary, run_id, conversation, message_key,"
    " requested_by, approver_role, created_at, expires_at, status, decided_by, decided_at,"
    " result FROM proposals WHERE id = $1"
)
# One statement each: the row lock plus the re-checked WHERE make the
# pending -> approved transition happen once however many replicas race for it.
_CLAIM_PROPOSAL = (
    "UPDATE proposals SET status = 'approved', decided_by = $2, decided_at = $3"
    " WHERE id = $1 AND status = 'pending' AND expires_at > $3"
    " RETURNING id, action, args::text AS args, summary, run_id, conversation, message_key,"
    " requested_by, approver_role, created_at, expires_at, status, decided_by, decided_at,"
    " result"
)
# migration 8 (recovery)
_APPROVERS = "SELECT approver FROM proposal_approvals WHERE proposal_id = $1 ORDER BY seq"
_ADD_APPROVAL = "INSERT INTO proposal_approvals (proposal_id, approver, at) VALUES ($1, $2, $3)"
_CANCEL_PROPOSAL = (
    "UPDATE proposals SET status = 'cancelled', decided_by = $2, decided_at = $3"
    " WHERE id = $1 AND status = 'pending'"
    " RETURNING id, action, args::text AS args, summary, run_id, conversation, message_key,"
    " requested_by, approver_role, created_at, expires_at, status, decided_by, decided_at,"
    " result"
)
_EXPIRE_PROPOSALS = (
    "UPDATE proposals SET status = 'expired', decided_at = $1"
    " WHERE status = 'pending' AND expires_at <= $1"
    " RETURNING id, action, args::text AS args, summary, run_id, conversation, message_key,"
    " requested_by, approver_role, created_at, expires_at, status, decided_by, decided_at,"
    " result"
)
_FINISH_PROPOSAL = (
    "UPDATE proposals SET status = $2, result = $3 WHERE id = $1 AND status = 'approved'"
)
_AUDIT_BETWEEN = (
    "SELECT at, actor, source, action, target, outcome, conversation, detail::text AS detail"
    " FROM audit WHERE at >= $1 AND ($2::timestamptz IS NULL OR at < $2)"
    " ORDER BY at, seq LIMIT $3"
)
_RUNS_FOR_CONVERSATION = (
    "SELECT id, command, user_id, source, conversation, started_at, status, finished_at"
    " FROM runs WHERE conversation = $1 ORDER BY started_at, seq"
)
# One statement for the whole batch: arrays in, one row per element, in order.
_INSERT_ALERT_EVENTS = (
    "INSERT INTO alert_events (fingerprint, status, labels, annotations, starts_at, ends_at,"
    " generator_url, received_at)"
    " SELECT f, s, l::jsonb, a::jsonb, sa, ea, g, $8 FROM unnest($1::text[], $2::text[],"
    " $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[])"
    " WITH ORDINALITY AS t (f, s, l, a, sa, ea, g, n) ORDER BY n RETURNING id"
)
# cand: the oldest claimable events this claimer could lock (SKIP LOCKED passes
# over rows another replica is claiming right now). An event is leased only if
# every older pending event of its fingerprint is in cand too: one locked by
# another claimer, leased, or deferred by a retry is not, and holds it back.
_CLAIM_ALERT_EVENTS = (
    "WITH cand AS MATERIALIZED ("
    " SELECT id, fingerprint FROM alert_events"
    " WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)"
    " AND (leased_until IS NULL OR leased_until <= $1)"
    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE alert_events e SET leased_until = $3 FROM cand c"
    " WHERE e.id = c.id AND NOT EXISTS (SELECT 1 FROM alert_events b"
    " WHERE b.fingerprint = c.fingerprint AND b.state = 'pending' AND b.id < c.id"
    " AND b.id NOT IN (SELECT id FROM cand))"
    " RETURNING e.id, e.fingerprint, e.status, e.labels::text AS labels,"
    " e.annotations::text AS annotations, e.starts_at, e.ends_at, e.generator_url,"
    " e.received_at, e.attempts, e.last_error"
)
_ALERT_EVENT_DONE = (
    "UPDATE alert_events SET state = 'done', leased_until = NULL, done_at = now()"
    " WHERE id = $1 AND state = 'pending'"
)
_ALERT_EVENT_RETRY = (
    "UPDATE alert_events SET attempts = attempts + 1, leased_until = NULL,"
    " next_attempt_at = $2, last_error = $3 WHERE id = $1 AND state = 'pending'"
)
# The conflict target names the partial unique index: a second open incident for
# a fingerprint is skipped (a racing replica waits for the first to commit, then
# skips), while a duplicate id still fails loudly.
_OPEN_INCIDENT = (
    "INSERT INTO incidents (id, fingerprint, title, priority, procedure, labels, annotations,"
    " opened_at, opened_by, status, last_seen_at, repeats, root_key, conversation,"
    " acknowledged_by, acknowledged_at, escalated_at, resolved_at, record_path)"
    " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13, $14,"
    " $15, $16, $17, $18, $19)"
    " ON CONFLICT (fingerprint) WHERE status = 'open' AND fingerprint IS NOT NULL DO NOTHING"
    " RETURNING id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path"
)
_SELECT_INCIDENT = (
    "SELECT id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path FROM incidents WHERE id = $1"
)
_OPEN_INCIDENT_FOR = (
    "SELECT id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path FROM incidents WHERE fingerprint = $1 AND status = 'open'"
)
_OPEN_INCIDENTS = (
    "SELECT id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path FROM incidents WHERE status = 'open' ORDER BY opened_at, seq"
)
_INCIDENTS_BETWEEN = (
    "SELECT id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path FROM incidents WHERE opened_at >= $1 AND opened_at < $2"
    " ORDER BY opened_at, seq"
)
_DIGEST_INCIDENTS = (
    "SELECT id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path FROM incidents WHERE digest_id = $1 ORDER BY opened_at, seq"
)
_SELECT_DIGEST = "SELECT id, started_at, root_key, conversation FROM digests WHERE id = $1"
_CURRENT_DIGEST = (
    "SELECT id, started_at, root_key, conversation FROM digests"
    " WHERE started_at > $1 ORDER BY started_at DESC, seq DESC LIMIT 1"
)
# One guarded UPDATE each: the row lock plus the re-checked WHERE make every
# transition happen once however many replicas race for it.
_TOUCH_INCIDENT = (
    "UPDATE incidents SET repeats = repeats + 1, last_seen_at = $2"
    " WHERE id = $1 AND status = 'open'"
    " RETURNING id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path"
)
_ACK_INCIDENT = (
    "UPDATE incidents SET acknowledged_by = $2, acknowledged_at = $3"
    " WHERE id = $1 AND status = 'open' AND acknowledged_at IS NULL"
    " RETURNING id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path"
)
_ESCALATE_INCIDENT = (
    "UPDATE incidents SET escalated_at = $2 WHERE id = $1 AND status = 'open'"
    " AND acknowledged_at IS NULL AND escalated_at IS NULL"
    " RETURNING id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path"
)
_RESOLVE_INCIDENT = (
    "UPDATE incidents SET status = 'resolved', resolved_at = $2 WHERE id = $1 AND status = 'open'"
    " RETURNING id, fingerprint, title, priority, procedure, labels::text AS labels,"
    " annotations::text AS annotations, opened_at, opened_by, status, last_seen_at, repeats,"
    " root_key, conversation, acknowledged_by, acknowledged_at, escalated_at, resolved_at,"
    " record_path"
)

# The primary key decides: of concurrent claims of one slot, one inserts a row.
_CLAIM_JOB = (
    "INSERT INTO job_runs (job, slot, started_at, runner, status)"
    " VALUES ($1, $2, $3, $4, 'running') ON CONFLICT (job, slot) DO NOTHING"
)
_FINISH_JOB = (
    "UPDATE job_runs SET status = $3, finished_at = $4"
    " WHERE job = $1 AND slot = $2 AND status = 'running'"
)
_JOB_RUNS = (
    "SELECT job, slot, started_at, runner, status, finished_at FROM job_runs"
    " WHERE job = $1 ORDER BY slot DESC LIMIT $2"
)
# A bigint advisory key shows in pg_locks as its high half (classid) and low half
# (objid) with objsubid 1; pg_backend_pid() narrows it to this very session.
_LEADER_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND pid = pg_backend_pid() AND granted AND classid = $1 AND objid = $2"
    " AND objsubid = 1)"
)

# What asyncpg and the socket layer raise when the server is gone or a query fails.
_DB_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Connecting can also fail on a DSN asyncpg cannot parse.
_CONNECT_ERRORS: tuple[type[Exception], ...] = (*_DB_ERRORS, ValueError)
# A real read of the tables a 200 from the webhook relies on; a missing table fails it.
_PING = (
    "SELECT (SELECT MAX(version) FROM schema_migrations),"
    " EXISTS (SELECT 1 FROM alert_events), EXISTS (SELECT 1 FROM outbox),"
    " EXISTS (SELECT 1 FROM audit)"
)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def leader_lock_key(name: str) -> int:
    """The advisory lock key for leadership ``name``: stable across processes and versions.

    Why not ``hashtext``: it is an undocumented internal whose result changed
    between PostgreSQL versions; replicas must agree on the key whatever server
    or Python they run.
    """
    digest = hashlib.blake2b(f"sms-bot leader:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _dt(value: datetime | None) -> datetime | None:
    return None if value is None else to_utc(value)


def _run(row: asyncpg.Record) -> RunRecord:
    return RunRecord(
        id=row["id"],
        command=row["command"],
        user=row["user_id"],
        source=row["source"],
        conversation=row["conversation"],
        started_at=to_utc(row["started_at"]),
        status=row["status"],
        finished_at=_dt(row["finished_at"]),
    )


def _step(row: asyncpg.Record) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        index=row["idx"],
        name=row["name"],
        status=row["status"],
        started_at=_dt(row["started_at"]),
        duration_s=row["duration_s"],
        summary=row["summary"],
        error=row["error"],
    )


def _audit(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        at=to_utc(row["at"]),
        actor=row["actor"],
        source=row["source"],
        action=row["action"],
        target=row["target"],
        outcome=row["outcome"],
        conversation=row["conversation"],
        detail=decode_detail(row["detail"]),
    )


def _outbox_item(row: asyncpg.Record) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        message_key=row["message_key"],
        op=row["op"],
        surface=row["surface"],
        channel=row["channel"],
        parent_key=row["parent_key"],
        payload=decode_object(row["payload"]),
        attempts=row["attempts"],
        created_at=to_utc(row["created_at"]),
        next_attempt_at=to_utc(row["next_attempt_at"]),
        last_error=row["last_error"],
    )


def _chat_message(row: asyncpg.Record) -> ChatMessage:
    return ChatMessage(
        key=row["key"],
        surface=row["surface"],
        channel=row["channel"],
        ts=row["ts"],
        thread_ts=row["thread_ts"],
    )


def _proposal(row: asyncpg.Record) -> Proposal:
    return Proposal(
        id=row["id"],
        action=row["action"],
        args=decode_object(row["args"]),
        summary=row["summary"],
        run_id=row["run_id"],
        conversation=row["conversation"],
        message_key=row["message_key"],
        requested_by=row["requested_by"],
        approver_role=row["approver_role"],
        created_at=to_utc(row["created_at"]),
        expires_at=to_utc(row["expires_at"]),
        status=row["status"],
        decided_by=row["decided_by"],
        decided_at=_dt(row["decided_at"]),
        result=row["result"],
    )


def _labels(raw: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in decode_object(raw).items()}


def _alert_event(row: asyncpg.Record) -> AlertEvent:
    return AlertEvent(
        id=row["id"],
        fingerprint=row["fingerprint"],
        status=row["status"],
        labels=_labels(row["labels"]),
        annotations=_labels(row["annotations"]),
        starts_at=_dt(row["starts_at"]),
        ends_at=_dt(row["ends_at"]),
        generator_url=row["generator_url"],
        received_at=to_utc(row["received_at"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def _incident(row: asyncpg.Record) -> Incident:
    return Incident(
        id=row["id"],
        fingerprint=row["fingerprint"],
        title=row["title"],
        priority=row["priority"],
        procedure=row["procedure"],
        labels=_labels(row["labels"]),
        annotations=_labels(row["annotations"]),
        opened_at=to_utc(row["opened_at"]),
        opened_by=row["opened_by"],
        status=row["status"],
        last_seen_at=_dt(row["last_seen_at"]),
        repeats=row["repeats"],
        root_key=row["root_key"],
        conversation=row["conversation"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=_dt(row["acknowledged_at"]),
        escalated_at=_dt(row["escalated_at"]),
        resolved_at=_dt(row["resolved_at"]),
        record_path=row["record_path"],
    )


def _digest(row: asyncpg.Record) -> Digest:
    return Digest(
        id=row["id"],
        started_at=to_utc(row["started_at"]),
        root_key=row["root_key"],
        conversation=row["conversation"],
    )


def _job_run(row: asyncpg.Record) -> JobRun:
    return JobRun(
        job=row["job"],
        slot=to_utc(row["slot"]),
        started_at=to_utc(row["started_at"]),
        runner=row["runner"],
        status=row["status"],
        finished_at=_dt(row["finished_at"]),
    )


class PostgresStore:
    """``Store`` over an asyncpg pool."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        query_timeout: float = 10.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        validate_migrations(migrations)
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._timeout = query_timeout
        self._migrations = tuple(migrations)
        self._pool: asyncpg.Pool | None = None
        # Leader name -> the dedicated connection whose session holds its lock.
        self._leaders: dict[str, asyncpg.Connection] = {}
        # One leadership operation at a time: a connection runs one query at once,
        # and two concurrent acquires must not open two sessions for one name.
        self._leader_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_dsn(self.dsn)!r})"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                command_timeout=self._timeout,
            )
        except _CONNECT_ERRORS as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL store {redact_dsn(self.dsn)}: {exc}"
            ) from exc
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        async with self._leader_lock:
            for name in list(self._leaders):
                await self._release_leader(name)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except _DB_ERRORS:
                pool.terminate()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
        """A pooled connection, with driver errors turned into ``StoreUnavailable``."""
        if self._pool is None:
            raise StoreUnavailable(f"PostgreSQL store {redact_dsn(self.dsn)} is not open")
        try:
            async with self._pool.acquire(timeout=self._connect_timeout) as conn:
                yield conn
        except _DB_ERRORS as exc:
            raise StoreUnavailable(
                f"PostgreSQL store {redact_dsn(self.dsn)}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _migrate(self) -> None:
        t = self._timeout
        async with self._conn() as conn:
            for migration in self._migrations:
                async with conn.transaction():
                    # Lock first: even CREATE TABLE IF NOT EXISTS races without it.
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY, timeout=t
                    )
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                        timeout=t,
                    )
                    done = await conn.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        migration.version,
                        timeout=t,
                    )
                    if done:
                        continue
                    for statement in migration.postgres:
                        await conn.execute(statement, timeout=t)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                        timeout=t,
                    )

    async def ping(self) -> None:
        """A real read of the bot's tables, bounded as a whole.

        ``SELECT 1`` answers even when the bot's schema was dropped or the
        tables emptied; reading them fails then, as the next write would.
        The bound covers waiting for a pooled connection as well as the query.
        """
        try:
            async with asyncio.timeout(self._timeout):
                async with self._conn() as conn:
                    version = await conn.fetchval(_PING, timeout=self._timeout)
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"PostgreSQL store {redact_dsn(self.dsn)} did not answer within {self._timeout:g} s"
            ) from exc
        if version is None:
            raise StoreUnavailable(
                f"PostgreSQL store {redact_dsn(self.dsn)}: schema_migrations is empty; the "
                "bot's tables were emptied while it ran: restart the bot"
            )

    async def schema_version(self) -> int:
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", timeout=self._timeout
            )
        return int(value)

    async def start_run(self, run: RunRecord) -> None:
        check_status(run.status, RUN_STATUSES, what="run")
        args = (
            run.id,
            run.command,
            run.user,
            run.source,
            run.conversation,
            to_utc(run.started_at),
            run.status,
            _dt(run.finished_at),
        )
        async with self._conn() as conn:
            await conn.execute(
                _INSERT_RUN,
                *args,
                timeout=self._timeout,
            )

    async def save_step(self, step: StepRecord) -> None:
        check_status(step.status, STEP_STATUSES, what="step")
        args = (
            step.run_id,
            step.index,
            step.name,
            step.status,
            _dt(step.started_at),
            step.duration_s,
            step.summary,
            step.error,
        )
        async with self._conn() as conn:
            await conn.execute(
                _UPSERT_STEP,
                *args,
                timeout=self._timeout,
            )

    async def finish_run(self, run_id: str, *, status: str, finished_at: datetime) -> None:
        check_status(status, RUN_STATUSES, what="run")
        when = to_utc(finished_at)
        async with self._conn() as conn:
            found = await conn.fetchval(
                "UPDATE runs SET status = $1, finished_at = $2 WHERE id = $3 RETURNING 1",
                status,
                when,
                run_id,
                timeout=self._timeout,
            )
        if found is None:
            raise UnknownRun(run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(_SELECT_RUN, run_id, timeout=self._timeout)
        return None if row is None else _run(row)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                _LIST_STEPS,
                run_id,
                timeout=self._timeout,
            )
        return [_step(row) for row in rows]

    async def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                _RECENT_RUNS,
                max(limit, 0),
                timeout=self._timeout,
            )
        return [_run(row) for row in rows]

    async def audit(self, event: AuditEvent) -> None:
        args = (
            to_utc(event.at),
            event.actor,
            event.source,
            event.action,
            event.target,
            event.outcome,
            event.conversation,
            encode_detail(event.detail),
        )
        async with self._conn() as conn:
            await conn.execute(
                _INSERT_AUDIT,
                *args,
                timeout=self._timeout,
            )

    async def recent_audit(self, limit: int = 50) -> list[AuditEvent]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                _RECENT_AUDIT,
                max(limit, 0),
                timeout=self._timeout,
            )
        return [_audit(row) for row in rows]

    async def count_audit(
        self,
        *,
        action: str,
        target: str,
        since: datetime,
        outcomes: Collection[str] | None = None,
    ) -> int:
        wanted = check_outcomes(outcomes)
        when = to_utc(since)
        async with self._conn() as conn:
            value = await conn.fetchval(
                _COUNT_AUDIT, action, target, when, wanted, timeout=self._timeout
            )
        return int(value)

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
        check_outbox_op(op, parent_key)
        body = encode_object(payload, what="outbox payload")
        at = to_utc(now)
        t = self._timeout
        async with self._conn() as conn:
            if op == "update":
                coalesced = await conn.fetchval(_COALESCE_UPDATE, message_key, body, at, timeout=t)
                if coalesced is not None:
                    return int(coalesced)
            item_id = await conn.fetchval(
                _INSERT_OUTBOX,
                message_key,
                op,
                surface,
                channel,
                parent_key,
                body,
                at,
                timeout=t,
            )
        return int(item_id)

    async def outbox_claim(
        self, *, now: datetime, limit: int = 20, lease_s: float = 30.0
    ) -> list[OutboxItem]:
        check_lease(lease_s)
        at = to_utc(now)
        if limit <= 0:
            return []
        async with self._conn() as conn:
            rows = await conn.fetch(
                _CLAIM_OUTBOX,
                at,
                limit,
                at + timedelta(seconds=lease_s),
                timeout=self._timeout,
            )
        return sorted((_outbox_item(row) for row in rows), key=lambda item: item.id)

    async def outbox_done(self, item_id: int) -> None:
        async with self._conn() as conn:
            await conn.execute(_OUTBOX_DONE, item_id, timeout=self._timeout)

    async def outbox_retry(self, item_id: int, *, at: datetime, error: str) -> None:
        when = to_utc(at)
        async with self._conn() as conn:
            await conn.execute(_OUTBOX_RETRY, item_id, when, error, timeout=self._timeout)

    async def outbox_dead(self, item_id: int, *, error: str) -> None:
        async with self._conn() as conn:
            await conn.execute(_OUTBOX_DEAD, item_id, error, timeout=self._timeout)

    async def outbox_pending(self) -> int:
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'", timeout=self._timeout
            )
        return int(value)

    async def outbox_items(self, *, include_done: bool = False) -> list[OutboxItem]:
        async with self._conn() as conn:
            rows = await conn.fetch(_OUTBOX_ITEMS, include_done, timeout=self._timeout)
        return [_outbox_item(row) for row in rows]

    # --- chat messages ----------------------------------------------------

    async def chat_message_put(self, msg: ChatMessage) -> None:
        async with self._conn() as conn:
            await conn.execute(
                _UPSERT_CHAT_MESSAGE,
                msg.key,
                msg.surface,
                msg.channel,
                msg.ts,
                msg.thread_ts,
                timeout=self._timeout,
            )

    async def chat_message_get(self, key: str) -> ChatMessage | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT key, surface, channel, ts, thread_ts FROM chat_messages WHERE key = $1",
                key,
                timeout=self._timeout,
            )
        return None if row is None else _chat_message(row)

    # --- proposals --------------------------------------------------------

    async def proposal_add(self, p: Proposal) -> None:
        check_status(p.status, PROPOSAL_STATUSES, what="proposal")
        args = (
            p.id,
            p.action,
            encode_object(p.args, what="proposal args"),
            p.summary,
            p.run_id,
            p.conversation,
            p.message_key,
            p.requested_by,
            p.approver_role,
            to_utc(p.created_at),
            to_utc(p.expires_at),
            p.status,
            p.decided_by,
            _dt(p.decided_at),
            p.result,
        )
        async with self._conn() as conn:
            await conn.execute(_INSERT_PROPOSAL, *args, timeout=self._timeout)

    async def proposal_get(self, id: str) -> Proposal | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(_SELECT_PROPOSAL, id, timeout=self._timeout)
        return None if row is None else _proposal(row)

    async def proposal_claim(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        at = to_utc(now)
        async with self._conn() as conn:
            row = await conn.fetchrow(_CLAIM_PROPOSAL, id, by, at, timeout=self._timeout)
        return None if row is None else _proposal(row)

    async def proposal_cancel(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        at = to_utc(now)
        async with self._conn() as conn:
            row = await conn.fetchrow(_CANCEL_PROPOSAL, id, by, at, timeout=self._timeout)
        return None if row is None else _proposal(row)

    async def proposal_expire_due(self, *, now: datetime) -> list[Proposal]:
        at = to_utc(now)
        async with self._conn() as conn:
            rows = await conn.fetch(_EXPIRE_PROPOSALS, at, timeout=self._timeout)
        return sorted((_proposal(row) for row in rows), key=lambda p: (p.expires_at, p.id))

    async def proposal_finish(self, id: str, *, status: str, result: str) -> None:
        check_status(status, FINISHED_PROPOSAL_STATUSES, what="finished proposal")
        async with self._conn() as conn:
            await conn.execute(_FINISH_PROPOSAL, id, status, result, timeout=self._timeout)

    # --- migration 8 (recovery, issue 11): several approvers -------------

    async def proposal_approve(self, id: str, *, by: str, now: datetime, needed: int) -> Approval:
        at, t = to_utc(now), self._timeout
        async with self._conn() as conn, conn.transaction():
            # The row lock serialises concurrent clicks on one proposal, on any replica.
            row = await conn.fetchrow(_SELECT_PROPOSAL + " FOR UPDATE", id, timeout=t)
            approvers = tuple(r[0] for r in await conn.fetch(_APPROVERS, id, timeout=t))
            current = None if row is None else _proposal(row)
            if current is None or current.status != "pending" or current.expires_at <= at:
                return Approval("not_pending", approvers, current)
            if by in approvers:
                return Approval("duplicate", approvers, current)
            await conn.execute(_ADD_APPROVAL, id, by, at, timeout=t)
            approvers += (by,)
            if len(approvers) < needed:
                return Approval("recorded", approvers, current)
            claimed = await conn.fetchrow(_CLAIM_PROPOSAL, id, by, at, timeout=t)
        if claimed is None:
            return Approval("not_pending", approvers, current)
        return Approval("claimed", approvers, _proposal(claimed))

    async def proposal_approvals(self, id: str) -> tuple[str, ...]:
        async with self._conn() as conn:
            rows = await conn.fetch(_APPROVERS, id, timeout=self._timeout)
        return tuple(r[0] for r in rows)

    # --- timelines --------------------------------------------------------

    async def audit_between(
        self, start: datetime, end: datetime | None = None, *, limit: int = 1000
    ) -> list[AuditEvent]:
        lower, upper = to_utc(start), _dt(end)
        async with self._conn() as conn:
            rows = await conn.fetch(
                _AUDIT_BETWEEN, lower, upper, max(limit, 0), timeout=self._timeout
            )
        return [_audit(row) for row in rows]

    async def runs_for_conversation(self, conversation: str) -> list[RunRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(_RUNS_FOR_CONVERSATION, conversation, timeout=self._timeout)
        return [_run(row) for row in rows]

    # --- alert inbox ------------------------------------------------------

    async def alert_events_add(
        self, events: Sequence[NewAlertEvent], *, received_at: datetime
    ) -> list[int]:
        at = to_utc(received_at)
        for event in events:
            check_alert_event(event)
        columns = (
            [e.fingerprint for e in events],
            [e.status for e in events],
            [encode_labels(e.labels, what="alert labels") for e in events],
            [encode_labels(e.annotations, what="alert annotations") for e in events],
            [_dt(e.starts_at) for e in events],
            [_dt(e.ends_at) for e in events],
            [e.generator_url for e in events],
        )
        if not events:
            return []
        t = self._timeout
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ALERT_INBOX_LOCK_KEY, timeout=t)
            rows = await conn.fetch(_INSERT_ALERT_EVENTS, *columns, at, timeout=t)
        # Identity values follow the ORDER BY of the insert's SELECT: sorted ids
        # are the input order whatever order RETURNING lists them in.
        return sorted(int(row["id"]) for row in rows)

    async def alert_events_claim(
        self, *, now: datetime, limit: int = 100, lease_s: float = 30.0
    ) -> list[AlertEvent]:
        check_lease(lease_s)
        at = to_utc(now)
        if limit <= 0:
            return []
        async with self._conn() as conn:
            rows = await conn.fetch(
                _CLAIM_ALERT_EVENTS,
                at,
                limit,
                at + timedelta(seconds=lease_s),
                timeout=self._timeout,
            )
        return sorted((_alert_event(row) for row in rows), key=lambda event: event.id)

    async def alert_event_done(self, id: int) -> None:
        async with self._conn() as conn:
            await conn.execute(_ALERT_EVENT_DONE, id, timeout=self._timeout)

    async def alert_event_retry(self, id: int, *, at: datetime, error: str) -> None:
        when = to_utc(at)
        async with self._conn() as conn:
            await conn.execute(_ALERT_EVENT_RETRY, id, when, error, timeout=self._timeout)

    async def alert_events_pending(self) -> int:
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT COUNT(*) FROM alert_events WHERE state = 'pending'", timeout=self._timeout
            )
        return int(value)

    # --- incidents --------------------------------------------------------

    async def incident_open(self, incident: Incident) -> Incident | None:
        check_incident(incident)
        i = incident
        args = (
            i.id,
            i.fingerprint,
            i.title,
            i.priority,
            i.procedure,
            encode_labels(i.labels, what="incident labels"),
            encode_labels(i.annotations, what="incident annotations"),
            to_utc(i.opened_at),
            i.opened_by,
            i.status,
            _dt(i.last_seen_at),
            i.repeats,
            i.root_key,
            i.conversation,
            i.acknowledged_by,
            _dt(i.acknowledged_at),
            _dt(i.escalated_at),
            _dt(i.resolved_at),
            i.record_path,
        )
        return await self._incident_row(_OPEN_INCIDENT, *args)

    async def _incident_row(self, sql: str, *args: Any) -> Incident | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(sql, *args, timeout=self._timeout)
        return None if row is None else _incident(row)

    async def _incident_rows(self, sql: str, *args: Any) -> list[Incident]:
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args, timeout=self._timeout)
        return [_incident(row) for row in rows]

    async def incident_get(self, id: str) -> Incident | None:
        return await self._incident_row(_SELECT_INCIDENT, id)

    async def incident_open_for(self, fingerprint: str) -> Incident | None:
        return await self._incident_row(_OPEN_INCIDENT_FOR, fingerprint)

    async def incident_set_thread(self, id: str, *, root_key: str, conversation: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE incidents SET root_key = $2, conversation = $3 WHERE id = $1",
                id,
                root_key,
                conversation,
                timeout=self._timeout,
            )

    async def incident_touch(self, id: str, *, now: datetime) -> Incident | None:
        return await self._incident_row(_TOUCH_INCIDENT, id, to_utc(now))

    async def incident_ack(self, id: str, *, by: str, now: datetime) -> Incident | None:
        return await self._incident_row(_ACK_INCIDENT, id, by, to_utc(now))

    async def incident_escalate(self, id: str, *, now: datetime) -> Incident | None:
        return await self._incident_row(_ESCALATE_INCIDENT, id, to_utc(now))

    async def incident_resolve(self, id: str, *, now: datetime) -> Incident | None:
        return await self._incident_row(_RESOLVE_INCIDENT, id, to_utc(now))

    async def incident_set_record(self, id: str, *, path: str, text: str | None = None) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE incidents SET record_path = $2, record_text = COALESCE($3, record_text)"
                " WHERE id = $1",
                id,
                path,
                text,
                timeout=self._timeout,
            )

    async def incident_record_text(self, id: str) -> str | None:
        async with self._conn() as conn:
            text = await conn.fetchval(
                "SELECT record_text FROM incidents WHERE id = $1", id, timeout=self._timeout
            )
        return None if text is None else str(text)

    async def incidents_open(self) -> list[Incident]:
        return await self._incident_rows(_OPEN_INCIDENTS)

    async def incidents_between(self, start: datetime, end: datetime) -> list[Incident]:
        return await self._incident_rows(_INCIDENTS_BETWEEN, to_utc(start), to_utc(end))

    async def incidents_opened_since(self, since: datetime) -> int:
        when = to_utc(since)
        async with self._conn() as conn:
            value = await conn.fetchval(
                "SELECT COUNT(*) FROM incidents WHERE opened_at >= $1", when, timeout=self._timeout
            )
        return int(value)

    # --- alert-storm digests ----------------------------------------------

    async def digest_join(
        self, incident_id: str, *, now: datetime, window: timedelta, new_id: str
    ) -> tuple[Digest, bool]:
        # The transaction-scoped advisory lock makes the look-up and the insert one
        # step across replicas; at READ COMMITTED the next holder's SELECT sees the
        # row the previous one committed. The lock goes with the transaction.
        at = to_utc(now)
        since = to_utc(now - window)
        t = self._timeout
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DIGEST_LOCK_KEY, timeout=t)
            row = await conn.fetchrow(_CURRENT_DIGEST, since, timeout=t)
            created = row is None
            if created:
                row = await conn.fetchrow(
                    "INSERT INTO digests (id, started_at) VALUES ($1, $2)"
                    " RETURNING id, started_at, root_key, conversation",
                    new_id,
                    at,
                    timeout=t,
                )
            assert row is not None
            digest = _digest(row)
            await conn.execute(
                "UPDATE incidents SET digest_id = $1 WHERE id = $2",
                digest.id,
                incident_id,
                timeout=t,
            )
        return digest, created

    async def digest_set_thread(
        self, id: str, *, root_key: str, conversation: str
    ) -> Digest | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "UPDATE digests SET root_key = $2, conversation = $3 WHERE id = $1"
                " RETURNING id, started_at, root_key, conversation",
                id,
                root_key,
                conversation,
                timeout=self._timeout,
            )
        return None if row is None else _digest(row)

    async def digest_get(self, id: str) -> Digest | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(_SELECT_DIGEST, id, timeout=self._timeout)
        return None if row is None else _digest(row)

    async def digest_incidents(self, id: str) -> list[Incident]:
        return await self._incident_rows(_DIGEST_INCIDENTS, id)

    # --- scheduled jobs ---------------------------------------------------

    async def job_claim(self, job: str, *, slot: datetime, runner: str, now: datetime) -> bool:
        check_job(job, runner=runner)
        args = (job, to_utc(slot), to_utc(now), runner)
        async with self._conn() as conn:
            status = await conn.execute(_CLAIM_JOB, *args, timeout=self._timeout)
        return bool(status == "INSERT 0 1")

    async def job_finish(self, job: str, *, slot: datetime, status: str, now: datetime) -> None:
        check_status(status, JOB_FINISHED_STATUSES, what="finished job")
        args = (job, to_utc(slot), status, to_utc(now))
        async with self._conn() as conn:
            await conn.execute(_FINISH_JOB, *args, timeout=self._timeout)

    async def job_last(self, job: str) -> JobRun | None:
        runs = await self.job_runs(job, limit=1)
        return runs[0] if runs else None

    async def job_runs(self, job: str, *, limit: int = 10) -> list[JobRun]:
        async with self._conn() as conn:
            rows = await conn.fetch(_JOB_RUNS, job, max(limit, 0), timeout=self._timeout)
        return [_job_run(row) for row in rows]

    # --- leadership -------------------------------------------------------

    async def leader_acquire(self, name: str) -> bool:
        check_leader_name(name)
        if self._pool is None:
            raise StoreUnavailable(f"PostgreSQL store {redact_dsn(self.dsn)} is not open")
        async with self._leader_lock:
            if name in self._leaders and await self._leader_held(name):
                return True
            conn = await self._leader_connect(name)
            try:
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", leader_lock_key(name), timeout=self._timeout
                )
            except BaseException as exc:
                # Whatever happened, this session must not live on holding the lock.
                conn.terminate()
                if isinstance(exc, _DB_ERRORS):
                    raise self._unavailable(f"leader lock {name!r}", exc) from exc
                raise
            if not got:
                await self._close_leader_conn(conn)
                return False
            self._leaders[name] = conn
            return True

    async def leader_check(self, name: str) -> bool:
        async with self._leader_lock:
            return name in self._leaders and await self._leader_held(name)

    async def leader_release(self, name: str) -> None:
        async with self._leader_lock:
            await self._release_leader(name)

    async def _leader_connect(self, name: str) -> asyncpg.Connection:
        """A new connection outside the pool, named for ``pg_stat_activity``."""
        settings = {**_LEADER_KEEPALIVES, "application_name": f"sms-bot leader {name}"[:63]}
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn,
                timeout=self._connect_timeout,
                command_timeout=self._timeout,
                server_settings=settings,
            )
        except _CONNECT_ERRORS as exc:
            raise self._unavailable(f"leader connection for {name!r}", exc) from exc
        return conn

    async def _leader_held(self, name: str) -> bool:
        """Is the session alive and still holding the lock? If not, forget it.

        Called under ``_leader_lock``. A session that died (terminated, server
        restarted, network gone) lost its lock with it, so an error here means
        "no longer leader", not "store unavailable".
        """
        conn = self._leaders[name]
        key = leader_lock_key(name)
        held = False
        if not conn.is_closed():
            try:
                held = bool(
                    await conn.fetchval(
                        _LEADER_HELD,
                        (key >> 32) & 0xFFFFFFFF,
                        key & 0xFFFFFFFF,
                        timeout=min(LEADER_CHECK_TIMEOUT_S, self._timeout),
                    )
                )
            except _DB_ERRORS:
                held = False
        if not held:
            del self._leaders[name]
            # Closing the socket ends the session server-side: if it was only slow,
            # it must not keep a lock we have stopped acting on.
            conn.terminate()
        return held

    async def _release_leader(self, name: str) -> None:
        """Unlock, then close. Called under ``_leader_lock``; a no-op if not leading.

        Why unlock first: a closed session frees its locks only once the server
        process has exited, a moment later, and the next replica should be able
        to take over as soon as this returns.
        """
        conn = self._leaders.pop(name, None)
        if conn is None:
            return
        try:
            await conn.execute(
                "SELECT pg_advisory_unlock($1)",
                leader_lock_key(name),
                timeout=min(LEADER_CHECK_TIMEOUT_S, self._timeout),
            )
        except _DB_ERRORS:
            conn.terminate()  # gone already, or unresponsive: dropping it frees the lock
            return
        await self._close_leader_conn(conn)

    async def _close_leader_conn(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=min(LEADER_CHECK_TIMEOUT_S, self._timeout))
        except _DB_ERRORS:
            conn.terminate()

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"PostgreSQL store {redact_dsn(self.dsn)}: {what}: {type(exc).__name__}: {exc}"
        )
