"""The store contract: one set of tests every ``Store`` backend must pass.

Why a base class: each backend's test module subclasses ``StoreContract`` and
provides a ``make_store`` fixture (a factory of unopened stores on one fresh
database), so SQLite runs in the unit suite and PostgreSQL in the integration
suite while the behaviour they are held to is written exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

import pytest

from bot.store import (
    LATEST_VERSION,
    MIGRATIONS,
    AuditEvent,
    Migration,
    RunRecord,
    StepRecord,
    Store,
    StoreUnavailable,
    UnknownRun,
)

__all__ = ["StoreContract", "StoreFactory"]

T0 = datetime(2024, 5, 1, 7, 30, 0, 123456, tzinfo=UTC)


class StoreFactory(Protocol):
    """Builds an unopened store on the test's database."""

    def __call__(self, migrations: Sequence[Migration] = MIGRATIONS) -> Store: ...


def make_run(*, started_at: datetime = T0, command: str = "logs backend 50") -> RunRecord:
    return RunRecord(
        id=uuid.uuid4().hex,
        command=command,
        user="console:alice",
        source="console",
        conversation="C1/1700000000.0001",
        started_at=started_at,
    )


def extra_migration(version: int, *statements: str) -> Migration:
    return Migration(
        version=version, name=f"test {version}", sqlite=statements, postgres=statements
    )


