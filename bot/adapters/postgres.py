"""The SMS database as a target the bot checks (not the bot's own store).

Why a connection per call: checks run a few times an hour, and a pooled
connection would sit in the very ``pg_stat_activity`` the bot reports on.
Every call connects with a bounded timeout, runs with a bounded timeout, and
turns asyncpg's many exceptions into four typed errors a procedure can show.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg

from bot.errors import AdapterError

__all__ = [
    "ActiveQuery",
    "CacheHit",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "DbCheck",
    "LockWait",
    "PoolState",
    "QueryFailed",
    "QueryTimeout",
    "SmsDatabase",
    "StatementStat",
    "UserCount",
]

NOT_CONFIGURED = "SMS_DATABASE_URL is not set"

# The runbook's daily check, verbatim.
COUNT_USERS_SQL = "SELECT COUNT(*) FROM users"
# The runbook's slow-query diagnosis, parameterised on the minimum age.
ACTIVE_QUERIES_SQL = (
    "SELECT pid, usename, state, query_start, now() - query_start AS age, query"
    " FROM pg_stat_activity"
    " WHERE state = 'active' AND query_start < now() - make_interval(secs => $1)"
    " AND pid <> pg_backend_pid()"
    " ORDER BY query_start"
)
# One backend by pid, whatever its state: is the query we saw still the one running?
BACKEND_SQL = (
    "SELECT pid, usename, state, query_start, now() - query_start AS age, query"
    " FROM pg_stat_activity"
    " WHERE pid = $1"
)
CHECK_SQL = (
    "SELECT current_setting('server_version') AS server_version,"
    " current_database() AS database,"
    " pg_database_size(current_database()) AS size_bytes,"
    " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())"
    " AS connections,"
    " current_setting('max_connections')::int AS max_connections"
)


class DatabaseError(AdapterError):
    """Something went wrong talking to the SMS database."""


class DatabaseUnavailable(DatabaseError):
    """Cannot connect: not configured, refused, auth failed, database missing, dropped."""


class QueryTimeout(DatabaseError):
    """A query ran past its timeout (and was cancelled)."""


class QueryFailed(DatabaseError):
    """The server answered with an error, e.g. a missing table."""


@dataclass(frozen=True)
class UserCount:
    """The daily check's answer: how many users, and how long it took."""

    count: int
    latency_ms: float


@dataclass(frozen=True)
class DbCheck:
    """``db check``: is the database there, how big, how busy."""

    server_version: str
    database: str
    size_bytes: int
    connections: int
    max_connections: int
    latency_ms: float


@dataclass(frozen=True)
class ActiveQuery:
    """One row of the slow-query diagnosis."""

    pid: int
    user: str
    state: str
    started_at: datetime | None
    duration_s: float
    query: str


# --- performance degradation (issue 11) ---------------------------------------------
POOL_SQL = (
    "SELECT coalesce(state, 'background') AS state, count(*) AS n,"
    " current_setting('max_connections')::int AS max_connections"
    " FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC"
)
CACHE_HIT_SQL = (
    "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
)
# Who waits, and for whom: pg_blocking_pids names the holders of what a waiter wants.
LOCK_WAITS_SQL = (
    "SELECT a.pid, pg_blocking_pids(a.pid) AS blocking, a.query,"
    " now() - a.query_start AS age,"
    " (SELECT string_agg(DISTINCT l.mode || ' on ' || coalesce(l.relation::regclass::text,"
    " l.locktype), ', ') FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) AS wants"
    " FROM pg_stat_activity a WHERE cardinality(pg_blocking_pids(a.pid)) > 0"
    " ORDER BY a.query_start"
)
HAS_STATEMENTS_SQL = "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
STATEMENTS_SQL = (
    "SELECT query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms"
    " FROM pg_stat_statements ORDER BY {order} DESC LIMIT $1"
)
# EXPLAIN of these only (never ANALYZE); anything else is not explained.
_EXPLAINABLE = ("select", "with", "insert", "update", "delete", "values")


