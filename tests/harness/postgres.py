"""PostgreSQL for tests: a throwaway cluster from the local binaries, or ``SMS_TEST_PG_DSN``.

Why a real server: the store's claims, advisory locks and the SMS adapter's
``pg_stat_activity`` queries only mean something against PostgreSQL itself.
The cluster is started once per session (initdb takes a second or two) and each
test gets its own empty database, so tests never see each other's rows.

Tests and CI run as root and PostgreSQL refuses to run as root, so the binaries
run as the ``postgres`` system user (or ``nobody``) in a temp dir chowned to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.harness.loopback import free_port

__all__ = [
    "PgHarnessError",
    "PgServer",
    "create_users",
    "pg_dsn",
    "pg_server",
    "sms_dsn",
    "start_cluster",
]

ENV_DSN = "SMS_TEST_PG_DSN"
READY_TIMEOUT_S = 30.0
_RUN_AS_CANDIDATES = ("postgres", "nobody")


class PgHarnessError(RuntimeError):
    """The harness could not provide a PostgreSQL server; the message says why."""


@dataclass
class PgServer:
    """A reachable PostgreSQL server and how to get fresh databases on it."""

    host: str
    port: int
    superuser_dsn: str
    data_dir: Path | None = None
    _created: list[str] = field(default_factory=list)

    def dsn_for(self, database: str) -> str:
        """The superuser DSN pointed at another database on the same server."""
        parts = urlsplit(self.superuser_dsn)
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))

    async def create_database(self, name_prefix: str = "t") -> str:
        """Create an empty database with a unique name and return its DSN."""
        name = f"{_safe_prefix(name_prefix)}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.superuser_dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"', timeout=30)
        finally:
            await conn.close(timeout=5)
        self._created.append(name)
        return self.dsn_for(name)

    async def drop_database(self, dsn: str) -> None:
        """Drop a database made by ``create_database``, kicking out leftover sessions."""
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.superuser_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        finally:
            await conn.close(timeout=5)
        with contextlib.suppress(ValueError):
            self._created.remove(name)

    def create_database_sync(self, name_prefix: str = "t") -> str:
        """``create_database`` for sync code; runs its own loop in a thread."""
        result: list[str] = []
        errors: list[BaseException] = []

        def target() -> None:
            try:
                result.append(asyncio.run(self.create_database(name_prefix)))
            except BaseException as exc:  # handed back to the caller below
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return result[0]


def _safe_prefix(prefix: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in prefix.lower())[:40]
    return cleaned or "t"


def _find_bindir() -> Path:
    """The newest installed PostgreSQL's bin dir (Debian layout, else ``pg_config``)."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version_key(path: str) -> tuple[int, ...]:
        version = Path(path).parent.parent.name
        return tuple(int(p) for p in version.split(".") if p.isdigit())

    if candidates:
        return Path(max(candidates, key=version_key)).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise PgHarnessError(
        "PostgreSQL binaries not found (looked in /usr/lib/postgresql/*/bin and pg_config "
        f"--bindir). Install postgresql or set {ENV_DSN} to a server's DSN."
    )


def _run_as() -> dict[str, Any]:
    """``subprocess`` kwargs to drop root; empty when we are not root."""
    if os.geteuid() != 0:
        return {}
    for name in _RUN_AS_CANDIDATES:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise PgHarnessError(
        "running as root and neither the 'postgres' nor the 'nobody' user exists; "
        f"PostgreSQL refuses to run as root. Set {ENV_DSN} instead."
    )


def _run(cmd: list[str], *, run_as: dict[str, Any], cwd: Path, timeout: float) -> None:
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=timeout,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        **run_as,
    )
    if proc.returncode != 0:
        raise PgHarnessError(
            f"{Path(cmd[0]).name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )


def _wait_ready(bindir: Path, *, port: int, sock_dir: Path, timeout: float) -> None:
    """Block until ``pg_isready`` answers over TCP, bounded by ``timeout``."""
    pg_isready = bindir / "pg_isready"
    if not pg_isready.exists():
        return  # pg_ctl -w already waited; nothing more to check with
    proc = subprocess.run(
        [str(pg_isready), "-h", "127.0.0.1", "-p", str(port), "-t", str(int(timeout))],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout + 5,
    )
    if proc.returncode != 0:
        raise PgHarnessError(
            f"PostgreSQL on 127.0.0.1:{port} not ready after {timeout}s "
            f"(pg_isready: {proc.stdout.strip()} {proc.stderr.strip()}); socket dir {sock_dir}"
        )


@contextlib.contextmanager
def start_cluster(*, ready_timeout: float = READY_TIMEOUT_S) -> Iterator[PgServer]:
    """Init, start and finally stop+delete a loopback-only throwaway cluster."""
    bindir = _find_bindir()
    run_as = _run_as()
    base = Path(tempfile.mkdtemp(prefix="sms-bot-pg-"))
    data, sock_dir, log = base / "data", base / "sock", base / "postgres.log"
    sock_dir.mkdir()
    if run_as:
        for path in (base, sock_dir):
            os.chown(path, run_as["user"], run_as["group"])
    started = False
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            run_as=run_as,
            cwd=base,
            timeout=120,
        )
        last_error: PgHarnessError | None = None
        for _attempt in range(3):  # the free port can be taken between probe and bind
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {sock_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            try:
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "start",
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(int(ready_timeout)),
                        "-o",
                        options,
                    ],
                    run_as=run_as,
                    cwd=base,
                    timeout=ready_timeout + 10,
                )
            except (PgHarnessError, subprocess.TimeoutExpired) as exc:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                last_error = PgHarnessError(f"pg_ctl start failed: {exc}\n{tail}")
                continue
            started = True
            _wait_ready(bindir, port=port, sock_dir=sock_dir, timeout=ready_timeout)
            yield PgServer(
                host="127.0.0.1",
                port=port,
                superuser_dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
                data_dir=data,
            )
            return
        assert last_error is not None
        raise last_error
    finally:
        if started:
            with contextlib.suppress(PgHarnessError, subprocess.TimeoutExpired):
                _run(
                    [str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                    run_as=run_as,
                    cwd=base,
                    timeout=60,
                )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL: ``SMS_TEST_PG_DSN`` if set, else a throwaway cluster."""
    external = os.environ.get(ENV_DSN, "").strip()
    if external:
        parts = urlsplit(external)
        yield PgServer(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            superuser_dsn=external,
        )
        return
    with start_cluster() as server:
        yield server


@pytest.fixture
async def pg_dsn(pg_server: PgServer, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    dsn = await pg_server.create_database(request.node.name)
    yield dsn
    await pg_server.drop_database(dsn)


async def create_users(dsn: str, *, count: int = 18) -> None:
    """Give the database at ``dsn`` the runbook's ``users`` table with ``count`` accounts.

    For the fixture below and for benches, which need an SMS database outside pytest.
    """
    emails = [(f"user{i}@school.edu",) for i in range(count)]
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL)")
        await conn.executemany("INSERT INTO users (email) VALUES ($1)", emails)
    finally:
        await conn.close(timeout=5)


@pytest.fixture
async def sms_dsn(pg_dsn: str) -> str:
    """A fresh SMS database as the runbook knows it: a ``users`` table with 18 accounts."""
    await create_users(pg_dsn)
    return pg_dsn
