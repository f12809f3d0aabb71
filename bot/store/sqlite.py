"""SQLite store: the embedded default for a single replica.

Why one connection behind a lock: aiosqlite already runs every statement on a
single worker thread, and the lock keeps a multi-statement transaction (a
migration now, atomic claims later) from interleaving with another
coroutine's statements on the same connection. WAL lets readers (``sqlite3``
on the command line, a backup) look while the bot writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.base import (
    RUN_STATUSES,
    STEP_STATUSES,
    AuditEvent,
    RunRecord,
    StepRecord,
    StoreUnavailable,
    UnknownRun,
    check_status,
    decode_detail,
    encode_detail,
    to_utc,
)
from bot.store.migrations import MIGRATIONS, Migration, validate_migrations

__all__ = ["MEMORY", "SqliteStore"]

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5000

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


def _dt_out(value: datetime | None) -> str | None:
    """Fixed-width ISO text in UTC, so text order is time order."""
    if value is None:
        return None
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


class SqliteStore:
    """``Store`` over one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        validate_migrations(migrations)
        self.path = path
        self._migrations = tuple(migrations)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

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
        except BaseException:
            await self.close()
            raise

    async def _setup(self, conn: aiosqlite.Connection) -> None:
        """Pragmas and migrations, retried while another opener holds the file.

        SQLite answers "database is locked" without waiting for busy_timeout in a
        few cases (switching to WAL, or when waiting could deadlock), so processes
        starting together retry here, bounded; every step is safe to repeat.
        """
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA foreign_keys = ON")
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.01
        while True:
            try:
                if self.path != MEMORY:
                    await conn.execute("PRAGMA journal_mode = WAL")
                await self._migrate(conn)
                return
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def close(self) -> None:
        db, self._db = self._db, None
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
                cursor = await conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                )
                if await cursor.fetchone() is None:
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
        async with self._conn() as conn:
            cursor = await conn.execute("SELECT 1")
            await cursor.fetchone()

    async def schema_version(self) -> int:
        async with self._conn() as conn:
            cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            row = await cursor.fetchone()
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
            cursor = await conn.execute(_SELECT_RUN, (run_id,))
            row = await cursor.fetchone()
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
