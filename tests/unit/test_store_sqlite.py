"""SQLite backend: the store contract, plus what only a file-backed store has."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

# The contract lives outside a test_*.py file; have pytest rewrite its asserts too.
pytest.register_assert_rewrite("tests.store_contract")

from bot.store import (  # noqa: E402
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    SqliteStore,
    Store,
    StoreUnavailable,
    open_store,
)
from bot.store.sqlite import SYNCHRONOUS  # noqa: E402
from tests.store_contract import (  # noqa: E402
    StoreContract,
    StoreFactory,
    add_alerts_then_sigkill,
    make_run,
)


class TestSqliteContract(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        # A directory that does not exist yet: the store must create it.
        path = tmp_path / "data" / "nested" / "sms-bot.db"

        def factory(migrations: Sequence[Migration] = MIGRATIONS) -> Store:
            return SqliteStore(str(path), migrations=migrations)

        return factory


async def test_creates_parent_dir_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        assert path.exists()
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            versions = [v for (v,) in raw.execute("SELECT version FROM schema_migrations")]
        assert versions == list(range(1, LATEST_VERSION + 1))
    finally:
        await store.close()


async def test_reopen_does_not_duplicate_migration_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    for _ in range(3):
        store = SqliteStore(str(path))
        await store.open()
        await store.close()
    with sqlite3.connect(path) as raw:
        (count,) = raw.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
    assert count == LATEST_VERSION


async def test_memory_store_works() -> None:
    store = open_store("sqlite:///:memory:")
    await store.open()
    try:
        run = make_run()
        await store.start_run(run)
        assert await store.get_run(run.id) == run
        assert await store.schema_version() == LATEST_VERSION
    finally:
        await store.close()


async def test_relative_path_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///./data/sms-bot.db")
    await store.open()
    await store.close()
    assert (tmp_path / "data" / "sms-bot.db").exists()


async def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SqliteStore(str(blocker / "state.db"))
    with pytest.raises(StoreUnavailable, match="cannot open") as info:
        await store.open()
    assert isinstance(info.value.__cause__, OSError)


async def test_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite database file at all" * 100)
    store = SqliteStore(str(path))
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()


async def test_commits_are_synced_to_disk(tmp_path: Path) -> None:
    """``synchronous = FULL``: an acknowledged alert survives a power cut, not just a kill."""
    assert SYNCHRONOUS == "FULL"
    store = SqliteStore(str(tmp_path / "state.db"))
    await store.open()
    try:
        # A per-connection setting, so it can only be read on the store's own connection.
        async with store._conn() as conn, conn.execute("PRAGMA synchronous") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == 2  # 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
    finally:
        await store.close()


async def test_alerts_stored_before_a_sigkill_are_there_after(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    reported = await add_alerts_then_sigkill(url, count=50)
    assert len(reported) == 50
    store = open_store(url)
    await store.open()
    try:
        assert await store.alert_events_pending() == 50
        claimed = await store.alert_events_claim(now=datetime.now(UTC), limit=100)
        assert [e.id for e in claimed] == reported
        assert [e.labels["i"] for e in claimed] == [str(i) for i in range(50)]
    finally:
        await store.close()
