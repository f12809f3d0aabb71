"""SQLite backend: the store contract, plus what only a file-backed store has."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from bot.store.sqlite import SYNCHRONOUS, leader_lock_path  # noqa: E402
from tests.store_contract import (  # noqa: E402
    JOB,
    LEADER,
    SLOT,
    T0,
    FixtureLoader,
    StoreContract,
    StoreFactory,
    add_alerts_then_sigkill,
    make_run,
)
from tests.store_fixtures import FIXTURES  # noqa: E402


class TestSqliteContract(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        # A directory that does not exist yet: the store must create it.
        path = tmp_path / "data" / "nested" / "sms-bot.db"

        def factory(migrations: Sequence[Migration] = MIGRATIONS) -> Store:
            return SqliteStore(str(path), migrations=migrations)

        return factory

    @pytest.fixture
    def load_fixture(self, tmp_path: Path) -> FixtureLoader:
        async def load(version: int) -> Store:
            path = tmp_path / f"old-v{version}.db"
            shutil.copyfile(FIXTURES / f"store_v{version}.sqlite", path)
            return SqliteStore(str(path))

        return load


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


async def test_a_current_state_file_opens_while_another_process_writes(tmp_path: Path) -> None:
    """A current schema is read, not re-checked under the write lock (``sms-bot run`` from cron)."""
    path = tmp_path / "state.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process, mid-transaction
        store = SqliteStore(str(path))
        await store.open()
        try:
            assert await store.schema_version() == LATEST_VERSION
        finally:
            await store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


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
        async with store._session() as session:
            (row,) = await session.fetch("PRAGMA synchronous")
        assert row["synchronous"] == 2  # 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
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


# Another process on the same file: open the store, try to lead, say how it went,
# and with "hold" keep leading until told to stop on stdin (or killed).
_TRY_TO_LEAD = """
import asyncio, sys
from bot.store import open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.open()
    try:
        leading = await store.leader_acquire(sys.argv[2])
        print("leader" if leading else "follower", flush=True)
        if leading and sys.argv[3] == "hold":
            sys.stdin.readline()
    finally:
        await store.close()