@dataclass(frozen=True)
class PoolState:
    """Connections of the SMS database by state, and the server's ``max_connections``."""

    by_state: tuple[tuple[str, int], ...]
    max_connections: int

    @property
    def total(self) -> int:
        return sum(n for _s, n in self.by_state)


@dataclass(frozen=True)
class CacheHit:
    hits: int
    reads: int

    @property
    def ratio(self) -> float | None:
        total = self.hits + self.reads
        return self.hits / total if total else None


@dataclass(frozen=True)
class LockWait:
    """A backend waiting on a lock, and the pids holding what it waits for."""

    pid: int
    blocking: tuple[int, ...]
    query: str
    waiting_s: float
    wants: str


@dataclass(frozen=True)
class StatementStat:
    query: str
    calls: int
    total_ms: float
    mean_ms: float


def _redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Database(Protocol):
    """What procedures ask of the SMS database; ``SmsDatabase`` is the real one."""

    async def count_users(self) -> UserCount: ...

    async def check(self) -> DbCheck: ...

    async def active_queries(self, *, min_age_s: float = 5.0) -> list[ActiveQuery]: ...

    async def backend(self, pid: int) -> ActiveQuery | None: ...

    async def terminate(self, pid: int, *, query_start: datetime | None = None) -> bool: ...

    async def vacuum_analyze(self, *, timeout_s: float = 600.0) -> float: ...

    async def table_counts(self, tables: Sequence[str]) -> dict[str, int | None]: ...

    async def count_older(self, table: str, column: str, before: datetime) -> int | None: ...

    async def pool(self) -> PoolState: ...

    async def cache_hit(self) -> CacheHit: ...

    async def lock_waits(self) -> list[LockWait]: ...

    async def statements(
        self, *, order: str = "calls", limit: int = 5
    ) -> list[StatementStat] | None: ...

    async def explain(self, query: str) -> str: ...

    async def analyze(self, *, timeout_s: float = 600.0) -> float: ...


