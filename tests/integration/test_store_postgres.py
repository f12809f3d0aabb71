"""PostgreSQL backend: the store contract on the harness cluster, plus replica concerns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

# The contract lives outside a test_*.py file; have pytest rewrite its asserts too.
pytest.register_assert_rewrite("tests.store_contract")

from bot.store import (  # noqa: E402
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    PostgresStore,
    Store,
    StoreUnavailable,
    open_store,
)
from tests.harness.postgres import PgServer  # noqa: E402
from tests.store_contract import StoreContract, StoreFactory, make_run  # noqa: E402

pytestmark = pytest.mark.integration


class TestPostgresContract(StoreContract):
    @pytest.fixture
    def make_store(self, pg_dsn: str) -> StoreFactory:
        def factory(migrations: Sequence[Migration] = MIGRATIONS) -> Store:
            return PostgresStore(pg_dsn, migrations=migrations)

        return factory


async def test_open_store_picks_postgres_for_both_schemes(pg_dsn: str) -> None:
    for url in (pg_dsn, pg_dsn.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            await store.ping()
            assert await store.schema_version() == LATEST_VERSION
        finally:
            await store.close()


async def test_many_replicas_opening_together_record_each_migration_once(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(6)]
    try:
        results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        assert results == [None] * 6
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))


async def test_timestamps_are_timestamptz_in_the_database(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        run = make_run()
        await store.start_run(run)
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("SET TIME ZONE 'America/New_York'")
        at = await conn.fetchval("SELECT started_at FROM runs WHERE id = $1", run.id)
    finally:
        await conn.close()
    assert at == run.started_at


async def test_unreachable_server_is_unavailable_quickly() -> None:
    store = open_store("postgresql://sms:secret@127.0.0.1:1/x")
    async with asyncio.timeout(15):
        with pytest.raises(StoreUnavailable) as info:
            await store.open()
    assert "secret" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()


async def test_missing_database_is_unavailable(pg_server: PgServer) -> None:
    store = open_store(pg_server.dsn_for("no_such_database_here"))
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert isinstance(info.value.__cause__, asyncpg.InvalidCatalogNameError)


async def test_database_dropped_under_the_store_is_unavailable(
    pg_server: PgServer, pg_dsn: str
) -> None:
    store = PostgresStore(pg_dsn, connect_timeout=2, query_timeout=2)
    await store.open()
    try:
        await store.ping()
        await pg_server.drop_database(pg_dsn)
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()
