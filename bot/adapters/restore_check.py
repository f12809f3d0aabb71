"""A test restore: a backup loaded into a throwaway database, counted, and dropped.

The runbook's monthly "Validate backup integrity" is proven only by restoring.
The newest backup is loaded with ``psql --single-transaction`` (all or
nothing, stopping at the first error) into ``sms_restore_check_<random>`` on
the SMS database server, its tables' row counts are compared with the live
database, and the database is dropped again whatever happened. The live
database is never written to.

Self-contained on purpose: the restore procedure (issue 11) should share
``find_pg_binary`` and ``psql_target`` rather than grow its own.
"""

from __future__ import annotations

import asyncio
import glob
import gzip
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from bot.errors import AdapterError

__all__ = [
    "THROWAWAY_PREFIX",
    "RestoreCheck",
    "RestoreCheckFailed",
    "find_pg_binary",
    "psql_target",
    "restore_and_count",
    "table_counts",
]

THROWAWAY_PREFIX = "sms_restore_check_"
_COUNTS_SQL = (
    "SELECT table_schema || '.' || table_name FROM information_schema.tables"
    " WHERE table_type = 'BASE TABLE'"
    " AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


class RestoreCheckFailed(AdapterError):
    """The test restore could not be made (no psql, no database, the backup failed to load)."""


@dataclass(frozen=True)
class RestoreCheck:
    """What the test restore found: per table, rows restored and rows live."""

    database: str  # the throwaway database, dropped by now
    duration_s: float
    restored: Mapping[str, int]
    live: Mapping[str, int | None]  # None: the table is not in the live database


def find_pg_binary(name: str, configured_dir: str = "") -> str:
    """``name`` (psql, pg_dump...) from the configured folder, the PATH, or Debian's folders."""
    if configured_dir:
        path = Path(configured_dir) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise RestoreCheckFailed(f"{name} not found in {configured_dir} (SMS_PG_BIN_DIR)")
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1]
    raise RestoreCheckFailed(
        f"{name} is not on the PATH: install the PostgreSQL client or set SMS_PG_BIN_DIR"
    )


def psql_target(dsn: str, database: str) -> tuple[str, dict[str, str]]:
    """``dsn`` pointed at ``database``, without its password (which goes in PGPASSWORD).

    So the password never appears in a process list.
    """
    parts = urlsplit(dsn)
    env: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if password:
            env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, "")), env


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows in every user table of the connected database."""
    names = [r[0] for r in await conn.fetch(_COUNTS_SQL)]
    counts = {}
    for name in names:
        schema, table = name.split(".", 1)
        quoted = f'"{schema.replace(chr(34), chr(34) * 2)}"."{table.replace(chr(34), chr(34) * 2)}"'
        counts[name] = int(await conn.fetchval(f"SELECT count(*) FROM {quoted}"))  # noqa: S608
    return counts


async def _load(
    psql: str, target: str, env: Mapping[str, str], backup: Path, timeout_s: float
) -> None:
    """``psql --single-transaction -v ON_ERROR_STOP=1`` with the backup (gunzipped) on stdin."""
    data = await asyncio.to_thread(
        lambda: (
            gzip.decompress(backup.read_bytes())
            if backup.name.endswith(".gz")
            else backup.read_bytes()
        )
    )
    proc = await asyncio.create_subprocess_exec(
        psql,
        "--single-transaction",
        "--no-psqlrc",
        "--quiet",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        target,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(data), timeout=timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RestoreCheckFailed(f"psql did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise RestoreCheckFailed(f"psql failed (exit {proc.returncode}): {' '.join(tail)}")


async def restore_and_count(
    dsn: str, backup: Path, *, bin_dir: str = "", timeout_s: float = 900.0
) -> RestoreCheck:
    """Restore ``backup`` into a throwaway database beside ``dsn``'s, count, drop it."""
    psql = find_pg_binary("psql", bin_dir)
    database = THROWAWAY_PREFIX + uuid.uuid4().hex[:12]
    try:
        admin = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise RestoreCheckFailed(f"cannot connect to the SMS database: {exc}") from exc
    t0 = time.monotonic()
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        except asyncpg.PostgresError as exc:
            raise RestoreCheckFailed(f"cannot create {database}: {exc}") from exc
        try:
            target, env = psql_target(dsn, database)
            await _load(psql, target, env, backup, timeout_s)
            duration = time.monotonic() - t0
            restored_conn = await asyncpg.connect(
                urlunsplit(urlsplit(dsn)._replace(path=f"/{database}")), timeout=10
            )
            try:
                restored = await table_counts(restored_conn)
            finally:
                await restored_conn.close()
            live_all = await table_counts(admin)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    live = {name: live_all.get(name) for name in restored}
    return RestoreCheck(database=database, duration_s=duration, restored=restored, live=live)