asyncio.run(main())
"""


async def start_contender(url: str, *, hold: bool) -> tuple[asyncio.subprocess.Process, str]:
    """A second bot process trying to lead; returns it and its first answer."""
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _TRY_TO_LEAD,
        url,
        LEADER,
        "hold" if hold else "once",
        cwd=root,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        answer = (await proc.stdout.readline()).decode().strip()
    if not answer:
        _, err = await proc.communicate()
        raise AssertionError(f"contender said nothing: {err.decode()}")
    return proc, answer


@pytest.fixture
async def db_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "state.db"))
    await store.open()
    yield store
    await store.close()


async def test_leadership_excludes_another_process(db_store: SqliteStore) -> None:
    url = f"sqlite:///{db_store.path}"
    assert await db_store.leader_acquire(LEADER) is True
    proc, answer = await start_contender(url, hold=False)
    async with asyncio.timeout(60):
        await proc.communicate()
    assert (answer, proc.returncode) == ("follower", 0)

    await db_store.leader_release(LEADER)
    proc, answer = await start_contender(url, hold=False)
    async with asyncio.timeout(60):
        await proc.communicate()
    assert (answer, proc.returncode) == ("leader", 0)
    # That process closed its store on exit, so leadership is free again.
    assert await db_store.leader_acquire(LEADER) is True


async def test_leadership_passes_on_when_the_leading_process_is_killed(
    db_store: SqliteStore,
) -> None:
    proc, answer = await start_contender(f"sqlite:///{db_store.path}", hold=True)
    try:
        assert answer == "leader"
        assert await db_store.leader_acquire(LEADER) is False
        with open(leader_lock_path(db_store.path, LEADER)) as f:
            assert f.read().strip() == str(proc.pid)
    finally:
        proc.kill()  # a replica dying without closing anything
        async with asyncio.timeout(60):
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert await db_store.leader_acquire(LEADER) is True
    assert await db_store.leader_check(LEADER) is True


async def test_leadership_lock_file_sits_beside_the_database(db_store: SqliteStore) -> None:
    lock = Path(leader_lock_path(db_store.path, LEADER))
    assert lock == Path(f"{db_store.path}.leader.{LEADER}.lock")
    assert await db_store.leader_acquire(LEADER) is True
    assert lock.read_text() == f"{os.getpid()}\n"
    await db_store.leader_release(LEADER)
    assert lock.exists()  # kept: unlinking a lock file races with the next locker


async def test_deleted_lock_file_ends_leadership(db_store: SqliteStore) -> None:
    """A lock on a file no longer at the path guards nothing: a newcomer locks the new file."""
    other = SqliteStore(db_store.path)
    await other.open()
    try:
        assert await db_store.leader_acquire(LEADER) is True
        Path(leader_lock_path(db_store.path, LEADER)).unlink()
        assert await other.leader_acquire(LEADER) is True
        assert await db_store.leader_check(LEADER) is False
        assert await db_store.leader_acquire(LEADER) is False
    finally:
        await other.close()


async def test_memory_store_leads_alone() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    try:
        assert await store.leader_acquire(LEADER) is True
        assert await store.leader_acquire(LEADER) is True
        assert await store.leader_check(LEADER) is True
        await store.leader_release(LEADER)
        assert await store.leader_check(LEADER) is False
        assert await store.leader_acquire(LEADER) is True
    finally:
        await store.close()
    assert await store.leader_check(LEADER) is False


async def test_job_last_is_served_by_the_primary_key(db_store: SqliteStore) -> None:
    await db_store.job_claim(JOB, slot=SLOT, runner="r:1", now=T0)
    async with db_store._session() as session:
        rows = await session.fetch(
            "EXPLAIN QUERY PLAN SELECT job, slot, started_at, runner, status, finished_at"
            " FROM job_runs WHERE job = :job ORDER BY slot DESC LIMIT 1",
            job=JOB,
        )
    plan = " ".join(str(row["detail"]) for row in rows)
    assert "USING INDEX sqlite_autoindex_job_runs_1 (job=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort: the index order is the answer


# -- a state file that goes away or changes under the running bot ---------------------------


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Path]]:
    path = tmp_path / "state.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        yield store, path
    finally:
        await store.close()


async def test_ping_passes_on_the_file_it_opened(opened: tuple[SqliteStore, Path]) -> None:
    store, _ = opened
    await store.ping()


async def test_ping_fails_when_the_file_was_deleted(opened: tuple[SqliteStore, Path]) -> None:
    store, path = opened
    path.unlink()
    # The connection still takes writes, into a file nobody will see again.
    await store.start_run(make_run())
    with pytest.raises(StoreUnavailable, match=r"state\.db was deleted while the bot ran"):
        await store.ping()


async def test_ping_fails_when_the_file_was_replaced(
    opened: tuple[SqliteStore, Path], tmp_path: Path
) -> None:
    store, path = opened
    other = SqliteStore(str(tmp_path / "other.db"))
    await other.open()
    await other.close()
    os.replace(tmp_path / "other.db", path)  # a valid database, but not the one opened
    with pytest.raises(StoreUnavailable, match="was replaced while the bot ran"):
        await store.ping()


async def test_ping_fails_when_the_file_was_overwritten_with_garbage(
    opened: tuple[SqliteStore, Path],
) -> None:
    store, path = opened
    with path.open("r+b") as file:  # in place: same inode, SQLite itself does not notice
        file.write(os.urandom(8192))
    await store.start_run(make_run())  # served from the WAL and the page cache
    with pytest.raises(StoreUnavailable, match="no longer an SQLite database"):
        await store.ping()


async def test_ping_fails_when_the_bot_tables_are_gone(opened: tuple[SqliteStore, Path]) -> None:
    store, path = opened
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE alert_events")
    with pytest.raises(StoreUnavailable, match="no such table: alert_events"):
        await store.ping()


async def test_ping_of_a_memory_store_has_no_file_to_check() -> None:
    store = open_store("sqlite:///:memory:")
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()


def _schema(path: Path) -> dict[str, Any]:
    """Every table's columns, indexes and foreign keys, as SQLite reports them."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out: dict[str, Any] = {}
        for t in sorted(tables):
            indexes = db.execute(f"PRAGMA index_list({t})").fetchall()
            out[t] = (
                db.execute(f"PRAGMA table_info({t})").fetchall(),
                sorted(
                    (i[1:], db.execute(f"PRAGMA index_xinfo({i[1]})").fetchall()) for i in indexes
                ),
                db.execute(f"PRAGMA foreign_key_list({t})").fetchall(),
            )
        partial = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '%WHERE%'"
        out["partial indexes"] = sorted(
            (name, " ".join(sql.split())) for name, sql in db.execute(partial)
        )
    return out


async def test_a_new_database_has_the_schema_the_previous_store_made(tmp_path: Path) -> None:
    """Migrations 1-6 as rewritten make what the previous store made; later ones add the same."""
    old = tmp_path / "v6.db"
    shutil.copyfile(FIXTURES / "store_v6.sqlite", old)
    for path in (tmp_path / "new.db", old):
        store = SqliteStore(str(path))
        await store.open()
        await store.close()
    assert _schema(tmp_path / "new.db") == _schema(old)
