"""PostgreSQL store: for several replicas sharing one state.

Why an advisory lock around migrations: replicas started together would
otherwise race to create the same tables. ``pg_advisory_xact_lock`` is taken
first in each migration's transaction, so the second replica waits, then sees
the version recorded and skips it. Every query carries a timeout so a stuck
database turns ``/readyz`` red instead of hanging a handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

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

__all__ = ["MIGRATION_LOCK_KEY", "PostgresStore", "redact_dsn"]

# Arbitrary constant shared by every replica: "sms-bot migrations" as a bigint.
MIGRATION_LOCK_KEY = 0x736D732D626F74

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


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


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
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1", timeout=self._timeout)

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
