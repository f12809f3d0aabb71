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
from bot.store.postgres import leader_lock_key  # noqa: E402
from tests.harness.postgres import PgServer  # noqa: E402
from tests.store_contract import (  # noqa: E402
    JOB,
    LEADER,
    SLOT,
    T0,
    FixtureLoader,
    StoreContract,
    StoreFactory,
    add_alerts_then_sigkill,
    make_alert,
    make_incident,
    make_run,
)
from tests.store_fixtures import FIXTURES  # noqa: E402

pytestmark = pytest.mark.integration


class TestPostgresContract(StoreContract):
    @pytest.fixture
    def make_store(self, pg_dsn: str) -> StoreFactory:
        def factory(migrations: Sequence[Migration] = MIGRATIONS) -> Store:
            return PostgresStore(pg_dsn, migrations=migrations)

        return factory

    @pytest.fixture
    def load_fixture(self, pg_server: PgServer) -> FixtureLoader:
        async def load(version: int) -> Store:
            dsn = await pg_server.create_database(f"v{version}")
            conn = await asyncpg.connect(dsn)
            try:  # a plain pg_dump of a database the previous store made
                await conn.execute((FIXTURES / f"store_v{version}.postgres.sql").read_text())
            finally:
                await conn.close()
            return PostgresStore(dsn)

        return load


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


# Who holds a leadership lock, seen from outside: pg_locks shows a bigint key as
# its high half (classid) and low half (objid).
_LOCK_HOLDERS = (
    "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.classid = $1 AND l.objid = $2 AND l.database ="
    " (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def lock_holders(admin: asyncpg.Connection, name: str) -> list[tuple[int, str]]:
    key = leader_lock_key(name)
    rows = await admin.fetch(_LOCK_HOLDERS, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
    return [(r["pid"], r["application_name"]) for r in rows]


def test_leader_lock_key_is_a_stable_signed_bigint() -> None:
    key = leader_lock_key(LEADER)
    assert key == leader_lock_key(LEADER)
    assert -(2**63) <= key < 2**63
    assert key != leader_lock_key("sms-bot-other")
    # Pinned: every replica, whatever its version, must compute the same key.
    assert leader_lock_key("sms-bot-scheduler") == -2369520572419102512


async def test_leader_holds_the_lock_on_its_own_connection_not_the_pool(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, min_size=1, max_size=1)
    admin = await asyncpg.connect(pg_dsn)
    await store.open()
    try:
        assert await lock_holders(admin, LEADER) == []
        assert await store.leader_acquire(LEADER) is True
        ((pid, app),) = await lock_holders(admin, LEADER)
        assert app == f"sms-bot leader {LEADER}"
        # The pool's only connection is another session, busy or not with the store's queries.
        async with store._session() as session:
            ((pool_pid,),) = await session.fetch("SELECT pg_backend_pid()")
        assert pool_pid != pid
        await asyncio.gather(*(store.ping() for _ in range(20)))
        assert await store.leader_check(LEADER) is True
        assert await lock_holders(admin, LEADER) == [(pid, app)]
        # Released means unlocked at once, before the session is even gone.
        await store.leader_release(LEADER)
        assert await lock_holders(admin, LEADER) == []
    finally:
        await store.close()
        await admin.close()


async def test_dead_leader_connection_hands_leadership_over(pg_dsn: str) -> None:
    """A replica whose session dies (crash, network cut) stops leading; another takes over."""
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    admin = await asyncpg.connect(pg_dsn)  # the harness DSN is a superuser's
    await a.open()
    await b.open()
    try:
        assert await a.leader_acquire(LEADER) is True
        assert await b.leader_acquire(LEADER) is False
        ((pid, _),) = await lock_holders(admin, LEADER)
        # Wait (up to 10 s) until the backend has exited and so released its locks.
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 10000)", pid) is True
        assert await b.leader_acquire(LEADER) is True
        assert await a.leader_check(LEADER) is False
        assert await a.leader_acquire(LEADER) is False
        # Only the leader's session died: A's pool still serves the store.
        await a.ping()
        assert await a.job_claim(JOB, slot=SLOT, runner="a", now=T0) is True
        ((b_pid, _),) = await lock_holders(admin, LEADER)
        assert b_pid != pid
        await b.leader_release(LEADER)
        assert await a.leader_acquire(LEADER) is True
    finally:
        await a.close()
        await b.close()
        await admin.close()


async def test_leader_check_notices_a_terminated_session_without_a_contender(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn)
    admin = await asyncpg.connect(pg_dsn)
    await store.open()
    try:
        assert await store.leader_acquire(LEADER) is True
        ((pid, _),) = await lock_holders(admin, LEADER)
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 10000)", pid) is True
        assert await store.leader_check(LEADER) is False
        assert await store.leader_check(LEADER) is False
        # And it can lead again on a fresh session.
        assert await store.leader_acquire(LEADER) is True
        ((new_pid, _),) = await lock_holders(admin, LEADER)
        assert new_pid != pid
    finally:
        await store.close()
        await admin.close()


async def test_job_last_is_served_by_the_primary_key(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        await store.job_claim(JOB, slot=SLOT, runner="r:1", now=T0)
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        rows = await conn.fetch(
            "EXPLAIN SELECT job, slot, started_at, runner, status, finished_at FROM job_runs"
            " WHERE job = $1 ORDER BY slot DESC LIMIT 1",
            JOB,
        )
        slot_type = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'job_runs' AND column_name = 'slot'"
        )
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "Index Scan Backward using job_runs_pkey" in plan, plan
    assert "Sort" not in plan, plan
    assert slot_type == "timestamp with time zone"


_SCHEMA = (
    "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,"
    " is_identity, identity_generation FROM information_schema.columns"
    " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    " ORDER BY indexname",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace ORDER BY conname",
)


async def _schema(dsn: str) -> list[list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [[tuple(row) for row in await conn.fetch(sql)] for sql in _SCHEMA]
    finally:
        await conn.close()


async def test_a_new_database_has_the_schema_the_previous_store_made(
    pg_server: PgServer, pg_dsn: str
) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.close()
    old = await pg_server.create_database("v6")
    conn = await asyncpg.connect(old)
    try:
        await conn.execute((FIXTURES / "store_v6.postgres.sql").read_text())
    finally:
        await conn.close()
    # Migrations after 6 are applied to the old database as they are to a new one.
    upgraded = PostgresStore(old)
    await upgraded.open()
    await upgraded.close()
    assert await _schema(pg_dsn) == await _schema(old)
