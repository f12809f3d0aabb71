"""A state store lost under a running ``sms-bot serve``: readiness and the webhook say 503.

The store is taken away the ways it happens: the SQLite file deleted or
overwritten, the PostgreSQL tables dropped or the server stopped. The bot
must stop promising (``/readyz`` 200, webhook 200 "stored") what it can no
longer keep, go on running, and not lose its background tasks to
"Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.harness.docker import free_port
from tests.harness.postgres import PgServer, start_cluster
from tests.harness.processes import stop_async
from tests.harness.serve_env import serve_env

pytestmark = pytest.mark.integration

SMS_BOT = str(Path(sys.executable).with_name("sms-bot"))
TOKEN = "alert-webhook-token-for-tests"
UNRETRIEVED = "Task exception was never retrieved"


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    url: str
    log: Path
    session: aiohttp.ClientSession

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.url}/readyz") as resp:
            return resp.status, await resp.json()

    async def deliver(self, fingerprint: str) -> tuple[int, dict[str, Any]]:
        now = datetime.now(UTC).isoformat()
        body = {
            "version": "4",
            "status": "firing",
            "receiver": "sms-bot",
            "groupKey": "{}",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "DiskSpace", "instance": fingerprint},
                    "annotations": {"summary": f"disk ({fingerprint})"},
                    "startsAt": now,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": fingerprint,
                }
            ],
        }
        async with self.session.post(
            f"{self.url}/alerts/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            return resp.status, await resp.json()


def _env(tmp_path: Path, *, state_url: str, port: int) -> dict[str, str]:
    return serve_env(
        tmp_path, BOT_PORT=str(port), BOT_STATE_URL=state_url, ALERT_WEBHOOK_TOKEN=TOKEN
    )


@contextlib.asynccontextmanager
async def _serve(tmp_path: Path, state_url: str) -> AsyncIterator[Served]:
    """``sms-bot serve`` on a free loopback port, ready; stopped with SIGTERM afterwards."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            SMS_BOT,
            "serve",
            env=_env(tmp_path, state_url=state_url, port=port),
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            served = Served(proc, f"http://127.0.0.1:{port}", log, session)
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, f"serve exited:\n{log.read_text()[-3000:]}"
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    if (await served.readyz())[0] == 200:
                        break
                assert time.monotonic() < deadline, "sms-bot serve did not become ready"
                await asyncio.sleep(0.1)
            yield served
    finally:
        await stop_async(proc, timeout=20)
        print(f"--- sms-bot serve output ---\n{log.read_text()[-5000:]}")  # shown on failure


async def _store_lost(
    served: Served, *, reason: str, while_running: Callable[[], Awaitable[None]] | None = None
) -> None:
    """What a lost store must look like from outside: 503 on both, and still running."""
    status, body = await served.readyz()
    assert status == 503, body
    assert reason in body["reason"]
    status, body = await served.deliver("after-loss")
    assert status == 503, body
    assert body["error"] == "the bot cannot keep alerts right now; retry"
    if while_running is not None:
        await while_running()
    # The background loops have had their turns against the lost store.
    await asyncio.sleep(2)
    assert served.proc.returncode is None, "serve died"
    assert (await served.readyz())[0] == 503


def _assert_clean_log(log: Path) -> None:
    # Tracebacks of failures the loops logged themselves are fine; a lost task is not.
    assert UNRETRIEVED not in log.read_text()


async def test_a_deleted_sqlite_file_is_a_503_and_serve_keeps_running(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    async with _serve(tmp_path, f"sqlite:///{state}") as served:
        assert (await served.deliver("before"))[0] == 200
        state.unlink()
        await _store_lost(served, reason=f"state file {state} was deleted while the bot ran")
    assert served.proc.returncode == 0
    _assert_clean_log(served.log)


async def test_an_overwritten_sqlite_file_is_a_503_and_serve_keeps_running(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    async with _serve(tmp_path, f"sqlite:///{state}") as served:
        assert (await served.deliver("before"))[0] == 200
        state.write_bytes(os.urandom(64 * 1024))  # in place: the same inode, now garbage
        await _store_lost(served, reason="is no longer an SQLite database")
    assert served.proc.returncode == 0
    _assert_clean_log(served.log)


async def _drop_schema(dsn: str) -> None:
    """Drop the bot's tables under it; the bot keeps writing, so a deadlock is retried."""
    conn = await asyncpg.connect(dsn)
    try:
        for attempt in range(10):
            try:
                await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                return
            except asyncpg.DeadlockDetectedError:
                if attempt == 9:
                    raise
    finally:
        await conn.close()


async def test_dropped_postgres_tables_are_a_503(tmp_path: Path, pg_dsn: str) -> None:
    async with _serve(tmp_path, pg_dsn) as served:
        assert (await served.deliver("before"))[0] == 200
        await _drop_schema(pg_dsn)
        await _store_lost(served, reason="does not exist")
    assert served.proc.returncode == 0
    _assert_clean_log(served.log)


async def test_a_stopped_postgres_server_is_a_503(tmp_path: Path) -> None:
    with contextlib.ExitStack() as cluster:
        # A cluster of its own: stopping the session's would take it from every other test.
        server: PgServer = await asyncio.to_thread(cluster.enter_context, start_cluster())
        dsn = await server.create_database("lost")
        async with _serve(tmp_path, dsn) as served:
            assert (await served.deliver("before"))[0] == 200
            await asyncio.to_thread(cluster.close)  # pg_ctl stop -m immediate, data removed
            await _store_lost(served, reason="PostgreSQL store")
    assert served.proc.returncode == 0
    _assert_clean_log(served.log)
