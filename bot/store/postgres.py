"""PostgreSQL store: for several replicas sharing one state.

The queries are in ``sql.py``; this is what only PostgreSQL has: a pool,
``$1`` placeholders, ``FOR UPDATE SKIP LOCKED`` in the claims, advisory locks.

Why an advisory lock around migrations: replicas started together would
otherwise race to create the same tables. ``pg_advisory_xact_lock`` is taken
first in each migration's transaction, so the second replica waits, then sees
the version recorded and skips it. Every query carries a timeout so a stuck
database turns ``/readyz`` red instead of hanging a handler.

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
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg

from bot.store.base import StoreUnavailable, check_leader_name, to_utc
from bot.store.migrations import MIGRATIONS, Migration
from bot.store.sql import Row, Store
from bot.store.url import redact_dsn

__all__ = ["LEADER_CHECK_TIMEOUT_S", "PostgresStore", "leader_lock_key"]

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
# A :name parameter (not a ::type cast).
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def leader_lock_key(name: str) -> int:
    """The advisory lock key for leadership ``name``: stable across processes and versions.

    Why not ``hashtext``: it is an undocumented internal whose result changed
    between PostgreSQL versions; replicas must agree on the key whatever server
    or Python they run.
    """
    digest = hashlib.blake2b(f"sms-bot leader:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@lru_cache(maxsize=512)
def _compile(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` placeholders as asyncpg's ``$1``, and the names in ``$`` order."""
    # A dict, not a list's index(): a multi-row insert has thousands of names.
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match[1], len(names) + 1)}"

    return _PARAM.sub(number, sql), tuple(names)


class _Session:
    """A pooled connection; times go to ``timestamptz`` as aware UTC datetimes."""

    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy[Any]) -> None:
        self.conn = conn

    def _args(self, sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
        if not params:  # DDL and fixed statements go as written
            return sql, []
        query, names = _compile(sql)
        values = [params[n] for n in names]
        return query, [to_utc(v) if isinstance(v, datetime) else v for v in values]

    async def fetch(self, sql: str, /, **params: Any) -> list[Row]:
        query, args = self._args(sql, params)
        return list(await self.conn.fetch(query, *args))

    async def execute(self, sql: str, /, **params: Any) -> int:
        query, args = self._args(sql, params)
        status = await self.conn.execute(query, *args)  # e.g. "UPDATE 1", "INSERT 0 1"
        count = status.rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def lock(self, key: int) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock($1)", key)


class PostgresStore(Store):
    """``Store`` over an asyncpg pool."""

    DIALECT = "postgres"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    SCHEMA_TABLE = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )

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
        super().__init__(migrations)
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._timeout = query_timeout
        # Leadership's quick round-trips: a leader that cannot answer this fast is lost.
        self._quick = min(LEADER_CHECK_TIMEOUT_S, query_timeout)
        self._where = f"PostgreSQL store {redact_dsn(dsn)}"  # errors name it, password hidden
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
            # command_timeout bounds every query: a stuck database turns /readyz
            # red instead of hanging a handler.
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                command_timeout=self._timeout,
            )
        except _CONNECT_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to {self._where}: {exc}") from exc
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
    async def _session(self) -> AsyncIterator[_Session]:
        """A pooled connection, with driver errors turned into ``StoreUnavailable``."""
        pool = self._open_pool()
        try:
            async with pool.acquire(timeout=self._connect_timeout) as conn:
                yield _Session(conn)
        except _DB_ERRORS as exc:
            raise StoreUnavailable(f"{self._where}: {type(exc).__name__}: {exc}") from exc

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable(f"{self._where} is not open")
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Session]:
        async with self._session() as session, session.conn.transaction():
            yield session

    async def ping(self) -> None:
        """A real read of the bot's tables, bounded as a whole.

        ``SELECT 1`` answers even when the bot's schema was dropped or the
        tables emptied; reading them fails then, as the next write would.
        The bound covers waiting for a pooled connection as well as the query.
        """
        try:
            async with asyncio.timeout(self._timeout):
                await self._ping_tables(self._where)
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"{self._where} did not answer within {self._timeout:g} s"
            ) from exc

    # --- leadership -------------------------------------------------------

    async def leader_acquire(self, name: str) -> bool:
        check_leader_name(name)
        self._open_pool()
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
                        timeout=self._quick,
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
                timeout=self._quick,
            )
        except _DB_ERRORS:
            conn.terminate()  # gone already, or unresponsive: dropping it frees the lock
            return
        await self._close_leader_conn(conn)

    async def _close_leader_conn(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=self._quick)
        except _DB_ERRORS:
            conn.terminate()

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"{self._where}: {what}: {type(exc).__name__}: {exc}")
