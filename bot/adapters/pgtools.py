"""PostgreSQL client tools and database-level operations, for the restore.

Why a separate adapter from ``SmsDatabase``: a restore works on databases,
not in one. It runs ``pg_dump`` and ``psql`` as child processes and creates,
renames and drops databases from the server's maintenance database.

Child processes are started with ``asyncio.create_subprocess_exec`` and an
argument list (no shell ever parses anything), every wait is bounded, a
process that overruns is killed, and the password travels in ``PGPASSWORD``
in the child's environment, never on its command line (where ``ps`` shows
it). Database names are quoted as identifiers by PostgreSQL itself
(``quote_ident``); the names come from code and the configured DSN, never
from chat. Failures are this module's typed errors, chained ``from`` the
original.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg

from bot.adapters.restore_check import RestoreCheckFailed, find_pg_binary
from bot.errors import AdapterError

__all__ = [
    "DbTarget",
    "PgToolError",
    "PgToolFailed",
    "PgToolMissing",
    "PgToolTimeout",
    "PgTools",
    "RoleRights",
]

# The maintenance databases tried, in order, for CREATE/ALTER/DROP DATABASE.
_MAINTENANCE_DBS = ("postgres", "template1")
_STDERR_KEEP = 4000
_KILL_WAIT_S = 5.0
# How many times terminate-then-rename is tried while clients reconnect.
_RENAME_ATTEMPTS = 5
_RENAME_PAUSE_S = 0.5
# libpq settings a DSN's query string may carry, passed as environment variables.
_PARAM_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}

_TABLES_SQL = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)


class PgToolError(AdapterError):
    """A PostgreSQL tool or database-level operation failed."""


class PgToolMissing(PgToolError):
    """``pg_dump`` or ``psql`` is not installed where the bot looks."""


class PgToolFailed(PgToolError):
    """A tool exited with an error; the message carries the end of its stderr."""


class PgToolTimeout(PgToolError):
    """A tool ran past its time limit and was killed."""


@dataclass(frozen=True)
class DbTarget:
    """Where the SMS database is, split out of ``SMS_DATABASE_URL``."""

    host: str
    port: int
    user: str
    password: str
    database: str
    params: dict[str, str]

    @classmethod
    def parse(cls, dsn: str) -> DbTarget:
        parts = urlsplit(dsn.strip())
        if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
            raise PgToolError("SMS_DATABASE_URL is not a postgresql://... URL naming a database")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            host=parts.hostname or query.get("host", "localhost"),
            port=parts.port or int(query.get("port", "5432")),
            user=unquote(parts.username or "") or os.environ.get("USER", "postgres"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")),
            params=query,
        )


@dataclass(frozen=True)
class RoleRights:
    """May the configured role create databases, and does it own the SMS database?"""

    role: str
    can_create: bool
    superuser: bool
    owner: str

    @property
    def enough(self) -> bool:
        return self.superuser or (self.can_create and self.owner == self.role)


class PgTools:
    """``pg_dump``/``psql`` and database operations against ``SMS_DATABASE_URL``'s server."""

    def __init__(
        self,
        dsn: str,
        *,
        bin_dir: str = "",
        connect_timeout: float = 5.0,
        query_timeout: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._bin_dir = bin_dir.strip()
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout

    @property
    def target(self) -> DbTarget:
        return DbTarget.parse(self._dsn)

    # -- the client tools --------------------------------------------------

    def binary(self, tool: str) -> str:
        """The path of ``tool``: in ``SMS_PG_BIN_DIR`` when set, else on ``PATH`` or Debian's."""
        try:
            return find_pg_binary(tool, self._bin_dir)
        except RestoreCheckFailed as exc:
            raise PgToolMissing(str(exc)) from exc

    async def version(self, tool: str) -> str:
        out = await self._exec([self.binary(tool), "--version"], timeout_s=10)
        return out.strip()

    async def dump(self, path: Path, *, timeout_s: float) -> None:
        """``pg_dump`` of the SMS database to ``path`` as plain SQL."""
        t = self.target
        argv = [self.binary("pg_dump"), *self._conn_args(t, t.database)]
        argv += ["--format=plain", "--no-password", "--file", str(path)]
        await self._exec(argv, timeout_s=timeout_s)

    async def load(self, database: str, path: Path, *, timeout_s: float) -> str:
        """Replay a plain dump into ``database`` in one transaction, stopping at the first error."""
        argv = [self.binary("psql"), *self._conn_args(self.target, database)]
        argv += [
            "--no-password",
            "--no-psqlrc",
            "--quiet",
            "--single-transaction",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(path),
        ]
        return await self._exec(argv, timeout_s=timeout_s)

    def _conn_args(self, t: DbTarget, database: str) -> list[str]:
        return ["-h", t.host, "-p", str(t.port), "-U", t.user, "-d", database]

    def _env(self) -> dict[str, str]:
        t = self.target
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = t.password
        env["PGCONNECT_TIMEOUT"] = str(max(1, int(self._connect_timeout)))
        env["LC_MESSAGES"] = "C"
        for param, var in _PARAM_ENV.items():
            if param in t.params:
                env[var] = t.params[param]
        return env

    async def _exec(self, argv: Sequence[str], *, timeout_s: float) -> str:
        """Run one tool; its stdout, or a typed error with the end of its stderr."""
        name = Path(argv[0]).name
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env(),
            )
        except OSError as exc:
            raise PgToolMissing(f"cannot start {name}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
        except TimeoutError as exc:
            proc.kill()
            with suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=_KILL_WAIT_S)
            raise PgToolTimeout(f"{name} did not finish within {timeout_s:g} s") from exc
        text = err.decode("utf-8", errors="replace").strip()
        if proc.returncode != 0:
            tail = text[-_STDERR_KEEP:] or "(no error output)"
            raise PgToolFailed(f"{name} exited with code {proc.returncode}: {tail}")
        return out.decode("utf-8", errors="replace")

    # -- database-level operations ------------------------------------------

    def _dsn_for(self, database: str) -> str:
        parts = urlsplit(self._dsn.strip())
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))

    async def _open(self, database: str) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self._dsn_for(database), timeout=self._connect_timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise PgToolError(f"cannot connect to database {database}: {exc}") from exc

    @asynccontextmanager
    async def _guard(self, conn: asyncpg.Connection, what: str) -> AsyncIterator[None]:
        """Translate driver errors, and always close the connection."""
        try:
            yield
        except TimeoutError as exc:
            raise PgToolError(f"{what}: timed out") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise PgToolError(f"{what}: {exc}") from exc
        finally:
            try:
                await conn.close(timeout=self._connect_timeout)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                conn.terminate()

    @asynccontextmanager
    async def _connect(self, database: str) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._open(database)
        async with self._guard(conn, f"database {database}"):
            yield conn

    @asynccontextmanager
    async def _admin(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection to a maintenance database of the same server, same role."""
        conn: asyncpg.Connection | None = None
        errors: list[str] = []
        for database in _MAINTENANCE_DBS:
            try:
                conn = await self._open(database)
                break
            except PgToolError as exc:
                errors.append(str(exc))
        if conn is None:
            raise PgToolError("; ".join(errors))
        async with self._guard(conn, "server"):
            yield conn

    async def rights(self) -> RoleRights:
        """What the configured role may do: ``CREATEDB``, superuser, owner of the SMS database."""
        t = self.target
        async with self._admin() as conn:
            row = await conn.fetchrow(
                "SELECT current_user AS role, r.rolcreatedb, r.rolsuper,"
                " (SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = $1)"
                " AS owner FROM pg_roles r WHERE r.rolname = current_user",
                t.database,
                timeout=self._query_timeout,
            )
        if row is None:
            raise PgToolError("the configured role is not in pg_roles")
        return RoleRights(
            role=str(row["role"]),
            can_create=bool(row["rolcreatedb"]),
            superuser=bool(row["rolsuper"]),
            owner=str(row["owner"] or ""),
        )

    async def exists(self, database: str) -> bool:
        async with self._admin() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", database, timeout=10
            )
        return found is not None

    async def create_database(self, database: str) -> None:
        async with self._admin() as conn:
            name = await _ident(conn, database)
            await conn.execute(f"CREATE DATABASE {name}", timeout=self._query_timeout)

    async def drop_database(self, database: str) -> None:
        async with self._admin() as conn:
            await _terminate(conn, database)
            name = await _ident(conn, database)
            await conn.execute(f"DROP DATABASE IF EXISTS {name}", timeout=self._query_timeout)

    async def terminate_sessions(self, database: str) -> int:
        """End every other session on ``database``; how many were ended."""
        async with self._admin() as conn:
            return await _terminate(conn, database)

    async def rename_pair(self, renames: Sequence[tuple[str, str]]) -> int:
        """Rename databases in order, in one transaction, ending their sessions first.

        Clients may reconnect between the termination and the rename (the
        rename then fails with "being accessed by other users"): the whole
        transaction is retried a few times. Returns how many sessions were ended.
        """
        ended = 0
        async with self._admin() as conn:
            for attempt in range(_RENAME_ATTEMPTS):
                try:
                    async with conn.transaction():
                        for old, new in renames:
                            ended += await _terminate(conn, old)
                            a, b = await _ident(conn, old), await _ident(conn, new)
                            await conn.execute(
                                f"ALTER DATABASE {a} RENAME TO {b}", timeout=self._query_timeout
                            )
                    return ended
                except asyncpg.ObjectInUseError:
                    if attempt == _RENAME_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(_RENAME_PAUSE_S)
        return ended

    async def table_counts(self, database: str) -> dict[str, int]:
        """Every user table of ``database`` and its exact row count."""
        async with self._connect(database) as conn:
            names = [r["name"] for r in await conn.fetch(_TABLES_SQL, timeout=10)]
            counts: dict[str, int] = {}
            for name in names:
                # ``name`` was quoted by quote_ident above.
                counts[name] = int(
                    await conn.fetchval(
                        f"SELECT count(*) FROM {name}",  # noqa: S608 (quote_ident'ed name)
                        timeout=self._query_timeout,
                    )
                )
        return counts


async def _ident(conn: asyncpg.Connection, name: str) -> str:
    return str(await conn.fetchval("SELECT quote_ident($1)", name, timeout=10))


async def _terminate(conn: asyncpg.Connection, database: str) -> int:
    rows = await conn.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
        timeout=10,
    )
    if rows:
        # Terminated backends leave pg_stat_activity shortly after; wait for that.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
                " AND pid <> pg_backend_pid()",
                database,
                timeout=10,
            )
            if not left:
                break
            await asyncio.sleep(0.1)
    return len(rows)
