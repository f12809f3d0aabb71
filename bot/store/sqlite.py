"""SQLite store: the embedded default for a single replica.

The queries are in ``sql.py``; this is what only SQLite has. Why one
connection behind a lock: aiosqlite already runs every statement on a single
worker thread, and the lock keeps a multi-statement transaction (a migration,
a claim) from interleaving with another coroutine's statements on it. WAL lets
readers (``sqlite3`` on the command line, a backup) look while the bot writes.

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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.base import StoreUnavailable, check_leader_name, to_utc
from bot.store.migrations import MIGRATIONS, Migration
from bot.store.sql import Row, Store
from bot.store.url import MEMORY

__all__ = ["MEMORY", "SYNCHRONOUS", "SqliteStore", "leader_lock_path"]

BUSY_TIMEOUT_MS = 5000
# The first 16 bytes of every SQLite 3 database file.
_HEADER = b"SQLite format 3\x00"
SYNCHRONOUS = "FULL"  # see the module docstring


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


class _Session:
    """The connection, with times as fixed-width ISO text in UTC (text order is time order)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, /, **params: Any) -> list[Row]:
        # Stepped to the end in one call on the connection's thread: a statement
        # left part-read keeps a read snapshot open, and the next BEGIN IMMEDIATE
        # after another connection committed then fails with "database is locked"
        # without waiting. One call rather than execute, fetch and close: each is a
        # round trip to that thread (about 50 us), and the alert path runs dozens.
        return list(await self.conn.execute_fetchall(sql, _encode(params)))

    async def execute(self, sql: str, /, **params: Any) -> int:
        async with self.conn.execute(sql, _encode(params)) as cursor:
            return cursor.rowcount

    async def lock(self, key: int) -> None:
        """Nothing: every transaction here already holds the file's write lock."""


def _encode(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: to_utc(v).isoformat(timespec="microseconds") if isinstance(v, datetime) else v
        for k, v in params.items()
    }


class SqliteStore(Store):
    """``Store`` over one SQLite file (or ``:memory:``)."""

    DIALECT = "sqlite"
    SCHEMA_TABLE = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )

    def __init__(self, path: str, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        super().__init__(migrations)
        self.path = path
        self._where = f"SQLite store {path}"
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
            raise StoreUnavailable(f"cannot open {self._where}: {exc}") from exc
        db.row_factory = sqlite3.Row
        self._db = db
        try:
            await self._setup()
            if self.path != MEMORY:
                self._identity = await asyncio.to_thread(_identity, self.path)
        except BaseException:
            await self.close()
            raise

    async def _setup(self) -> None:
        """Pragmas and migrations, retried while another opener holds the file.

        SQLite answers "database is locked" without waiting for busy_timeout in a
        few cases (switching to WAL, or when waiting could deadlock), so processes
        starting together retry here, bounded; every step is safe to repeat.
        """
        async with self._session() as s:
            await s.fetch(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await s.execute("PRAGMA foreign_keys = ON")
            await s.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.01
        while True:
            try:
                if self.path != MEMORY:
                    await self._fetch("PRAGMA journal_mode = WAL")
                await self._migrate()
                return
            except StoreUnavailable as exc:
                cause = str(exc.__cause__)
                if "locked" not in cause and "busy" not in cause:
                    raise
                if time.monotonic() >= deadline:
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
                raise StoreUnavailable(f"closing {self._where} failed: {exc}") from exc

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        """The connection, serialised, with sqlite errors turned into ``StoreUnavailable``."""
        async with self._lock:
            db = self._open_db()
            try:
                yield _Session(db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self._where}: {exc}") from exc

    def _open_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable(f"{self._where} is not open")
        return self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Session]:
        """The connection inside ``BEGIN IMMEDIATE ... COMMIT``.

        Why IMMEDIATE: it takes the file's write lock before the first read, so
        a read-then-write (claim, coalesce, digest, migration) cannot interleave
        with another connection's, even from another process.

        A COMMIT that fails (a disk error, a file corrupted under the bot) is
        rolled back as well: left open, the transaction would make every later
        ``BEGIN`` fail with "cannot start a transaction within a transaction".
        """
        async with self._session() as session:
            conn = session.conn
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield session
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    # The first error is the one to report; a failed rollback adds nothing.
                    with contextlib.suppress(sqlite3.Error):
                        await conn.execute("ROLLBACK")
                raise

    async def ping(self) -> None:
        """The path is still the opened database file, and its tables answer a read.

        Cheap enough for every webhook delivery: one open and read of the file's
        first bytes, and one query served from the page cache.
        """
        if self._identity is not None:
            problem = await asyncio.to_thread(_file_problem, self.path, self._identity)
            if problem is not None:
                raise StoreUnavailable(problem)
        await self._ping_tables(self._where)

    # --- leadership -------------------------------------------------------

    async def leader_acquire(self, name: str) -> bool:
        check_leader_name(name)
        self._open_db()
        if name in self._leaders and await self.leader_check(name):
            return True
        if self.path == MEMORY:
            self._leaders[name] = None
            return True
        path = leader_lock_path(self.path, name)
        try:
            fd = _try_lock_file(path)
        except OSError as exc:
            raise StoreUnavailable(f"{self._where}: leader lock {path}: {exc}") from exc
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
