"""SQLite store: the embedded default for a single replica.

Why one connection behind a lock: aiosqlite already runs every statement on a
single worker thread, and the lock keeps a multi-statement transaction (a
migration now, atomic claims later) from interleaving with another
coroutine's statements on the same connection. WAL lets readers (``sqlite3``
on the command line, a backup) look while the bot writes.

Why leadership is a locked file beside the database: SQLite serves one host,
so the OS's ``flock`` is the lock every process on that file can see, and the
kernel drops it when its holder exits or is killed; a row in the database would
outlive a dead leader. ``flock`` belongs to the open file, not the process, so
two stores in one process exclude each other too.

Why ``synchronous = FULL``: in WAL mode NORMAL already survives the process
being killed (a commit is in the OS's page cache), but a power cut or kernel
crash can lose the last commits. The alert webhook answers 200 once
``alert_events_add`` returns, and Alertmanager does not resend after a 200,
so a commit must be on disk (one fsync of the WAL per commit) before it
returns. Set explicitly because the compiled-in default varies by build.

Why ``ping`` looks at the file as well as querying: the connection keeps the
file it opened, so a state file deleted, moved away or replaced while the bot
runs goes on answering every query from the unlinked inode, and everything
written to it is gone at the next start. In WAL mode even a file overwritten
in place keeps answering, from the WAL and the page cache. So ``ping`` checks
that the path is still the file the store opened (device and inode) and still
starts with SQLite's header, then reads the bot's tables on the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

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

__all__ = ["MEMORY", "SYNCHRONOUS", "SqliteStore", "leader_lock_path"]

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5000
# The first 16 bytes of every SQLite 3 database file.
_HEADER = b"SQLite format 3\x00"
# A real read of the tables a 200 from the webhook relies on; a missing table fails it.
_PING = (
    "SELECT (SELECT MAX(version) FROM schema_migrations),"
    " EXISTS (SELECT 1 FROM alert_events), EXISTS (SELECT 1 FROM outbox),"
    " EXISTS (SELECT 1 FROM audit)"
)
SYNCHRONOUS = "FULL"  # see the module docstring

# Literal SQL, column order matching the row mappers below.
_INSERT_RUN = (
    "INSERT INTO runs (id, command, user_id, source, conversation, started_at, status,"
    " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_RUN = (
    "SELECT id, command, user_id, source, conversation, started_at, status, finished_at"
    " FROM runs WHERE id = ?"
)
_RECENT_RUNS = (
    "SELECT id, command, user_id, source, conversation, started_at, status, finished_at"
    " FROM runs ORDER BY started_at DESC, seq DESC LIMIT ?"
)
_UPSERT_STEP = (
    "INSERT INTO steps (run_id, idx, name, status, started_at, duration_s, summary, error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, idx) DO UPDATE SET name = excluded.name,"
    " status = excluded.status, started_at = excluded.started_at,"
    " duration_s = excluded.duration_s, summary = excluded.summary, error = excluded.error"
)
_LIST_STEPS = (
    "SELECT run_id, idx, name, status, started_at, duration_s, summary, error"
    " FROM steps WHERE run_id = ? ORDER BY idx"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, source, action, target, outcome, conversation, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_RECENT_AUDIT = (
    "SELECT at, actor, source, action, target, outcome, conversation, detail"
    " FROM audit ORDER BY at DESC, seq DESC LIMIT ?"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (message_key, op, surface, channel, parent_key, payload, created_at,"
    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The newest undelivered item of a message: an unleased update there is coalesced into.
_LATEST_PENDING_OF_KEY = (
    "SELECT id, op, leased_until FROM outbox WHERE message_key = ? AND state = 'pending'"
    " ORDER BY id DESC LIMIT 1"
)
# Due, unleased, and no earlier undelivered item for its message or its thread's root.
_CLAIMABLE = (
    "SELECT id, message_key, op, surface, channel, parent_key, payload, attempts, created_at,"
    " next_attempt_at, last_error FROM outbox o"
    " WHERE o.state = 'pending' AND o.next_attempt_at <= ?"
    " AND (o.leased_until IS NULL OR o.leased_until <= ?)"
    " AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.state = 'pending' AND b.id < o.id"
    " AND (b.message_key = o.message_key OR b.message_key = o.parent_key))"
    " ORDER BY o.id LIMIT ?"
)
_OUTBOX_NOT_DONE = (
    "SELECT id, message_key, op, surface, channel, parent_key, payload, attempts, created_at,"
    " next_attempt_at, last_error FROM outbox WHERE state != 'done' ORDER BY id"
)
_OUTBOX_ALL = (
    "SELECT id, message_key, op, surface, channel, parent_key, payload, attempts, created_at,"
    " next_attempt_at, last_error FROM outbox ORDER BY id"
)
_OUTBOX_DONE = (
    "UPDATE outbox SET state = 'done', leased_until = NULL,"
    " finished_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
    " WHERE id = ? AND state = 'pending'"
)
_OUTBOX_RETRY = (
    "UPDATE outbox SET attempts = attempts + 1, leased_until = NULL,"
    " next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'"
)
_OUTBOX_DEAD = (
    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, leased_until = NULL,"
    " last_error = ?, finished_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
    " WHERE id = ? AND state = 'pending'"
)
_COUNT_AUDIT_BY_OUTCOME = (
    "SELECT outcome, COUNT(*) FROM audit WHERE action = ? AND target = ? AND at >= ?"
    " GROUP BY outcome"
)
_UPSERT_CHAT_MESSAGE = (
    "INSERT INTO chat_messages (key, surface, channel, ts, thread_ts) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET surface = excluded.surface,"
    " channel = excluded.channel, ts = excluded.ts, thread_ts = excluded.thread_ts"
)
_INSERT_PROPOSAL = (
    "INSERT INTO proposals (id, action, args, summary, run_id, conversation, message_key,"
    " requested_by, approver_role, created_at, expires_at, status, decided_by, decided_at,"
    " result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_PROPOSAL = (
    "SELECT id, action, args, summary, run_id, conversation, message_key, requested_by,"
    " approver_role, created_at, expires_at, status, decided_by, decided_at, result"
    " FROM proposals WHERE id = ?"
)
_DUE_PROPOSALS = (
    "SELECT id, action, args, summary, run_id, conversation, message_key, requested_by,"
    " approver_role, created_at, expires_at, status, decided_by, decided_at, result"
    " FROM proposals WHERE status = 'pending' AND expires_at <= ? ORDER BY expires_at, id"
)
_EXPIRE_PROPOSALS = (
    "UPDATE proposals SET status = 'expired', decided_at = ?"
    " WHERE status = 'pending' AND expires_at <= ?"
)
_CLAIM_PROPOSAL = (
    "UPDATE proposals SET status = 'approved', decided_by = ?, decided_at = ?"
    " WHERE id = ? AND status = 'pending' AND expires_at > ?"
)
_CANCEL_PROPOSAL = (
    "UPDATE proposals SET status = 'cancelled', decided_by = ?, decided_at = ?"
    " WHERE id = ? AND status = 'pending'"
)
_FINISH_PROPOSAL = (
    "UPDATE proposals SET status = ?, result = ? WHERE id = ? AND status = 'approved'"
)
# migration 8 (recovery)
_APPROVERS = "SELECT approver FROM proposal_approvals WHERE proposal_id = ? ORDER BY seq"
_ADD_APPROVAL = "INSERT INTO proposal_approvals (proposal_id, approver, at) VALUES (?, ?, ?)"
_AUDIT_BETWEEN = (
    "SELECT at, actor, source, action, target, outcome, conversation, detail"
    " FROM audit WHERE at >= ? AND (? IS NULL OR at < ?) ORDER BY at, seq LIMIT ?"
)
_RUNS_FOR_CONVERSATION = (
    "SELECT id, command, user_id, source, conversation, started_at, status, finished_at"
    " FROM runs WHERE conversation = ? ORDER BY started_at, seq"
)
_INSERT_ALERT_EVENT = (
    "INSERT INTO alert_events (fingerprint, status, labels, annotations, starts_at, ends_at,"
    " generator_url, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# Claimable: pending, due and unleased. Returned only if no older pending event
# of its fingerprint is unclaimable (leased elsewhere, or deferred by a retry):
# the claimable older ones have smaller ids, so the id-ordered LIMIT puts them in
# the same batch. The whole claim runs under BEGIN IMMEDIATE, so no other writer
# changes the picture between this SELECT and the lease UPDATE.
_CLAIM_ALERT_EVENTS = (
    "SELECT e.id, e.fingerprint, e.status, e.labels, e.annotations, e.starts_at, e.ends_at,"
    " e.generator_url, e.received_at, e.attempts, e.last_error FROM alert_events e"
    " WHERE e.state = 'pending'"
    " AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= ?1)"
    " AND (e.leased_until IS NULL OR e.leased_until <= ?1)"
    " AND NOT EXISTS (SELECT 1 FROM alert_events b"
    " WHERE b.fingerprint = e.fingerprint AND b.state = 'pending' AND b.id < e.id"
    " AND ((b.next_attempt_at IS NOT NULL AND b.next_attempt_at > ?1)"
    " OR (b.leased_until IS NOT NULL AND b.leased_until > ?1)))"
    " ORDER BY e.id LIMIT ?2"
)
_ALERT_EVENT_DONE = (
    "UPDATE alert_events SET state = 'done', leased_until = NULL,"
    " done_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
    " WHERE id = ? AND state = 'pending'"
)
_ALERT_EVENT_RETRY = (
    "UPDATE alert_events SET attempts = attempts + 1, leased_until = NULL,"
    " next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'"
)
# The conflict target names the partial unique index: a second open incident for
# a fingerprint is skipped, while a duplicate id still fails loudly.
_OPEN_INCIDENT = (
    "INSERT INTO incidents (id, fingerprint, title, priority, procedure, labels, annotations,"
    " opened_at, opened_by, status, last_seen_at, repeats, root_key, conversation,"
    " acknowledged_by, acknowledged_at, escalated_at, resolved_at, record_path)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (fingerprint) WHERE status = 'open' AND fingerprint IS NOT NULL DO NOTHING"
)
_SELECT_INCIDENT = (
    "SELECT id, fingerprint, title, priority, procedure, labels, annotations, opened_at,"
    " opened_by, status, last_seen_at, repeats, root_key, conversation, acknowledged_by,"
    " acknowledged_at, escalated_at, resolved_at, record_path FROM incidents WHERE id = ?"
)
_OPEN_INCIDENT_FOR = (
    "SELECT id, fingerprint, title, priority, procedure, labels, annotations, opened_at,"
    " opened_by, status, last_seen_at, repeats, root_key, conversation, acknowledged_by,"
    " acknowledged_at, escalated_at, resolved_at, record_path FROM incidents"
    " WHERE fingerprint = ? AND status = 'open'"
)
_OPEN_INCIDENTS = (
    "SELECT id, fingerprint, title, priority, procedure, labels, annotations, opened_at,"
    " opened_by, status, last_seen_at, repeats, root_key, conversation, acknowledged_by,"
    " acknowledged_at, escalated_at, resolved_at, record_path FROM incidents"
    " WHERE status = 'open' ORDER BY opened_at, seq"
)
_INCIDENTS_BETWEEN = (
    "SELECT id, fingerprint, title, priority, procedure, labels, annotations, opened_at,"
    " opened_by, status, last_seen_at, repeats, root_key, conversation, acknowledged_by,"
    " acknowledged_at, escalated_at, resolved_at, record_path FROM incidents"
    " WHERE opened_at >= ? AND opened_at < ? ORDER BY opened_at, seq"
)
_DIGEST_INCIDENTS = (
    "SELECT id, fingerprint, title, priority, procedure, labels, annotations, opened_at,"
    " opened_by, status, last_seen_at, repeats, root_key, conversation, acknowledged_by,"
    " acknowledged_at, escalated_at, resolved_at, record_path FROM incidents"
    " WHERE digest_id = ? ORDER BY opened_at, seq"
)
_SELECT_DIGEST = "SELECT id, started_at, root_key, conversation FROM digests WHERE id = ?"
_CURRENT_DIGEST = (
    "SELECT id, started_at, root_key, conversation FROM digests"
    " WHERE started_at > ? ORDER BY started_at DESC, seq DESC LIMIT 1"
)
_TOUCH_INCIDENT = (
    "UPDATE incidents SET repeats = repeats + 1, last_seen_at = ? WHERE id = ? AND status = 'open'"
)
_ACK_INCIDENT = (
    "UPDATE incidents SET acknowledged_by = ?, acknowledged_at = ?"
    " WHERE id = ? AND status = 'open' AND acknowledged_at IS NULL"
)
_ESCALATE_INCIDENT = (
    "UPDATE incidents SET escalated_at = ? WHERE id = ? AND status = 'open'"
    " AND acknowledged_at IS NULL AND escalated_at IS NULL"
)
_RESOLVE_INCIDENT = (
    "UPDATE incidents SET status = 'resolved', resolved_at = ? WHERE id = ? AND status = 'open'"
)
# The primary key decides: of concurrent claims of one slot, one inserts a row.
_CLAIM_JOB = (
    "INSERT INTO job_runs (job, slot, started_at, runner, status) VALUES (?, ?, ?, ?, 'running')"
    " ON CONFLICT (job, slot) DO NOTHING"
)
_FINISH_JOB = (
    "UPDATE job_runs SET status = ?, finished_at = ?"
    " WHERE job = ? AND slot = ? AND status = 'running'"
)
_JOB_RUNS = (
    "SELECT job, slot, started_at, runner, status, finished_at FROM job_runs"
    " WHERE job = ? ORDER BY slot DESC LIMIT ?"
)


def _dt_out(value: datetime | None) -> str | None:
    """Fixed-width ISO text in UTC, so text order is time order."""
    if value is None:
        return None
    return to_utc(value).isoformat(timespec="microseconds")


def _dt_required_out(value: datetime) -> str:
    return to_utc(value).isoformat(timespec="microseconds")


def _dt_in(value: str | None) -> datetime | None:
    return None if value is None else to_utc(datetime.fromisoformat(value))


def _dt_required(value: str) -> datetime:
    return to_utc(datetime.fromisoformat(value))


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        id=row[0],
        command=row[1],
        user=row[2],
        source=row[3],
        conversation=row[4],
        started_at=_dt_required(row[5]),
        status=row[6],
        finished_at=_dt_in(row[7]),
    )


def _step(row: Sequence[Any]) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        index=row[1],
        name=row[2],
        status=row[3],
        started_at=_dt_in(row[4]),
        duration_s=row[5],
        summary=row[6],
        error=row[7],
    )


def _audit(row: Sequence[Any]) -> AuditEvent:
    return AuditEvent(
        at=_dt_required(row[0]),
        actor=row[1],
        source=row[2],
        action=row[3],
        target=row[4],
        outcome=row[5],
        conversation=row[6],
        detail=decode_detail(row[7]),
    )


def _outbox_item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(
        id=row[0],
        message_key=row[1],
        op=row[2],
        surface=row[3],
        channel=row[4],
        parent_key=row[5],
        payload=decode_object(row[6]),
        attempts=row[7],
        created_at=_dt_required(row[8]),
        next_attempt_at=_dt_required(row[9]),
        last_error=row[10],
    )


def _proposal(row: Sequence[Any]) -> Proposal:
    return Proposal(
        id=row[0],
        action=row[1],
        args=decode_object(row[2]),
        summary=row[3],
        run_id=row[4],
        conversation=row[5],
        message_key=row[6],
        requested_by=row[7],
        approver_role=row[8],
        created_at=_dt_required(row[9]),
        expires_at=_dt_required(row[10]),
        status=row[11],
        decided_by=row[12],
        decided_at=_dt_in(row[13]),
        result=row[14],
    )


def _labels(raw: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in decode_object(raw).items()}


def _alert_event(row: Sequence[Any]) -> AlertEvent:
    return AlertEvent(
        id=row[0],
        fingerprint=row[1],
        status=row[2],
        labels=_labels(row[3]),
        annotations=_labels(row[4]),
        starts_at=_dt_in(row[5]),
        ends_at=_dt_in(row[6]),
        generator_url=row[7],
        received_at=_dt_required(row[8]),
        attempts=row[9],
        last_error=row[10],
    )


def _incident(row: Sequence[Any]) -> Incident:
    return Incident(
        id=row[0],
        fingerprint=row[1],
        title=row[2],
        priority=row[3],
        procedure=row[4],
        labels=_labels(row[5]),
        annotations=_labels(row[6]),
        opened_at=_dt_required(row[7]),
        opened_by=row[8],
        status=row[9],
        last_seen_at=_dt_in(row[10]),
        repeats=row[11],
        root_key=row[12],
        conversation=row[13],
        acknowledged_by=row[14],
        acknowledged_at=_dt_in(row[15]),
        escalated_at=_dt_in(row[16]),
        resolved_at=_dt_in(row[17]),
        record_path=row[18],
    )


def _digest(row: Sequence[Any]) -> Digest:
    return Digest(id=row[0], started_at=_dt_required(row[1]), root_key=row[2], conversation=row[3])


def _job_run(row: Sequence[Any]) -> JobRun:
    return JobRun(
        job=row[0],
        slot=_dt_required(row[1]),
        started_at=_dt_required(row[2]),
        runner=row[3],
        status=row[4],
        finished_at=_dt_in(row[5]),
    )


def leader_lock_path(db_path: str, name: str) -> str:
    """The file whose ``flock`` is leadership for ``name`` on this database."""
    return f"{db_path}.leader.{name}.lock"


def _is_file_at(fd: int, path: str) -> bool:
    """Is ``fd`` still the file at ``path``? Not if it was deleted or replaced."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


