"""PostgreSQL backend: the store contract on the harness cluster, plus replica concerns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

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
from tests.store_contract import (  # noqa: E402
    T0,
    StoreContract,
    StoreFactory,
    add_alerts_then_sigkill,
    make_alert,
    make_incident,
    make_run,
)

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


async def test_alerts_stored_before_a_sigkill_are_there_after(pg_dsn: str) -> None:
    reported = await add_alerts_then_sigkill(pg_dsn, count=50)
    assert len(reported) == 50
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        assert await store.alert_events_pending() == 50
        claimed = await store.alert_events_claim(now=datetime.now(UTC), limit=100)
        assert [e.id for e in claimed] == reported
        assert [e.labels["i"] for e in claimed] == [str(i) for i in range(50)]
    finally:
        await store.close()


async def test_alert_and_incident_columns_are_jsonb_and_the_open_rule_is_an_index(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        await store.alert_events_add([make_alert("fp-J")], received_at=T0)
        await store.incident_open(make_incident("fp-J"))
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        types = {
            (r["table_name"], r["column_name"]): r["data_type"]
            for r in await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_name IN ('alert_events', 'incidents')"
                " AND column_name IN ('labels', 'annotations')"
            )
        }
        alertname = await conn.fetchval("SELECT labels->>'alertname' FROM alert_events")
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'incidents_open_fingerprint'"
        )
    finally:
        await conn.close()
    assert set(types.values()) == {"jsonb"} and len(types) == 4
    assert alertname == "BackendDown"
    assert "UNIQUE" in index and "WHERE" in index