class StoreContract:
    """Behaviour shared by every backend. Subclasses define ``make_store``."""

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> AsyncIterator[Store]:
        store = make_store()
        await store.open()
        yield store
        await store.close()

    # --- migrations -------------------------------------------------------

    async def test_open_applies_all_migrations(self, store: Store) -> None:
        assert await store.schema_version() == LATEST_VERSION

    async def test_reopen_keeps_version_and_data(
        self, store: Store, make_store: StoreFactory
    ) -> None:
        run = make_run()
        await store.start_run(run)
        await store.close()
        again = make_store()
        await again.open()
        try:
            assert await again.schema_version() == LATEST_VERSION
            assert await again.get_run(run.id) == run
        finally:
            await again.close()

    async def test_open_twice_on_one_object_is_harmless(self, store: Store) -> None:
        await store.open()
        assert await store.schema_version() == LATEST_VERSION

    async def test_concurrent_open_of_two_stores_on_one_database(
        self, make_store: StoreFactory
    ) -> None:
        stores = [make_store() for _ in range(3)]
        try:
            results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
            assert results == [None, None, None]
            versions = [await s.schema_version() for s in stores]
            assert versions == [LATEST_VERSION] * 3
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    async def test_new_migration_is_applied_once_on_next_open(
        self, make_store: StoreFactory
    ) -> None:
        first = make_store()
        await first.open()
        await first.close()
        # No IF NOT EXISTS: applying it a second time would fail.
        extended = (
            *MIGRATIONS,
            extra_migration(LATEST_VERSION + 1, "CREATE TABLE t_extra (x INTEGER)"),
        )
        for _ in range(2):
            store = make_store(extended)
            await store.open()
            try:
                assert await store.schema_version() == LATEST_VERSION + 1
            finally:
                await store.close()

    async def test_failed_migration_is_rolled_back(self, make_store: StoreFactory) -> None:
        broken = (
            *MIGRATIONS,
            extra_migration(
                LATEST_VERSION + 1, "CREATE TABLE t_half (x INTEGER)", "NOT SQL AT ALL"
            ),
        )
        store = make_store(broken)
        with pytest.raises(StoreUnavailable):
            await store.open()
        # The half-applied table was rolled back, so the fixed migration can create it.
        fixed = (
            *MIGRATIONS,
            extra_migration(LATEST_VERSION + 1, "CREATE TABLE t_half (x INTEGER)"),
        )
        store = make_store(fixed)
        await store.open()
        try:
            assert await store.schema_version() == LATEST_VERSION + 1
        finally:
            await store.close()

    # --- runs and steps ---------------------------------------------------

    async def test_run_round_trip(self, store: Store) -> None:
        run = make_run()
        await store.start_run(run)
        got = await store.get_run(run.id)
        assert got == run
        assert got is not None and got.started_at.tzinfo is not None
        assert got.started_at.utcoffset() == timedelta(0)

    async def test_get_unknown_run_is_none(self, store: Store) -> None:
        assert await store.get_run("nope") is None
        assert await store.list_steps("nope") == []

    async def test_duplicate_run_id_is_refused(self, store: Store) -> None:
        run = make_run()
        await store.start_run(run)
        with pytest.raises(StoreUnavailable):
            await store.start_run(run)

    async def test_datetimes_come_back_as_utc(self, store: Store) -> None:
        cest = timezone(timedelta(hours=2))
        local = datetime(2024, 5, 1, 9, 30, 0, 5, tzinfo=cest)
        run = make_run(started_at=local)
        await store.start_run(run)
        got = await store.get_run(run.id)
        assert got is not None
        assert got.started_at == local
        assert got.started_at.utcoffset() == timedelta(0)
        assert got.started_at.hour == 7

    async def test_naive_datetime_is_refused(self, store: Store) -> None:
        with pytest.raises(ValueError, match="naive"):
            await store.start_run(make_run(started_at=datetime(2024, 5, 1, 7, 30)))

    async def test_steps_round_trip_ordered_and_upserted(self, store: Store) -> None:
        run = make_run()
        await store.start_run(run)
        second = StepRecord(run.id, 1, "Tail backend logs", "pending", None, None, "")
        first = StepRecord(run.id, 0, "Check container status", "running", T0, None, "checking...")
        await store.save_step(second)
        await store.save_step(first)
        assert await store.list_steps(run.id) == [first, second]

        done = StepRecord(
            run.id,
            0,
            "Check container status",
            "failed",
            T0,
            1.25,
            "docker-backend-1 exited (137)",
            error="ContainerExited: exit code 137",
        )
        await store.save_step(done)
        assert await store.list_steps(run.id) == [done, second]

    async def test_step_of_unknown_run_is_refused(self, store: Store) -> None:
        with pytest.raises(StoreUnavailable):
            await store.save_step(StepRecord("nope", 0, "x", "ok", None, None, ""))

    async def test_invalid_status_is_refused(self, store: Store) -> None:
        run = make_run()
        await store.start_run(run)
        with pytest.raises(ValueError, match="status"):
            await store.save_step(StepRecord(run.id, 0, "x", "done", None, None, ""))
        with pytest.raises(ValueError, match="status"):
            await store.finish_run(run.id, status="great", finished_at=T0)

    async def test_finish_run(self, store: Store) -> None:
        run = make_run()
        await store.start_run(run)
        end = T0 + timedelta(seconds=42)
        await store.finish_run(run.id, status="warn", finished_at=end)
        got = await store.get_run(run.id)
        assert got is not None
        assert (got.status, got.finished_at) == ("warn", end)

    async def test_finish_unknown_run(self, store: Store) -> None:
        with pytest.raises(UnknownRun) as info:
            await store.finish_run("nope", status="ok", finished_at=T0)
        # Callers that log StoreUnavailable (store was down at start_run) cover this too.
        assert isinstance(info.value, StoreUnavailable)

    async def test_run_finished_with_a_pending_step_is_saved(self, store: Store) -> None:
        run = make_run()
        await store.start_run(run)
        await store.finish_run(run.id, status="pending", finished_at=T0)
        got = await store.get_run(run.id)
        assert got is not None and got.status == "pending"

    async def test_recent_runs_newest_first_with_limit(self, store: Store) -> None:
        runs = [make_run(started_at=T0 + timedelta(minutes=i), command=f"c{i}") for i in range(5)]
        for run in (runs[2], runs[0], runs[4], runs[1], runs[3]):
            await store.start_run(run)
        assert [r.command for r in await store.recent_runs(3)] == ["c4", "c3", "c2"]
        assert [r.command for r in await store.recent_runs()] == ["c4", "c3", "c2", "c1", "c0"]
        assert await store.recent_runs(0) == []

    async def test_recent_runs_same_time_latest_inserted_first(self, store: Store) -> None:
        a, b = make_run(command="a"), make_run(command="b")
        await store.start_run(a)
        await store.start_run(b)
        assert [r.command for r in await store.recent_runs(2)] == ["b", "a"]

    # --- audit ------------------------------------------------------------

    async def test_audit_round_trip_with_detail(self, store: Store) -> None:
        event = AuditEvent(
            at=T0,
            actor="U123",
            source="slack",
            action="restart",
            target="docker-backend-1",
            outcome="ok",
            conversation="C1/1700000000.0001",
            detail={"proposal": "p1", "approvers": ["U9"], "nested": {"n": 1, "ok": True}},
        )
        await store.audit(event)
        assert await store.recent_audit() == [event]

    async def test_audit_detail_defaults_to_empty(self, store: Store) -> None:
        event = AuditEvent(T0, "console:alice", "console", "command", "health", "started")
        await store.audit(event)
        (got,) = await store.recent_audit()
        assert got == event
        assert dict(got.detail) == {}

    async def test_recent_audit_newest_first_with_limit(self, store: Store) -> None:
        for i in (1, 3, 0, 2):
            await store.audit(
                AuditEvent(T0 + timedelta(seconds=i), "U1", "slack", "click", f"t{i}", "ok")
            )
        assert [e.target for e in await store.recent_audit(3)] == ["t3", "t2", "t1"]

    # --- availability -----------------------------------------------------

    async def test_ping(self, store: Store) -> None:
        await store.ping()

    async def test_closed_store_is_unavailable(self, store: Store) -> None:
        await store.close()
        await store.close()  # twice is fine
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.start_run(make_run())
        with pytest.raises(StoreUnavailable):
            await store.recent_audit()

    async def test_never_opened_store_is_unavailable(self, make_store: StoreFactory) -> None:
        store = make_store()
        with pytest.raises(StoreUnavailable, match="not open"):
            await store.ping()