class SmsDatabase:
    """asyncpg client for the SMS PostgreSQL; ``dsn`` may be empty until it is needed."""

    def __init__(
        self, dsn: str, *, connect_timeout: float = 5.0, query_timeout: float = 10.0
    ) -> None:
        self._dsn = dsn.strip()
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout

    def __repr__(self) -> str:
        return f"SmsDatabase({_redact(self._dsn)!r})"

    @property
    def target(self) -> str:
        """Where this points, without the password (for messages)."""
        return _redact(self._dsn) if self._dsn else "(not configured)"

    async def close(self) -> None:
        """Nothing is held between calls; here so the app can own it like other adapters."""

    @asynccontextmanager
    async def _connect(self, limit_s: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        if not self._dsn:
            raise DatabaseUnavailable(NOT_CONFIGURED)
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the SMS database {self.target}: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise DatabaseUnavailable(
                f"connecting to the SMS database {self.target} timed out "
                f"after {self._connect_timeout:g}s"
            ) from exc
        limit = self._query_timeout if limit_s is None else limit_s
        try:
            yield conn
        except TimeoutError as exc:
            raise QueryTimeout(f"query on {self.target} timed out after {limit:g}s") from exc
        except asyncpg.QueryCanceledError as exc:
            raise QueryTimeout(f"query on {self.target} was cancelled: {exc}") from exc
        except asyncpg.UndefinedTableError as exc:
            raise QueryFailed(
                f"missing table in the SMS database {self.target}: {exc}. "
                "Is SMS_DATABASE_URL the right database, and has the schema been created?"
            ) from exc
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.AdminShutdownError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
            OSError,
        ) as exc:
            raise DatabaseUnavailable(
                f"lost the connection to the SMS database {self.target}: {exc}"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise QueryFailed(f"query on {self.target} failed: {exc}") from exc
        finally:
            await self._close_quietly(conn)

    async def _close_quietly(self, conn: asyncpg.Connection) -> None:
        """Close politely, or drop the socket if the server no longer answers."""
        try:
            await conn.close(timeout=self._connect_timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            conn.terminate()

    async def ping(self) -> float:
        """``SELECT 1``; returns the round-trip in milliseconds."""
        async with self._connect() as conn:
            start = time.perf_counter()
            await conn.fetchval("SELECT 1", timeout=self._query_timeout)
            return _elapsed_ms(start)

    async def count_users(self) -> UserCount:
        """The runbook's daily database check."""
        async with self._connect() as conn:
            start = time.perf_counter()
            count = await conn.fetchval(COUNT_USERS_SQL, timeout=self._query_timeout)
            return UserCount(count=int(count), latency_ms=_elapsed_ms(start))

    async def check(self) -> DbCheck:
        """Version, size and connection headroom, plus a ``SELECT 1`` latency."""
        async with self._connect() as conn:
            start = time.perf_counter()
            await conn.fetchval("SELECT 1", timeout=self._query_timeout)
            latency = _elapsed_ms(start)
            row = await conn.fetchrow(CHECK_SQL, timeout=self._query_timeout)
        assert row is not None  # a SELECT without FROM always returns one row
        return DbCheck(
            server_version=str(row["server_version"]),
            database=str(row["database"]),
            size_bytes=int(row["size_bytes"]),
            connections=int(row["connections"]),
            max_connections=int(row["max_connections"]),
            latency_ms=latency,
        )

    async def active_queries(self, *, min_age_s: float = 5.0) -> list[ActiveQuery]:
        """Queries active for longer than ``min_age_s``, oldest first (runbook, slow API)."""
        async with self._connect() as conn:
            rows = await conn.fetch(
                ACTIVE_QUERIES_SQL, float(min_age_s), timeout=self._query_timeout
            )
        return [_active_query(row) for row in rows]

    async def backend(self, pid: int) -> ActiveQuery | None:
        """The ``pg_stat_activity`` row of ``pid`` (any state), or None when it is gone.

        A pid can be reused by a later connection, so a caller deciding whether
        to act on a query compares ``started_at`` and ``state``, not just the pid.
        """
        async with self._connect() as conn:
            row = await conn.fetchrow(BACKEND_SQL, int(pid), timeout=self._query_timeout)
        return None if row is None else _active_query(row)

    async def terminate(self, pid: int, *, query_start: datetime | None = None) -> bool:
        """``pg_terminate_backend``; False when no such backend exists (already gone).

        With ``query_start`` the check and the termination are one statement: the
        backend is terminated only while it still runs the query started then, so a
        pid reused by another query in between is never hit.
        """
        async with self._connect() as conn:
            if query_start is None:
                result = await conn.fetchval(
                    "SELECT pg_terminate_backend($1)", int(pid), timeout=self._query_timeout
                )
            else:
                result = await conn.fetchval(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = $1 AND query_start = $2 AND state = 'active'",
                    int(pid),
                    query_start,
                    timeout=self._query_timeout,
                )
        return bool(result)

    async def table_counts(self, tables: Sequence[str]) -> dict[str, int | None]:
        """Rows in each table, None for a table the database does not have (capacity)."""
        counts: dict[str, int | None] = {}
        async with self._connect() as conn:
            for table in tables:
                exists = await conn.fetchval(
                    "SELECT to_regclass($1) IS NOT NULL", table, timeout=self._query_timeout
                )
                if not exists:
                    counts[table] = None
                    continue
                sql = f"SELECT count(*) FROM {_ident(table)}"  # noqa: S608 - a quoted identifier
                counts[table] = int(await conn.fetchval(sql, timeout=self._query_timeout))
        return counts

    async def count_older(self, table: str, column: str, before: datetime) -> int | None:
        """Rows whose ``column`` is before ``before`` (GDPR retention); None: no such table."""
        async with self._connect() as conn:
            exists = await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", table, timeout=self._query_timeout
            )
            if not exists:
                return None
            sql = f"SELECT count(*) FROM {_ident(table)} WHERE {_ident(column)} < $1"  # noqa: S608
            return int(await conn.fetchval(sql, before, timeout=self._query_timeout))

    async def vacuum_analyze(self, *, timeout_s: float = 600.0) -> float:
        """``VACUUM ANALYZE`` on the whole database; returns how long it took in seconds."""
        async with self._connect(timeout_s) as conn:
            start = time.perf_counter()
            await conn.execute("VACUUM ANALYZE", timeout=timeout_s)
            return time.perf_counter() - start

    # -- performance degradation (issue 11) ------------------------------------

    async def pool(self) -> PoolState:
        async with self._connect() as conn:
            rows = await conn.fetch(POOL_SQL, timeout=self._query_timeout)
            maximum = (
                rows[0]["max_connections"]
                if rows
                else await conn.fetchval(
                    "SELECT current_setting('max_connections')::int", timeout=self._query_timeout
                )
            )
        return PoolState(
            by_state=tuple((str(r["state"]), int(r["n"])) for r in rows),
            max_connections=int(maximum),
        )

    async def cache_hit(self) -> CacheHit:
        async with self._connect() as conn:
            row = await conn.fetchrow(CACHE_HIT_SQL, timeout=self._query_timeout)
        if row is None:
            return CacheHit(0, 0)
        return CacheHit(int(row["blks_hit"] or 0), int(row["blks_read"] or 0))

    async def lock_waits(self) -> list[LockWait]:
        async with self._connect() as conn:
            rows = await conn.fetch(LOCK_WAITS_SQL, timeout=self._query_timeout)
        return [
            LockWait(
                pid=int(r["pid"]),
                blocking=tuple(int(p) for p in r["blocking"] or ()),
                query=r["query"] or "",
                waiting_s=r["age"].total_seconds() if isinstance(r["age"], timedelta) else 0.0,
                wants=r["wants"] or "",
            )
            for r in rows
        ]

    async def statements(
        self, *, order: str = "calls", limit: int = 5
    ) -> list[StatementStat] | None:
        """Top statements from ``pg_stat_statements``; None when the extension is not there."""
        column = {"calls": "calls", "mean": "mean_exec_time"}[order]
        async with self._connect() as conn:
            if not await conn.fetchval(HAS_STATEMENTS_SQL, timeout=self._query_timeout):
                return None
            rows = await conn.fetch(
                STATEMENTS_SQL.format(order=column), int(limit), timeout=self._query_timeout
            )
        return [
            StatementStat(
                r["query"] or "", int(r["calls"]), float(r["total_ms"]), float(r["mean_ms"])
            )
            for r in rows
        ]

    async def explain(self, query: str) -> str:
        """``EXPLAIN`` (never ``ANALYZE``: that would run it) of one statement, read-only.

        A prepared statement takes one command only, so a text with a second
        statement fails instead of running it; the transaction is read-only and
        rolled back; statements that are not queries are refused.
        """
        text = query.strip().rstrip(";")
        if not text.lower().startswith(_EXPLAINABLE):
            raise QueryFailed("only SELECT, WITH, INSERT, UPDATE, DELETE and VALUES are explained")
        async with self._connect() as conn:
            tx = conn.transaction(readonly=True)
            await tx.start()
            try:
                rows = await conn.fetch(f"EXPLAIN {text}", timeout=self._query_timeout)
            finally:
                await tx.rollback()
        return "\n".join(str(r[0]) for r in rows)

    async def analyze(self, *, timeout_s: float = 600.0) -> float:
        """``ANALYZE`` (update statistics) on the whole database; seconds it took."""
        async with self._connect(timeout_s) as conn:
            start = time.perf_counter()
            await conn.execute("ANALYZE", timeout=timeout_s)
            return time.perf_counter() - start


def _ident(name: str) -> str:
    """A (schema-qualified) name as quoted SQL identifiers: names come from configuration."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _active_query(row: asyncpg.Record) -> ActiveQuery:
    age = row["age"]
    duration = age.total_seconds() if isinstance(age, timedelta) else 0.0
    return ActiveQuery(
        pid=int(row["pid"]),
        user=row["usename"] or "",
        state=row["state"] or "",
        started_at=row["query_start"],
        duration_s=duration,
        query=row["query"] or "",
    )
