"""SmsDatabase against a real PostgreSQL: the runbook's checks and their failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bot.adapters.postgres import (
    ActiveQuery,
    DatabaseError,
    DatabaseUnavailable,
    QueryFailed,
    QueryTimeout,
    SmsDatabase,
)
from bot.errors import AdapterError
from tests.harness.postgres import PgServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def users_dsn(pg_dsn: str) -> str:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE users (id SERIAL PRIMARY KEY, email TEXT NOT NULL)")
        await conn.executemany(
            "INSERT INTO users (email) VALUES ($1)", [(f"s{i}@school.test",) for i in range(7)]
        )
    finally:
        await conn.close()
    return pg_dsn


@pytest.fixture
async def sleeper(pg_dsn: str) -> AsyncIterator[tuple[int, asyncio.Task[object]]]:
    """A second session running ``pg_sleep(30)``; killed at teardown whatever happens."""
    conn = await asyncpg.connect(pg_dsn)
    pid = conn.get_server_pid()
    task: asyncio.Task[object] = asyncio.create_task(conn.fetchval("SELECT pg_sleep(30)"))
    yield pid, task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError, asyncpg.InterfaceError):
        await task
    conn.terminate()


async def test_count_users(users_dsn: str) -> None:
    result = await SmsDatabase(users_dsn).count_users()
    assert result.count == 7
    assert result.latency_ms >= 0


async def test_missing_users_table_is_query_failed(pg_dsn: str) -> None:
    with pytest.raises(QueryFailed, match="missing table") as info:
        await SmsDatabase(pg_dsn).count_users()
    assert 'relation "users" does not exist' in str(info.value)
    assert isinstance(info.value.__cause__, asyncpg.UndefinedTableError)


async def test_check_fields(pg_server: PgServer, pg_dsn: str) -> None:
    result = await SmsDatabase(pg_dsn).check()
    assert result.database == pg_dsn.rsplit("/", 1)[1]
    assert result.server_version.split(".")[0].isdigit()
    assert result.size_bytes > 1_000_000  # even an empty database is several MB
    assert result.connections >= 1  # at least the checking session itself
    assert result.max_connections >= result.connections
    assert result.latency_ms >= 0


async def test_ping(pg_dsn: str) -> None:
    assert await SmsDatabase(pg_dsn).ping() >= 0


async def test_slow_query_is_listed_then_terminated(
    pg_dsn: str, sleeper: tuple[int, asyncio.Task[object]]
) -> None:
    pid, task = sleeper
    db = SmsDatabase(pg_dsn)
    found: list[ActiveQuery] = []
    async with asyncio.timeout(20):
        while not found:
            found = [q for q in await db.active_queries(min_age_s=1) if q.pid == pid]
            if not found:
                await asyncio.sleep(0.2)
    (query,) = found
    assert "pg_sleep(30)" in query.query
    assert query.state == "active"
    assert query.user == "postgres"
    assert query.duration_s >= 1
    assert query.started_at is not None and query.started_at < datetime.now(UTC)

    assert await db.terminate(pid) is True
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        async with asyncio.timeout(10):
            await task
    # The backend exits asynchronously after the signal; wait (bounded) until it is gone.
    async with asyncio.timeout(10):
        while [q for q in await db.active_queries(min_age_s=0) if q.pid == pid]:
            await asyncio.sleep(0.1)


async def test_terminate_only_the_query_that_was_shown(
    pg_dsn: str, sleeper: tuple[int, asyncio.Task[object]]
) -> None:
    pid, task = sleeper
    db = SmsDatabase(pg_dsn)
    current = None
    async with asyncio.timeout(20):
        while current is None or current.state != "active":
            current = await db.backend(pid)
            await asyncio.sleep(0.1)
    assert current.started_at is not None
    # Another query under the same pid (a different start): nothing is terminated.
    other = current.started_at - timedelta(seconds=5)
    assert await db.terminate(pid, query_start=other) is False
    assert not task.done()
    assert await db.terminate(pid, query_start=current.started_at) is True
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        async with asyncio.timeout(10):
            await task


async def test_young_queries_are_not_slow(
    pg_dsn: str, sleeper: tuple[int, asyncio.Task[object]]
) -> None:
    pid, _ = sleeper
    listed = await SmsDatabase(pg_dsn).active_queries(min_age_s=3600)
    assert [q for q in listed if q.pid == pid] == []


async def test_terminate_unknown_pid_is_false(pg_dsn: str) -> None:
    assert await SmsDatabase(pg_dsn).terminate(2_000_000_000) is False


async def test_vacuum_analyze(users_dsn: str) -> None:
    assert await SmsDatabase(users_dsn).vacuum_analyze() >= 0


async def test_query_timeout(pg_dsn: str) -> None:
    db = SmsDatabase(pg_dsn, query_timeout=0.5)
    conn = await asyncpg.connect(pg_dsn)
    try:
        # Hold a lock the count needs, so the count blocks past its timeout.
        await conn.execute("CREATE TABLE users (id INT)")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(QueryTimeout, match="timed out"):
            await db.count_users()
        await tx.rollback()
    finally:
        await conn.close()


async def test_unreachable_server_is_unavailable_quickly() -> None:
    db = SmsDatabase("postgresql://sms:hunter2@127.0.0.1:1/student_management")
    async with asyncio.timeout(10):
        with pytest.raises(DatabaseUnavailable) as info:
            await db.count_users()
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(db)
    assert isinstance(info.value.__cause__, OSError)


async def test_missing_database_is_unavailable(pg_server: PgServer) -> None:
    db = SmsDatabase(pg_server.dsn_for("student_management_missing"))
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        await db.check()


@pytest.mark.parametrize("dsn", ["", "   "])
async def test_empty_dsn_fails_at_call_time(dsn: str) -> None:
    db = SmsDatabase(dsn)  # constructing is fine: the bot starts without a target DB
    assert db.target == "(not configured)"
    with pytest.raises(DatabaseUnavailable, match="SMS_DATABASE_URL is not set"):
        await db.count_users()


def test_error_tree() -> None:
    for cls in (DatabaseUnavailable, QueryTimeout, QueryFailed):
        assert issubclass(cls, DatabaseError)
    assert issubclass(DatabaseError, AdapterError)