def _try_lock_file(path: str) -> int | None:
    """An fd holding ``LOCK_EX`` on ``path``, or None if another open file holds it.

    Plain non-blocking syscalls on a local file, so fine on the event loop. The
    fd is close-on-exec: a child process the bot starts must not inherit, and
    outlive it with, the leadership.
    """
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _is_file_at(fd, path):
            # Who leads, for a human looking; the lock itself is the flock.
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        # Locked a file someone unlinked in between: it guards nothing, try the new one.
        os.close(fd)
    raise OSError(f"lock file {path} keeps being replaced")


async def _fetchone(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    """The first row, with the statement closed at once.

    Why not ``(await conn.execute(...)).fetchone()``: a statement stepped to a
    row but not to its end keeps a read snapshot open on the connection. The
    next ``BEGIN IMMEDIATE`` after another connection committed then fails
    with "database is locked" at once, without waiting for busy_timeout.
    """
    async with conn.execute(sql, params) as cursor:
        row: sqlite3.Row | None = await cursor.fetchone()
    return row


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _file_problem(path: str, identity: tuple[int, int]) -> str | None:
    """Why the file at ``path`` no longer holds what the store writes, or None if it does."""
    shown = os.path.abspath(path)
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            header = file.read(len(_HEADER))
    except FileNotFoundError:
        return (
            f"state file {shown} was deleted while the bot ran; what the bot stores now "
            "is lost when it stops: restart the bot"
        )
    except OSError as exc:
        return f"state file {shown} cannot be read: {exc.strerror or exc}"
    if (st.st_dev, st.st_ino) != identity:
        return (
            f"state file {shown} was replaced while the bot ran (another file is at its "
            "path now); restart the bot to use the new file"
        )
    if header != _HEADER:
        return (
            f"state file {shown} is no longer an SQLite database (overwritten or "
            "corrupted while the bot ran); restore it from a backup and restart the bot"
        )
    return None


class SqliteStore:
    """``Store`` over one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        validate_migrations(migrations)
        self.path = path
        self._migrations = tuple(migrations)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # Leader name -> fd holding its lock file (None for ``:memory:``, which
        # no other store or process can open, so leading it is never contested).
        self._leaders: dict[str, int | None] = {}
        # (st_dev, st_ino) of the file opened; None for ``:memory:`` or before ``open``.
        self._identity: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._db = db
        try:
            async with self._conn() as conn:
                await self._setup(conn)
            if self.path != MEMORY:
                self._identity = await asyncio.to_thread(_identity, self.path)
        except BaseException:
            await self.close()
            raise

    async def _setup(self, conn: aiosqlite.Connection) -> None:
        """Pragmas and migrations, retried while another opener holds the file.

        SQLite answers "database is locked" without waiting for busy_timeout in a
        few cases (switching to WAL, or when waiting could deadlock), so processes
        starting together retry here, bounded; every step is safe to repeat.
        """
        await _fetchone(conn, f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.01
        while True:
            try:
                if self.path != MEMORY:
                    # Closed at once: left open, it holds a read snapshot that makes
                    # the next BEGIN IMMEDIATE fail without waiting (see _fetchone).
                    await _fetchone(conn, "PRAGMA journal_mode = WAL")
                await self._migrate(conn)
                return
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def close(self) -> None:
        for name in list(self._leaders):
            self._drop_leader(name)
        db, self._db = self._db, None
        self._identity = None
        if db is not None:
            try:
                await db.close()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"closing SQLite store {self.path} failed: {exc}") from exc

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, serialised, with sqlite errors turned into ``StoreUnavailable``."""
        async with self._lock:
            if self._db is None:
                raise StoreUnavailable(f"SQLite store {self.path} is not open")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside ``BEGIN IMMEDIATE ... COMMIT``.

        Why IMMEDIATE: it takes the file's write lock before the first read, so
        a read-then-write (claim, coalesce) cannot interleave with another
        connection's, even from another process or a second store on the file.
        One code path for every SQLite version, instead of ``RETURNING`` (3.35+).

        A COMMIT that fails (a disk error, a file corrupted under the bot) is
        rolled back as well: left open, the transaction would make every later
        ``BEGIN`` fail with "cannot start a transaction within a transaction".
        """
        async with self._conn() as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    # The first error is the one to report; a failed rollback adds nothing.
                    with contextlib.suppress(sqlite3.Error):
                        await conn.execute("ROLLBACK")
                raise

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        for migration in self._migrations:
            # IMMEDIATE takes the write lock up front: a second process opening the
            # same file waits (busy_timeout) instead of applying the migration twice.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                done = await _fetchone(
                    conn, "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                )
                if done is None:
                    for statement in migration.sqlite:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                        (migration.version, migration.name),
                    )
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def ping(self) -> None:
        """The path is still the opened database file, and its tables answer a read.

        Cheap enough for every webhook delivery: one open and read of the file's
        first bytes, and one query served from the page cache.
        """
        async with self._conn() as conn:
            if self._identity is not None:
                problem = await asyncio.to_thread(_file_problem, self.path, self._identity)
                if problem is not None:
                    raise StoreUnavailable(problem)
            row = await _fetchone(conn, _PING)
        if row is None or row[0] is None:
            raise StoreUnavailable(
                f"SQLite store {self.path}: schema_migrations is empty; the bot's tables were "
                "emptied while it ran: restart the bot"
            )

    async def schema_version(self) -> int:
        async with self._conn() as conn:
            row = await _fetchone(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0]) if row else 0

    async def start_run(self, run: RunRecord) -> None:
        check_status(run.status, RUN_STATUSES, what="run")
        async with self._conn() as conn:
            await conn.execute(
                _INSERT_RUN,
                (
                    run.id,
                    run.command,
                    run.user,
                    run.source,
                    run.conversation,
                    _dt_out(run.started_at),
                    run.status,
                    _dt_out(run.finished_at),
                ),
            )

    async def save_step(self, step: StepRecord) -> None:
        check_status(step.status, STEP_STATUSES, what="step")
        async with self._conn() as conn:
            await conn.execute(
                _UPSERT_STEP,
                (
                    step.run_id,
                    step.index,
                    step.name,
                    step.status,
                    _dt_out(step.started_at),
                    step.duration_s,
                    step.summary,
                    step.error,
                ),
            )

    async def finish_run(self, run_id: str, *, status: str, finished_at: datetime) -> None:
        check_status(status, RUN_STATUSES, what="run")
        async with self._conn() as conn:
            cursor = await conn.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
                (status, _dt_out(finished_at), run_id),
            )
            changed = cursor.rowcount
        if changed == 0:
            raise UnknownRun(run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._conn() as conn:
            row = await _fetchone(conn, _SELECT_RUN, (run_id,))
        return None if row is None else _run(row)

    async def list_steps(self, run_id: str) -> list[StepRecord]:
        async with self._conn() as conn:
            cursor = await conn.execute(_LIST_STEPS, (run_id,))
            rows = await cursor.fetchall()
        return [_step(row) for row in rows]

    async def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        async with self._conn() as conn:
            cursor = await conn.execute(
                _RECENT_RUNS,
                (max(limit, 0),),
            )
            rows = await cursor.fetchall()
        return [_run(row) for row in rows]

    async def audit(self, event: AuditEvent) -> None:
        async with self._conn() as conn:
            await conn.execute(
                _INSERT_AUDIT,
                (
                    _dt_out(event.at),
                    event.actor,
                    event.source,
                    event.action,
                    event.target,
                    event.outcome,
                    event.conversation,
                    encode_detail(event.detail),
                ),
            )

    async def recent_audit(self, limit: int = 50) -> list[AuditEvent]:
        async with self._conn() as conn:
            cursor = await conn.execute(
                _RECENT_AUDIT,
                (max(limit, 0),),
            )
            rows = await cursor.fetchall()
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
        async with self._conn() as conn:
            cursor = await conn.execute(_COUNT_AUDIT_BY_OUTCOME, (action, target, _dt_out(since)))
            rows = await cursor.fetchall()
        return sum(int(n) for outcome, n in rows if wanted is None or outcome in wanted)

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
        at = _dt_required_out(now)
        async with self._write() as conn:
            if op == "update":
                latest = await _fetchone(conn, _LATEST_PENDING_OF_KEY, (message_key,))
                if latest is not None and latest[1] == "update":
                    leased_until = latest[2]
                    if leased_until is None or leased_until <= at:
                        await conn.execute(
                            "UPDATE outbox SET payload = ? WHERE id = ?", (body, latest[0])
                        )
                        return int(latest[0])
            cursor = await conn.execute(
                _INSERT_OUTBOX,
                (message_key, op, surface, channel, parent_key, body, at, at),
            )
            item_id = cursor.lastrowid
        if item_id is None:
            raise StoreUnavailable(f"SQLite store {self.path}: outbox insert returned no id")
        return item_id

    async def outbox_claim(
        self, *, now: datetime, limit: int = 20, lease_s: float = 30.0
    ) -> list[OutboxItem]:
        check_lease(lease_s)
        at = _dt_required_out(now)
        until = _dt_required_out(to_utc(now) + timedelta(seconds=lease_s))
        if limit <= 0:
            return []
        async with self._write() as conn:
            cursor = await conn.execute(_CLAIMABLE, (at, at, limit))
            items = [_outbox_item(row) for row in await cursor.fetchall()]
            await conn.executemany(
                "UPDATE outbox SET leased_until = ? WHERE id = ?",
                [(until, item.id) for item in items],
            )
        return items

    async def outbox_done(self, item_id: int) -> None:
        async with self._conn() as conn:
            await conn.execute(_OUTBOX_DONE, (item_id,))

    async def outbox_retry(self, item_id: int, *, at: datetime, error: str) -> None:
        when = _dt_required_out(at)
        async with self._conn() as conn:
            await conn.execute(_OUTBOX_RETRY, (when, error, item_id))

    async def outbox_dead(self, item_id: int, *, error: str) -> None:
        async with self._conn() as conn:
            await conn.execute(_OUTBOX_DEAD, (error, item_id))

    async def outbox_pending(self) -> int:
        async with self._conn() as conn:
            row = await _fetchone(conn, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        return int(row[0]) if row else 0

    async def outbox_items(self, *, include_done: bool = False) -> list[OutboxItem]:
        async with self._conn() as conn:
            cursor = await conn.execute(_OUTBOX_ALL if include_done else _OUTBOX_NOT_DONE)
            rows = await cursor.fetchall()
        return [_outbox_item(row) for row in rows]

    # --- chat messages ----------------------------------------------------

    async def chat_message_put(self, msg: ChatMessage) -> None:
        async with self._conn() as conn:
            await conn.execute(
                _UPSERT_CHAT_MESSAGE, (msg.key, msg.surface, msg.channel, msg.ts, msg.thread_ts)
            )

    async def chat_message_get(self, key: str) -> ChatMessage | None:
        async with self._conn() as conn:
            row = await _fetchone(
                conn,
                "SELECT key, surface, channel, ts, thread_ts FROM chat_messages WHERE key = ?",
                (key,),
            )
        if row is None:
            return None
        return ChatMessage(key=row[0], surface=row[1], channel=row[2], ts=row[3], thread_ts=row[4])

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
            _dt_out(p.created_at),
            _dt_out(p.expires_at),
            p.status,
            p.decided_by,
            _dt_out(p.decided_at),
            p.result,
        )
        async with self._conn() as conn:
            await conn.execute(_INSERT_PROPOSAL, args)

    async def proposal_get(self, id: str) -> Proposal | None:
        async with self._conn() as conn:
            row = await _fetchone(conn, _SELECT_PROPOSAL, (id,))
        return None if row is None else _proposal(row)

    async def _decide(self, id: str, sql: str, params: Sequence[Any]) -> Proposal | None:
        """Run one ``pending -> ...`` update and read the proposal back in one transaction."""
        async with self._write() as conn:
            cursor = await conn.execute(sql, params)
            if cursor.rowcount != 1:
                return None
            row = await _fetchone(conn, _SELECT_PROPOSAL, (id,))
        return None if row is None else _proposal(row)

    async def proposal_claim(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        at = _dt_required_out(now)
        return await self._decide(id, _CLAIM_PROPOSAL, (by, at, id, at))

    async def proposal_cancel(self, id: str, *, by: str, now: datetime) -> Proposal | None:
        at = _dt_required_out(now)
        return await self._decide(id, _CANCEL_PROPOSAL, (by, at, id))

    async def proposal_expire_due(self, *, now: datetime) -> list[Proposal]:
        at = _dt_required_out(now)
        async with self._write() as conn:
            cursor = await conn.execute(_DUE_PROPOSALS, (at,))
            due = [_proposal(row) for row in await cursor.fetchall()]
            await conn.execute(_EXPIRE_PROPOSALS, (at, at))
        return [replace(p, status="expired", decided_at=to_utc(now)) for p in due]

    async def proposal_finish(self, id: str, *, status: str, result: str) -> None:
        check_status(status, FINISHED_PROPOSAL_STATUSES, what="finished proposal")
        async with self._conn() as conn:
            await conn.execute(_FINISH_PROPOSAL, (status, result, id))

    # --- migration 8 (recovery, issue 11): several approvers -------------

    async def proposal_approve(self, id: str, *, by: str, now: datetime, needed: int) -> Approval:
        at = _dt_required_out(now)
        async with self._write() as conn:  # BEGIN IMMEDIATE: one click at a time
            row = await _fetchone(conn, _SELECT_PROPOSAL, (id,))
            cursor = await conn.execute(_APPROVERS, (id,))
            approvers = tuple(r[0] for r in await cursor.fetchall())
            current = None if row is None else _proposal(row)
            if current is None or current.status != "pending" or current.expires_at <= now:
                return Approval("not_pending", approvers, current)
            if by in approvers:
                return Approval("duplicate", approvers, current)
            await conn.execute(_ADD_APPROVAL, (id, by, at))
            approvers += (by,)
            if len(approvers) < needed:
                return Approval("recorded", approvers, current)
            cursor = await conn.execute(_CLAIM_PROPOSAL, (by, at, id, at))
            if cursor.rowcount != 1:  # cannot happen under the write lock; be explicit
                return Approval("not_pending", approvers, current)
            claimed = await _fetchone(conn, _SELECT_PROPOSAL, (id,))
        return Approval("claimed", approvers, None if claimed is None else _proposal(claimed))

    async def proposal_approvals(self, id: str) -> tuple[str, ...]:
        async with self._conn() as conn:
            cursor = await conn.execute(_APPROVERS, (id,))
            return tuple(r[0] for r in await cursor.fetchall())

    # --- timelines --------------------------------------------------------

    async def audit_between(
        self, start: datetime, end: datetime | None = None, *, limit: int = 1000
    ) -> list[AuditEvent]:
        upper = _dt_out(end)
        async with self._conn() as conn:
            cursor = await conn.execute(
                _AUDIT_BETWEEN, (_dt_required_out(start), upper, upper, max(limit, 0))
            )
            rows = await cursor.fetchall()
        return [_audit(row) for row in rows]

    async def runs_for_conversation(self, conversation: str) -> list[RunRecord]:
        async with self._conn() as conn:
            cursor = await conn.execute(_RUNS_FOR_CONVERSATION, (conversation,))
            rows = await cursor.fetchall()
        return [_run(row) for row in rows]

    # --- alert inbox ------------------------------------------------------

    async def alert_events_add(
        self, events: Sequence[NewAlertEvent], *, received_at: datetime
    ) -> list[int]:
        at = _dt_required_out(received_at)
        rows = []
        for event in events:
            check_alert_event(event)
            rows.append(
                (
                    event.fingerprint,
                    event.status,
                    encode_labels(event.labels, what="alert labels"),
                    encode_labels(event.annotations, what="alert annotations"),
                    _dt_out(event.starts_at),
                    _dt_out(event.ends_at),
                    event.generator_url,
                    at,
                )
            )
        if not rows:
            return []
        async with self._write() as conn:
            await conn.executemany(_INSERT_ALERT_EVENT, rows)
            last = await _fetchone(conn, "SELECT last_insert_rowid()")
        if last is None:
            raise StoreUnavailable(f"SQLite store {self.path}: alert insert returned no id")
        # AUTOINCREMENT under the write lock hands out consecutive ids in order.
        first = int(last[0]) - len(rows) + 1
        return list(range(first, first + len(rows)))

    async def alert_events_claim(
        self, *, now: datetime, limit: int = 100, lease_s: float = 30.0
    ) -> list[AlertEvent]:
        check_lease(lease_s)
        at = _dt_required_out(now)
        until = _dt_required_out(to_utc(now) + timedelta(seconds=lease_s))
        if limit <= 0:
            return []
        async with self._write() as conn:
            cursor = await conn.execute(_CLAIM_ALERT_EVENTS, (at, limit))
            events = [_alert_event(row) for row in await cursor.fetchall()]
            await conn.executemany(
                "UPDATE alert_events SET leased_until = ? WHERE id = ?",
                [(until, event.id) for event in events],
            )
        return events

    async def alert_event_done(self, id: int) -> None:
        async with self._conn() as conn:
            await conn.execute(_ALERT_EVENT_DONE, (id,))

    async def alert_event_retry(self, id: int, *, at: datetime, error: str) -> None:
        when = _dt_required_out(at)
        async with self._conn() as conn:
            await conn.execute(_ALERT_EVENT_RETRY, (when, error, id))

    async def alert_events_pending(self) -> int:
        async with self._conn() as conn:
            row = await _fetchone(conn, "SELECT COUNT(*) FROM alert_events WHERE state = 'pending'")
        return int(row[0]) if row else 0

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
            _dt_required_out(i.opened_at),
            i.opened_by,
            i.status,
            _dt_out(i.last_seen_at),
            i.repeats,
            i.root_key,
            i.conversation,
            i.acknowledged_by,
            _dt_out(i.acknowledged_at),
            _dt_out(i.escalated_at),
            _dt_out(i.resolved_at),
            i.record_path,
        )
        return await self._change_incident(i.id, _OPEN_INCIDENT, args)

    async def incident_get(self, id: str) -> Incident | None:
        async with self._conn() as conn:
            row = await _fetchone(conn, _SELECT_INCIDENT, (id,))
        return None if row is None else _incident(row)

    async def incident_open_for(self, fingerprint: str) -> Incident | None:
        async with self._conn() as conn:
            row = await _fetchone(conn, _OPEN_INCIDENT_FOR, (fingerprint,))
        return None if row is None else _incident(row)

    async def incident_set_thread(self, id: str, *, root_key: str, conversation: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE incidents SET root_key = ?, conversation = ? WHERE id = ?",
                (root_key, conversation, id),
            )

    async def _change_incident(self, id: str, sql: str, params: Sequence[Any]) -> Incident | None:
        """Run one guarded insert/update and read the incident back in one transaction."""
        async with self._write() as conn:
            cursor = await conn.execute(sql, params)
            if cursor.rowcount != 1:
                return None
            row = await _fetchone(conn, _SELECT_INCIDENT, (id,))
        return None if row is None else _incident(row)

    async def incident_touch(self, id: str, *, now: datetime) -> Incident | None:
        return await self._change_incident(id, _TOUCH_INCIDENT, (_dt_required_out(now), id))

    async def incident_ack(self, id: str, *, by: str, now: datetime) -> Incident | None:
        at = _dt_required_out(now)
        return await self._change_incident(id, _ACK_INCIDENT, (by, at, id))

    async def incident_escalate(self, id: str, *, now: datetime) -> Incident | None:
        return await self._change_incident(id, _ESCALATE_INCIDENT, (_dt_required_out(now), id))

    async def incident_resolve(self, id: str, *, now: datetime) -> Incident | None:
        return await self._change_incident(id, _RESOLVE_INCIDENT, (_dt_required_out(now), id))

    async def incident_set_record(self, id: str, *, path: str, text: str | None = None) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE incidents SET record_path = ?, record_text = COALESCE(?, record_text)"
                " WHERE id = ?",
                (path, text, id),
            )

    async def incident_record_text(self, id: str) -> str | None:
        async with self._conn() as conn:
            row = await _fetchone(conn, "SELECT record_text FROM incidents WHERE id = ?", (id,))
        return None if row is None or row[0] is None else str(row[0])

    async def incidents_open(self) -> list[Incident]:
        async with self._conn() as conn:
            cursor = await conn.execute(_OPEN_INCIDENTS)
            rows = await cursor.fetchall()
        return [_incident(row) for row in rows]

    async def incidents_between(self, start: datetime, end: datetime) -> list[Incident]:
        async with self._conn() as conn:
            cursor = await conn.execute(
                _INCIDENTS_BETWEEN, (_dt_required_out(start), _dt_required_out(end))
            )
            rows = await cursor.fetchall()
        return [_incident(row) for row in rows]

    async def incidents_opened_since(self, since: datetime) -> int:
        async with self._conn() as conn:
            row = await _fetchone(
                conn,
                "SELECT COUNT(*) FROM incidents WHERE opened_at >= ?",
                (_dt_required_out(since),),
            )
        return int(row[0]) if row else 0

    # --- alert-storm digests ----------------------------------------------

    async def digest_join(
        self, incident_id: str, *, now: datetime, window: timedelta, new_id: str
    ) -> tuple[Digest, bool]:
        # BEGIN IMMEDIATE makes the look-up and the insert one step for every
        # connection and process on the file: one writer at a time.
        since = _dt_required_out(now - window)
        async with self._write() as conn:
            row = await _fetchone(conn, _CURRENT_DIGEST, (since,))
            created = row is None
            if created:
                await conn.execute(
                    "INSERT INTO digests (id, started_at) VALUES (?, ?)",
                    (new_id, _dt_required_out(now)),
                )
                row = await _fetchone(conn, _SELECT_DIGEST, (new_id,))
            assert row is not None
            digest = _digest(row)
            await conn.execute(
                "UPDATE incidents SET digest_id = ? WHERE id = ?", (digest.id, incident_id)
            )
        return digest, created

    async def digest_set_thread(
        self, id: str, *, root_key: str, conversation: str
    ) -> Digest | None:
        async with self._write() as conn:
            await conn.execute(
                "UPDATE digests SET root_key = ?, conversation = ? WHERE id = ?",
                (root_key, conversation, id),
            )
            row = await _fetchone(conn, _SELECT_DIGEST, (id,))
        return None if row is None else _digest(row)

    async def digest_get(self, id: str) -> Digest | None:
        async with self._conn() as conn:
            row = await _fetchone(conn, _SELECT_DIGEST, (id,))
        return None if row is None else _digest(row)

    async def digest_incidents(self, id: str) -> list[Incident]:
        async with self._conn() as conn:
            cursor = await conn.execute(_DIGEST_INCIDENTS, (id,))
            rows = await cursor.fetchall()
        return [_incident(row) for row in rows]

    # --- scheduled jobs ---------------------------------------------------

    async def job_claim(self, job: str, *, slot: datetime, runner: str, now: datetime) -> bool:
        check_job(job, runner=runner)
        args = (job, _dt_required_out(slot), _dt_required_out(now), runner)
        async with self._conn() as conn:
            cursor = await conn.execute(_CLAIM_JOB, args)
            claimed = cursor.rowcount == 1
        return claimed

    async def job_finish(self, job: str, *, slot: datetime, status: str, now: datetime) -> None:
        check_status(status, JOB_FINISHED_STATUSES, what="finished job")
        args = (status, _dt_required_out(now), job, _dt_required_out(slot))
        async with self._conn() as conn:
            await conn.execute(_FINISH_JOB, args)

    async def job_last(self, job: str) -> JobRun | None:
        runs = await self.job_runs(job, limit=1)
        return runs[0] if runs else None

    async def job_runs(self, job: str, *, limit: int = 10) -> list[JobRun]:
        async with self._conn() as conn:
            cursor = await conn.execute(_JOB_RUNS, (job, max(limit, 0)))
            rows = await cursor.fetchall()
        return [_job_run(row) for row in rows]

    # --- leadership -------------------------------------------------------

    async def leader_acquire(self, name: str) -> bool:
        check_leader_name(name)
        if self._db is None:
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        if name in self._leaders and await self.leader_check(name):
            return True
        if self.path == MEMORY:
            self._leaders[name] = None
            return True
        path = leader_lock_path(self.path, name)
        try:
            fd = _try_lock_file(path)
        except OSError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: leader lock {path}: {exc}") from exc
        if fd is None:
            return False
        self._leaders[name] = fd
        return True

    async def leader_check(self, name: str) -> bool:
        if name not in self._leaders:
            return False
        fd = self._leaders[name]
        if fd is None:
            return True
        try:
            held = _is_file_at(fd, leader_lock_path(self.path, name))
        except OSError:
            held = False
        if not held:
            self._drop_leader(name)
        return held

    async def leader_release(self, name: str) -> None:
        self._drop_leader(name)

    def _drop_leader(self, name: str) -> None:
        """Closing the fd releases the flock; the file stays (unlinking it would race)."""
        fd = self._leaders.pop(name, None)
        if fd is not None:
            os.close(fd)
