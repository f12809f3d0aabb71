"""The store contract: one set of tests every ``Store`` backend must pass.

Why a base class: each backend's test module subclasses ``StoreContract`` and
provides a ``make_store`` fixture (a factory of unopened stores on one fresh
database), so SQLite runs in the unit suite and PostgreSQL in the integration
suite while the behaviour they are held to is written exactly once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest

from bot.store import LATEST_VERSION, MIGRATIONS, Migration, Store, StoreUnavailable, UnknownRun
from bot.store.base import (
    AlertEvent,
    AuditEvent,
    Change,
    ChatMessage,
    Digest,
    Incident,
    JobRun,
    NewAlertEvent,
    OutboxItem,
    Proposal,
    PruneCutoffs,
    RunRecord,
    StepRecord,
)
from tests import store_fixtures

__all__ = [
    "JOB",
    "LEADER",
    "SLOT",
    "FixtureLoader",
    "StoreContract",
    "StoreFactory",
    "add_alerts_then_sigkill",
    "make_alert",
    "make_incident",
    "make_proposal",
    "make_run",
]

T0 = datetime(2024, 5, 1, 7, 30, 0, 123456, tzinfo=UTC)
JOB = "morning-summary"
SLOT = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)  # a cron fire time
LEADER = "sms-bot-scheduler"


class StoreFactory(Protocol):
    """Builds an unopened store on the test's database."""

    def __call__(self, migrations: Sequence[Migration] = MIGRATIONS) -> Store: ...


class FixtureLoader(Protocol):
    """An unopened store on a copy of ``tests/fixtures/store_v{version}.*``."""

    async def __call__(self, version: int) -> Store: ...


def make_run(*, started_at: datetime = T0, command: str = "logs backend 50") -> RunRecord:
    return RunRecord(
        id=uuid.uuid4().hex,
        command=command,
        user="console:alice",
        source="console",
        conversation="C1/1700000000.0001",
        started_at=started_at,
    )


def make_proposal(
    *,
    created_at: datetime = T0,
    ttl: timedelta = timedelta(minutes=15),
    action: str = "restart",
) -> Proposal:
    return Proposal(
        id=uuid.uuid4().hex,
        action=action,
        args={"service": "backend", "container": "docker-backend-1", "opts": {"wait_s": 30}},
        summary="Restart docker-backend-1 and wait for /health",
        run_id=uuid.uuid4().hex,
        conversation="slack:C123:1700000000.000100",
        message_key="msg-" + uuid.uuid4().hex[:8],
        requested_by="U_OPERATOR",
        approver_role="approver",
        created_at=created_at,
        expires_at=created_at + ttl,
    )


async def add(
    store: Store,
    key: str,
    op: str = "post",
    *,
    parent: str | None = None,
    payload: dict[str, Any] | None = None,
    now: datetime = T0,
) -> int:
    """Queue one outbox item with defaults that do not matter to the test at hand."""
    return await store.outbox_add(
        message_key=key,
        op=op,
        surface="slack",
        channel="C123",
        parent_key=parent,
        payload=payload if payload is not None else {"text": f"{op} {key}"},
        now=now,
    )


def ids(items: Sequence[OutboxItem] | Sequence[AlertEvent]) -> list[int]:
    return [item.id for item in items]


def make_alert(
    fingerprint: str = "fp-A",
    status: str = "firing",
    *,
    alertname: str = "BackendDown",
    n: int = 0,
) -> NewAlertEvent:
    return NewAlertEvent(
        fingerprint=fingerprint,
        status=status,
        labels={"alertname": alertname, "severity": "critical", "n": str(n)},
        annotations={"summary": f"backend /health failing ({n})", "runbook": "§3.1"},
        starts_at=T0 - timedelta(minutes=2),
        ends_at=None if status == "firing" else T0,
        generator_url=f"http://localhost:9090/graph?g0.expr=up%3D%3D0&n={n}",
    )


def stored(event: NewAlertEvent, id: int, *, received_at: datetime = T0) -> AlertEvent:
    """The event as claimed: what was posted plus its id and arrival time."""
    return AlertEvent(
        id=id,
        fingerprint=event.fingerprint,
        status=event.status,
        labels=dict(event.labels),
        annotations=dict(event.annotations),
        starts_at=event.starts_at,
        ends_at=event.ends_at,
        generator_url=event.generator_url,
        received_at=received_at,
    )


def make_incident(
    fingerprint: str | None = "fp-A",
    *,
    opened_at: datetime = T0,
    title: str = "BackendDown: backend /health failing",
) -> Incident:
    return Incident(
        id=uuid.uuid4().hex,
        fingerprint=fingerprint,
        title=title,
        priority="P0",
        procedure="backend_down",
        labels={"alertname": "BackendDown", "severity": "critical"},
        annotations={"summary": "backend /health failing"},
        opened_at=opened_at,
        opened_by="alertmanager" if fingerprint else "U_ONCALL",
    )


async def write_old_incident(store: Store, incident: Incident) -> None:
    """An incident row as the code of an older migration wrote it.

    Today's incident queries read ``digest_id``, a column migration 6 adds, so a
    store below 6 cannot open one through them; this writes the row in SQL both
    engines take (literals only: the two engines differ in parameter style).
    """

    def text(value: object) -> str:
        return "'" + str(value).replace("'", "''") + "'"

    values = ", ".join(
        text(v)
        for v in (
            incident.id,
            incident.fingerprint,
            incident.title,
            incident.priority,
            incident.procedure,
            json.dumps(dict(incident.labels)),
            json.dumps(dict(incident.annotations)),
            incident.opened_at.isoformat(timespec="microseconds"),
            incident.opened_by,
            incident.status,
        )
    )
    async with store._session() as session:  # type: ignore[attr-defined]
        await session.execute(
            "INSERT INTO incidents (id, fingerprint, title, priority, procedure, labels,"
            f" annotations, opened_at, opened_by, status, repeats) VALUES ({values}, 0)"
        )


def extra_migration(version: int, *statements: str) -> Migration:
    return Migration(version=version, name=f"test {version}", sql=statements)


# Run in a child process: store a webhook's alerts, report their ids, die at once.
_ADD_THEN_DIE = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from bot.store import open_store
from bot.store.base import NewAlertEvent

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.open()
    events = [
        NewAlertEvent(f"fp-{i}", "firing", {"alertname": "BackendDown", "i": str(i)},
                      {"summary": "down"}, None, None, "")
        for i in range(int(sys.argv[2]))
    ]
    ids = await store.alert_events_add(events, received_at=datetime.now(UTC))
    print(",".join(map(str, ids)), flush=True)
    # What the webhook does next is answer 200; the process may die right then,
    # without closing the store.
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def add_alerts_then_sigkill(url: str, count: int = 50) -> list[int]:
    """Have a child process store ``count`` alerts and get SIGKILLed; the ids it reported."""
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ADD_THEN_DIE,
        url,
        str(count),
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return [int(part) for part in out.decode().strip().split(",")]


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

    async def test_a_store_at_migration_5_upgrades_to_6_with_nothing_lost(
        self, make_store: StoreFactory
    ) -> None:
        old = make_store(MIGRATIONS[:5])
        await old.open()
        incident = make_incident()
        run = make_run()
        try:
            assert await old.schema_version() == 5
            await write_old_incident(old, incident)
            await old.incident_set_thread(incident.id, root_key="k1", conversation="{}")
            await old.incident_set_record(incident.id, path="x.md", text="# record")
            await old.start_run(run)
            # Written at 5; read back by today's queries (which know digest_id) after the upgrade.
            kept = replace(incident, root_key="k1", conversation="{}", record_path="x.md")
        finally:
            await old.close()
        new = make_store()
        await new.open()
        try:
            assert await new.schema_version() == LATEST_VERSION
            assert await new.incident_get(incident.id) == kept
            assert await new.incident_record_text(incident.id) == "# record"
            assert await new.get_run(run.id) == run
            # The old incident can join a digest like a new one.
            digest, created = await new.digest_join(
                incident.id, now=T0, window=timedelta(minutes=1), new_id="d1"
            )
            assert created
            assert await new.digest_incidents(digest.id) == [replace(kept, digest_id="d1")]
        finally:
            await new.close()

    @pytest.mark.parametrize("version", [5, 6])
    async def test_a_database_made_by_the_previous_store_upgrades_with_nothing_lost(
        self, make_store: StoreFactory, load_fixture: FixtureLoader, version: int
    ) -> None:
        # What the code under test stores for the same calls is the expectation.
        fresh = make_store()
        await fresh.open()
        try:
            await store_fixtures.fill(fresh, digests=version >= 6)
            expected = await store_fixtures.snapshot(fresh)
        finally:
            await fresh.close()
        old = await load_fixture(version)
        await old.open()
        try:
            assert await store_fixtures.snapshot(old) == expected
            # Written to after the upgrade like a new database.
            later = store_fixtures.NOW + timedelta(days=1)
            await old.digest_join("inc-acked", now=later, window=timedelta(minutes=1), new_id="d9")
            assert [i.id for i in await old.digest_incidents("d9")] == ["inc-acked"]
            assert await old.job_claim(JOB, slot=SLOT, runner="host-a:1", now=T0) is True
        finally:
            await old.close()

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

    async def test_version_1_database_upgrades_on_open(self, make_store: StoreFactory) -> None:
        old = make_store(MIGRATIONS[:1])
        await old.open()
        run = make_run()
        try:
            assert await old.schema_version() == 1
            await old.start_run(run)
        finally:
            await old.close()
        store = make_store()
        await store.open()
        try:
            assert LATEST_VERSION >= 2
            assert await store.schema_version() == LATEST_VERSION
            assert await store.get_run(run.id) == run
            p = make_proposal()
            await store.proposal_add(p)
            assert await store.proposal_get(p.id) == p
            item_id = await add(store, "k")
            assert ids(await store.outbox_claim(now=T0)) == [item_id]
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

    async def test_count_audit_by_action_target_since_and_outcome(self, store: Store) -> None:
        since = T0 - timedelta(hours=1)
        for at, action, target, outcome in [
            (since - timedelta(microseconds=1), "restart", "docker-backend-1", "ok"),
            (since, "restart", "docker-backend-1", "ok"),
            (T0, "restart", "docker-backend-1", "failed"),
            (T0 + timedelta(minutes=1), "restart", "docker-backend-1", "ok"),
            (T0, "restart", "docker-postgres-1", "ok"),
            (T0, "logs", "docker-backend-1", "ok"),
        ]:
            await store.audit(AuditEvent(at, "U9", "slack", action, target, outcome))

        async def count(**kw: Any) -> int:
            return await store.count_audit(
                action="restart", target="docker-backend-1", since=since, **kw
            )

        assert await count() == 3
        assert await count(outcomes={"ok"}) == 2
        assert await count(outcomes=["ok", "failed"]) == 3
        assert await count(outcomes=()) == 0
        assert await store.count_audit(action="restart", target="nope", since=since) == 0
        assert (
            await store.count_audit(
                action="restart",
                target="docker-backend-1",
                # The same instant in another zone counts the same events.
                since=since.astimezone(timezone(timedelta(hours=-5))),
            )
            == 3
        )
        with pytest.raises(TypeError):
            await count(outcomes="ok")
        with pytest.raises(ValueError, match="naive"):
            await store.count_audit(action="restart", target="x", since=datetime(2024, 5, 1))

    # --- outbox -----------------------------------------------------------

    @pytest.fixture
    async def other(self, make_store: StoreFactory) -> AsyncIterator[Store]:
        """A second store on the same database: another replica, or another process."""
        store = make_store()
        await store.open()
        yield store
        await store.close()

    async def test_outbox_round_trip(self, store: Store) -> None:
        cest = timezone(timedelta(hours=2))
        now = T0.astimezone(cest)
        payload = {"title": "BackendDown", "fields": [["a", 1]], "nested": {"ok": True, "n": None}}
        item_id = await store.outbox_add(
            message_key="m1",
            op="post",
            surface="slack",
            channel="C123",
            parent_key=None,
            payload=payload,
            now=now,
        )
        expected = OutboxItem(
            id=item_id,
            message_key="m1",
            op="post",
            surface="slack",
            channel="C123",
            parent_key=None,
            payload=payload,
            attempts=0,
            created_at=T0,
            next_attempt_at=T0,
        )
        assert await store.outbox_pending() == 1
        assert await store.outbox_items() == [expected]
        (claimed,) = await store.outbox_claim(now=T0)
        assert claimed == expected
        assert claimed.created_at.utcoffset() == timedelta(0)
        assert await store.outbox_claim(now=T0) == []  # leased

        await store.outbox_done(item_id)
        assert await store.outbox_pending() == 0
        assert await store.outbox_items() == []
        assert await store.outbox_items(include_done=True) == [expected]
        assert await store.outbox_claim(now=T0 + timedelta(days=1)) == []
        await store.outbox_done(item_id)  # a second delivery report is harmless
        assert await store.outbox_pending() == 0

    async def test_outbox_item_is_not_claimed_before_it_is_due(self, store: Store) -> None:
        item_id = await add(store, "m1", now=T0)
        assert await store.outbox_claim(now=T0 - timedelta(microseconds=1)) == []
        assert ids(await store.outbox_claim(now=T0)) == [item_id]

    async def test_outbox_claim_respects_limit_and_id_order(self, store: Store) -> None:
        added = [await add(store, f"m{i}") for i in range(5)]
        assert ids(await store.outbox_claim(now=T0, limit=2)) == added[:2]
        assert await store.outbox_claim(now=T0, limit=0) == []
        assert ids(await store.outbox_claim(now=T0)) == added[2:]

    async def test_outbox_update_coalesces_into_a_pending_update(self, store: Store) -> None:
        post = await add(store, "m1", "post")
        first = await add(store, "m1", "update", payload={"step": 1})
        assert first != post  # never merged into the post that creates the message
        assert await add(store, "m1", "update", payload={"step": 2}) == first
        assert await add(store, "m1", "update", payload={"step": 3}) == first
        other = await add(store, "m2", "update", payload={"step": 1})
        assert other != first
        items = await store.outbox_items()
        assert ids(items) == [post, first, other]
        assert dict(items[1].payload) == {"step": 3}
        assert dict(items[2].payload) == {"step": 1}

    async def test_outbox_update_does_not_coalesce_into_a_leased_one(self, store: Store) -> None:
        first = await add(store, "m1", "update", payload={"step": 1})
        assert ids(await store.outbox_claim(now=T0)) == [first]
        second = await add(store, "m1", "update", payload={"step": 2})
        assert second != first
        # A third coalesces into the waiting second one, not the one being sent.
        assert await add(store, "m1", "update", payload={"step": 3}) == second
        assert [dict(i.payload) for i in await store.outbox_items()] == [
            {"step": 1},
            {"step": 3},
        ]
        assert await store.outbox_claim(now=T0) == []  # waits behind the leased one
        await store.outbox_done(first)
        (item,) = await store.outbox_claim(now=T0)
        assert (item.id, dict(item.payload)) == (second, {"step": 3})

    async def test_outbox_update_coalesces_into_one_whose_lease_expired(self, store: Store) -> None:
        first = await add(store, "m1", "update", payload={"step": 1})
        await store.outbox_claim(now=T0, lease_s=30)
        later = T0 + timedelta(seconds=30)
        assert await add(store, "m1", "update", payload={"step": 2}, now=later) == first
        (item,) = await store.outbox_claim(now=later)
        assert (item.id, dict(item.payload)) == (first, {"step": 2})

    async def test_outbox_post_goes_before_its_updates_and_replies(self, store: Store) -> None:
        post_a = await add(store, "A", "post")
        update_a = await add(store, "A", "update")
        reply = await add(store, "R1", "reply", parent="A")
        update_b = await add(store, "B", "update")  # another message: not held back
        assert ids(await store.outbox_claim(now=T0)) == [post_a, update_b]
        assert await store.outbox_claim(now=T0) == []
        await store.outbox_done(update_b)
        assert await store.outbox_claim(now=T0) == []
        await store.outbox_done(post_a)
        assert ids(await store.outbox_claim(now=T0)) == [update_a]
        await store.outbox_done(update_a)
        (item,) = await store.outbox_claim(now=T0)
        assert (item.id, item.op, item.parent_key) == (reply, "reply", "A")

    async def test_outbox_add_claimed_claims_only_what_nothing_holds_back(
        self, store: Store, other: Store
    ) -> None:
        """Queued and claimed in one transaction, as ``outbox_claim`` would have claimed it."""
        kw: dict[str, Any] = {"surface": "slack", "channel": "C1", "payload": {}, "now": T0}
        post_id, post = await store.outbox_add_claimed(
            message_key="A", op="post", parent_key=None, lease_s=30, **kw
        )
        assert post is not None and post.id == post_id and post.claim_token
        assert await other.outbox_claim(now=T0) == []  # leased to the adder's worker
        # A reply waits for its thread's root, an update for its post: queued, not claimed.
        reply_id, reply = await store.outbox_add_claimed(
            message_key="R", op="reply", parent_key="A", lease_s=30, **kw
        )
        _, update = await store.outbox_add_claimed(
            message_key="A", op="update", parent_key=None, lease_s=30, **kw
        )
        assert reply is None and update is None
        # Without a lease it is ``outbox_add``: queued for any worker's claim.
        plain_id, plain = await store.outbox_add_claimed(
            message_key="B", op="post", parent_key=None, lease_s=None, **kw
        )
        assert plain is None
        assert ids(await other.outbox_claim(now=T0)) == [plain_id]
        assert await store.outbox_done(post_id, token=post.claim_token)
        assert reply_id in ids(await other.outbox_claim(now=T0))

    async def test_outbox_retry_waits_counts_and_releases(self, store: Store) -> None:
        item_id = await add(store, "m1")
        await store.outbox_claim(now=T0)
        at = T0 + timedelta(seconds=60)
        await store.outbox_retry(item_id, at=at, error="ratelimited (retry after 60s)")
        (item,) = await store.outbox_items()
        assert (item.attempts, item.next_attempt_at, item.last_error) == (
            1,
            at,
            "ratelimited (retry after 60s)",
        )
        assert await store.outbox_claim(now=at - timedelta(microseconds=1)) == []
        assert await store.outbox_claim(now=at) == [item]
        # Retrying now releases the lease at once (the first lease ran to at + 30s).
        await store.outbox_retry(item_id, at=at, error="timeout")
        (again,) = await store.outbox_claim(now=at)
        assert (again.id, again.attempts, again.last_error) == (item_id, 2, "timeout")

    async def test_outbox_retry_blocks_later_items_of_the_message(self, store: Store) -> None:
        post = await add(store, "m1", "post")
        update = await add(store, "m1", "update")
        await store.outbox_claim(now=T0)
        await store.outbox_retry(post, at=T0 + timedelta(seconds=5), error="503")
        assert await store.outbox_claim(now=T0 + timedelta(seconds=1)) == []
        assert ids(await store.outbox_claim(now=T0 + timedelta(seconds=5))) == [post]
        await store.outbox_done(post)
        assert ids(await store.outbox_claim(now=T0 + timedelta(seconds=5))) == [update]

    async def test_outbox_lease_expiry_makes_an_item_claimable_again(self, store: Store) -> None:
        item_id = await add(store, "m1")
        assert ids(await store.outbox_claim(now=T0, lease_s=30)) == [item_id]
        assert await store.outbox_claim(now=T0 + timedelta(seconds=29.9)) == []
        assert ids(await store.outbox_claim(now=T0 + timedelta(seconds=30))) == [item_id]

    async def test_outbox_dead_item_is_kept_never_claimed_and_blocks_nothing(
        self, store: Store
    ) -> None:
        post = await add(store, "m1", "post")
        update = await add(store, "m1", "update")
        await store.outbox_claim(now=T0)
        await store.outbox_dead(post, error="channel_not_found")
        assert await store.outbox_pending() == 1
        items = await store.outbox_items()
        assert ids(items) == [post, update]
        assert (items[0].attempts, items[0].last_error) == (1, "channel_not_found")
        assert ids(await store.outbox_claim(now=T0)) == [update]
        await store.outbox_done(update)
        assert await store.outbox_claim(now=T0 + timedelta(days=7)) == []
        # Reports arriving late for a dead item do not revive it.
        await store.outbox_retry(post, at=T0, error="late")
        await store.outbox_done(post)
        assert await store.outbox_claim(now=T0 + timedelta(days=7)) == []
        assert ids(await store.outbox_items()) == [post]
        assert await store.outbox_pending() == 0

    async def test_outbox_concurrent_claims_never_share_an_item(
        self, store: Store, other: Store
    ) -> None:
        posts, updates = [], []
        for i in range(20):
            posts.append(await add(store, f"m{i}", "post"))
            updates.append(await add(other, f"m{i}", "update"))
        replicas = (store, other)
        batches = await asyncio.gather(
            *(replicas[n % 2].outbox_claim(now=T0, limit=4) for n in range(8))
        )
        claimed = [item_id for batch in batches for item_id in ids(batch)]
        assert len(claimed) == len(set(claimed))
        # No update went out while its post was still undelivered.
        assert set(claimed) <= set(posts)
        rest = ids(await store.outbox_claim(now=T0, limit=100))
        assert sorted(claimed + rest) == posts

        for item_id in posts:
            await replicas[item_id % 2].outbox_done(item_id)
        batches = await asyncio.gather(
            *(replicas[n % 2].outbox_claim(now=T0, limit=3) for n in range(8))
        )
        claimed = [item_id for batch in batches for item_id in ids(batch)]
        assert len(claimed) == len(set(claimed))
        rest = ids(await other.outbox_claim(now=T0, limit=100))
        assert sorted(claimed + rest) == updates

    async def test_outbox_claim_token_fences_a_worker_whose_lease_was_taken(
        self, store: Store, other: Store
    ) -> None:
        item_id = await add(store, "m1")
        (stalled,) = await store.outbox_claim(now=T0, lease_s=30)
        (taker,) = await other.outbox_claim(now=T0 + timedelta(seconds=31), lease_s=30)
        assert stalled.id == taker.id == item_id
        assert stalled.claim_token and taker.claim_token
        assert stalled.claim_token != taker.claim_token
        later = T0 + timedelta(seconds=32)
        # The stalled worker may neither send, record, nor mark it.
        assert await store.outbox_still_mine(stalled, now=later, lease_s=30) is False
        landed = ChatMessage("m1", "slack", "C123", "1700.1", None)
        assert await store.chat_message_put(landed, claim=stalled) is False
        assert await store.chat_message_get("m1") is None
        token = stalled.claim_token
        assert await store.outbox_retry(item_id, at=later, error="x", token=token) is False
        assert await store.outbox_dead(item_id, error="x", token=token) is False
        assert await store.outbox_done(item_id, token=token) is False
        assert ids(await store.outbox_items()) == [item_id]
        # The replica that holds it now may.
        assert await other.outbox_still_mine(taker, now=later, lease_s=30) is True
        assert await other.chat_message_put(landed, claim=taker) is True
        assert await store.chat_message_get("m1") == landed
        assert await other.outbox_done(item_id, token=taker.claim_token) is True
        assert await store.outbox_items() == []
        # Once done, no claim is current any more.
        assert await other.outbox_still_mine(taker, now=later, lease_s=30) is False
        assert await other.chat_message_put(landed, claim=taker) is False

    async def test_outbox_still_mine_extends_the_lease(self, store: Store) -> None:
        item_id = await add(store, "m1")
        (mine,) = await store.outbox_claim(now=T0, lease_s=30)
        assert await store.outbox_still_mine(mine, now=T0 + timedelta(seconds=20), lease_s=30)
        assert await store.outbox_claim(now=T0 + timedelta(seconds=31)) == []
        (again,) = await store.outbox_claim(now=T0 + timedelta(seconds=50), lease_s=30)
        assert again.id == item_id and again.claim_token != mine.claim_token
        unclaimed = (await store.outbox_items())[0]
        assert (
            await store.outbox_still_mine(replace(unclaimed, claim_token=None), now=T0, lease_s=1)
            is False
        )

    async def test_outbox_retry_by_the_owner_releases_the_claim(self, store: Store) -> None:
        item_id = await add(store, "m1")
        (mine,) = await store.outbox_claim(now=T0, lease_s=30)
        at = T0 + timedelta(seconds=1)
        assert await store.outbox_retry(item_id, at=at, error="503", token=mine.claim_token)
        # Released: the old token no longer holds it, a new claim gets a new one.
        assert await store.outbox_still_mine(mine, now=at, lease_s=30) is False
        (next_,) = await store.outbox_claim(now=at)
        assert next_.claim_token not in (None, mine.claim_token)

    async def test_outbox_backlog_counts_pending_and_the_oldest(self, store: Store) -> None:
        assert await store.outbox_backlog() == (0, None)
        first = await add(store, "m1", now=T0)
        await add(store, "m2", now=T0 + timedelta(seconds=5))
        dead = await add(store, "m3", now=T0 - timedelta(seconds=5))
        await store.outbox_dead(dead, error="channel_not_found")
        assert await store.outbox_backlog() == (2, T0)
        await store.outbox_done(first)
        assert await store.outbox_backlog() == (1, T0 + timedelta(seconds=5))

    async def test_outbox_items_survive_close_and_reopen(
        self, store: Store, make_store: StoreFactory
    ) -> None:
        leased = await add(store, "m1", payload={"text": "sent just before the crash"})
        waiting = await add(store, "m2", "reply", parent="root")
        assert ids(await store.outbox_claim(now=T0, limit=1, lease_s=30)) == [leased]
        before = await store.outbox_items()
        await store.close()
        again = make_store()
        await again.open()
        try:
            assert await again.outbox_items() == before
            assert await again.outbox_pending() == 2
            # The lease outlives the restart; the unleased item is delivered at once.
            assert ids(await again.outbox_claim(now=T0, lease_s=60)) == [waiting]
            later = T0 + timedelta(seconds=30)
            assert ids(await again.outbox_claim(now=later)) == [leased]
        finally:
            await again.close()

    async def test_outbox_refuses_bad_input(self, store: Store) -> None:
        with pytest.raises(ValueError, match="op"):
            await add(store, "m1", "delete")
        with pytest.raises(ValueError, match="parent_key"):
            await add(store, "m1", "reply")
        with pytest.raises(ValueError, match="naive"):
            await add(store, "m1", now=datetime(2024, 5, 1, 7, 30))
        with pytest.raises(ValueError, match="JSON"):
            await add(store, "m1", payload={"when": T0})
        with pytest.raises(ValueError, match="lease_s"):
            await store.outbox_claim(now=T0, lease_s=0)
        with pytest.raises(ValueError, match="naive"):
            await store.outbox_claim(now=datetime(2024, 5, 1, 7, 30))
        assert await store.outbox_pending() == 0

    # --- chat messages ----------------------------------------------------

    async def test_chat_message_upsert_and_get(self, store: Store) -> None:
        assert await store.chat_message_get("m1") is None
        queued = ChatMessage(key="m1", surface="slack", channel="C123", ts=None)
        await store.chat_message_put(queued)
        assert await store.chat_message_get("m1") == queued
        sent = ChatMessage("m1", "slack", "C123", "1700000000.000100", "1700000000.000001")
        await store.chat_message_put(sent)
        assert await store.chat_message_get("m1") == sent
        assert await store.chat_message_get("m2") is None

    # --- Teams conversation references (migration 7) -----------------------

    async def test_teams_reference_upsert_and_get(self, store: Store) -> None:
        cid = "19:abc@thread.tacv2;messageid=1"
        assert await store.teams_reference_get(cid) is None
        first = {"serviceUrl": "https://a.example/", "conversation": {"id": cid, "tenantId": "t"}}
        await store.teams_reference_put(cid, first, now=datetime(2024, 5, 1, 7, 30, tzinfo=UTC))
        assert await store.teams_reference_get(cid) == first
        second = {**first, "serviceUrl": "https://b.example/"}
        await store.teams_reference_put(cid, second, now=datetime(2024, 5, 1, 7, 31, tzinfo=UTC))
        assert await store.teams_reference_get(cid) == second

    # --- proposals --------------------------------------------------------

    async def test_proposal_round_trip(self, store: Store) -> None:
        p = make_proposal()
        await store.proposal_add(p)
        got = await store.proposal_get(p.id)
        assert got == p
        assert got is not None and got.expires_at.utcoffset() == timedelta(0)
        assert await store.proposal_get("nope") is None
        with pytest.raises(StoreUnavailable):
            await store.proposal_add(p)

    async def test_proposal_refuses_bad_input(self, store: Store) -> None:
        p = make_proposal()
        with pytest.raises(ValueError, match="status"):
            await store.proposal_add(Proposal(**{**p.__dict__, "status": "maybe"}))
        with pytest.raises(ValueError, match="naive"):
            await store.proposal_add(
                Proposal(**{**p.__dict__, "expires_at": datetime(2024, 5, 1, 8, 0)})
            )
        await store.proposal_add(p)
        with pytest.raises(ValueError, match="naive"):
            await store.proposal_claim(p.id, by="U1", now=datetime(2024, 5, 1, 7, 31))
        assert await store.proposal_get(p.id) == p

    async def test_proposal_is_claimed_exactly_once(self, store: Store, other: Store) -> None:
        p = make_proposal()
        await store.proposal_add(p)
        now = T0 + timedelta(minutes=1)
        replicas = (store, other)
        results = await asyncio.gather(
            *(replicas[n % 2].proposal_claim(p.id, by=f"U{n}", now=now) for n in range(20))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        (won,) = winners
        assert won.status == "approved"
        assert won.decided_by in {f"U{n}" for n in range(20)}
        assert won.decided_at == now
        assert won == Proposal(
            **{**p.__dict__, "status": "approved", "decided_by": won.decided_by, "decided_at": now}
        )
        assert await other.proposal_get(p.id) == won
        assert await store.proposal_claim(p.id, by="U99", now=now) is None

    async def test_proposal_claim_after_expiry_is_refused(self, store: Store) -> None:
        p = make_proposal(ttl=timedelta(minutes=15))
        await store.proposal_add(p)
        assert await store.proposal_claim(p.id, by="U1", now=p.expires_at) is None
        assert await store.proposal_get(p.id) == p  # still pending until expired
        q = make_proposal(ttl=timedelta(minutes=15))
        await store.proposal_add(q)
        just_in_time = q.expires_at - timedelta(microseconds=1)
        won = await store.proposal_claim(q.id, by="U1", now=just_in_time)
        assert won is not None and won.status == "approved"
        assert await store.proposal_claim("nope", by="U1", now=T0) is None

    # --- migration 8 (recovery, issue 11): several approvers -------------

    async def test_proposal_needing_two_approvers(self, store: Store) -> None:
        p = make_proposal()
        await store.proposal_add(p)
        now = T0 + timedelta(minutes=1)
        first = await store.proposal_approve(p.id, by="U1", now=now, needed=2)
        assert (first.outcome, first.approvers) == ("recorded", ("U1",))
        assert first.proposal is not None and first.proposal.status == "pending"
        # The same person again changes nothing.
        again = await store.proposal_approve(p.id, by="U1", now=now, needed=2)
        assert (again.outcome, again.approvers) == ("duplicate", ("U1",))
        assert await store.proposal_get(p.id) == p
        second = await store.proposal_approve(p.id, by="U2", now=now, needed=2)
        assert (second.outcome, second.approvers) == ("claimed", ("U1", "U2"))
        assert second.proposal == Proposal(
            **{**p.__dict__, "status": "approved", "decided_by": "U2", "decided_at": now}
        )
        late = await store.proposal_approve(p.id, by="U3", now=now, needed=2)
        assert (late.outcome, late.approvers) == ("not_pending", ("U1", "U2"))
        assert await store.proposal_approvals(p.id) == ("U1", "U2")
        assert await store.proposal_claim(p.id, by="U4", now=now) is None

    async def test_proposal_approve_refuses_expired_cancelled_and_missing(
        self, store: Store
    ) -> None:
        p = make_proposal(ttl=timedelta(minutes=15))
        await store.proposal_add(p)
        expired = await store.proposal_approve(p.id, by="U1", now=p.expires_at, needed=1)
        assert expired.outcome == "not_pending"
        assert await store.proposal_approvals(p.id) == ()
        q = make_proposal()
        await store.proposal_add(q)
        await store.proposal_cancel(q.id, by="U9", now=T0)
        assert (await store.proposal_approve(q.id, by="U1", now=T0, needed=2)).outcome == (
            "not_pending"
        )
        missing = await store.proposal_approve("nope", by="U1", now=T0, needed=2)
        assert (missing.outcome, missing.proposal) == ("not_pending", None)
        r = make_proposal()
        await store.proposal_add(r)
        one = await store.proposal_approve(r.id, by="U1", now=T0, needed=1)
        assert one.outcome == "claimed" and one.proposal is not None
        assert one.proposal.status == "approved"

    async def test_proposal_second_approval_claims_exactly_once(
        self, store: Store, other: Store
    ) -> None:
        p = make_proposal()
        await store.proposal_add(p)
        now = T0 + timedelta(minutes=1)
        assert (await store.proposal_approve(p.id, by="U0", now=now, needed=2)).outcome == (
            "recorded"
        )
        replicas = (store, other)
        results = await asyncio.gather(
            *(
                replicas[n % 2].proposal_approve(p.id, by=f"U{n}", now=now, needed=2)
                for n in range(1, 11)
            )
        )
        assert [r.outcome for r in results].count("claimed") == 1
        assert {r.outcome for r in results} == {"claimed", "not_pending"}
        assert len(await other.proposal_approvals(p.id)) == 2

    async def test_proposal_cancel_then_claim(self, store: Store) -> None:
        p = make_proposal()
        await store.proposal_add(p)
        now = T0 + timedelta(minutes=2)
        cancelled = await store.proposal_cancel(p.id, by="U2", now=now)
        assert cancelled is not None
        assert (cancelled.status, cancelled.decided_by, cancelled.decided_at) == (
            "cancelled",
            "U2",
            now,
        )
        assert await store.proposal_get(p.id) == cancelled
        assert await store.proposal_claim(p.id, by="U1", now=now) is None
        assert await store.proposal_cancel(p.id, by="U3", now=now) is None
        q = make_proposal()
        await store.proposal_add(q)
        assert await store.proposal_claim(q.id, by="U1", now=now) is not None
        assert await store.proposal_cancel(q.id, by="U2", now=now) is None
        assert await store.proposal_cancel("nope", by="U2", now=now) is None

    async def test_proposal_expire_due_marks_only_the_due_pending_ones(self, store: Store) -> None:
        now = T0 + timedelta(minutes=10)
        early = make_proposal(ttl=timedelta(minutes=1))
        exact = make_proposal(ttl=timedelta(minutes=10))
        later = make_proposal(ttl=timedelta(minutes=20))
        approved = make_proposal(ttl=timedelta(minutes=5))
        for p in (later, exact, approved, early):
            await store.proposal_add(p)
        await store.proposal_claim(approved.id, by="U1", now=T0)

        expired = await store.proposal_expire_due(now=now)
        assert [p.id for p in expired] == [early.id, exact.id]
        assert all(p.status == "expired" for p in expired)
        for p in expired:
            assert await store.proposal_get(p.id) == p
        assert await store.proposal_expire_due(now=now) == []
        got_approved = await store.proposal_get(approved.id)
        assert got_approved is not None and got_approved.status == "approved"
        assert await store.proposal_claim(exact.id, by="U1", now=T0) is None
        won = await store.proposal_claim(later.id, by="U1", now=now)
        assert won is not None and won.status == "approved"

    async def test_proposal_finish(self, store: Store) -> None:
        p = make_proposal()
        await store.proposal_add(p)
        # Not approved yet: finishing changes nothing.
        await store.proposal_finish(p.id, status="done", result="restarted")
        assert await store.proposal_get(p.id) == p
        won = await store.proposal_claim(p.id, by="U1", now=T0)
        assert won is not None
        await store.proposal_finish(p.id, status="done", result="restarted in 4.2s, healthy")
        done = await store.proposal_get(p.id)
        assert done == Proposal(
            **{**won.__dict__, "status": "done", "result": "restarted in 4.2s, healthy"}
        )
        # A finished proposal stays as it ended.
        await store.proposal_finish(p.id, status="failed", result="late report")
        assert await store.proposal_get(p.id) == done
        with pytest.raises(ValueError, match="status"):
            await store.proposal_finish(p.id, status="approved", result="x")

        q = make_proposal()
        await store.proposal_add(q)
        await store.proposal_claim(q.id, by="U1", now=T0)
        await store.proposal_finish(q.id, status="failed", result="ContainerNotFound")
        got = await store.proposal_get(q.id)
        assert got is not None and (got.status, got.result) == ("failed", "ContainerNotFound")

    # --- timelines --------------------------------------------------------

    async def test_audit_between_is_chronological_half_open_and_limited(self, store: Store) -> None:
        for i in (3, 0, 5, 1, 4, 2):
            await store.audit(
                AuditEvent(T0 + timedelta(minutes=i), "U1", "slack", "click", f"t{i}", "ok")
            )
        # Same instant: insertion order breaks the tie.
        await store.audit(AuditEvent(T0 + timedelta(minutes=2), "U2", "slack", "ack", "t2b", "ok"))
        start, end = T0 + timedelta(minutes=1), T0 + timedelta(minutes=4)
        got = await store.audit_between(start, end)
        assert [e.target for e in got] == ["t1", "t2", "t2b", "t3"]
        assert [e.target for e in await store.audit_between(start)] == [
            "t1",
            "t2",
            "t2b",
            "t3",
            "t4",
            "t5",
        ]
        assert [e.target for e in await store.audit_between(T0, limit=2)] == ["t0", "t1"]
        assert await store.audit_between(T0, limit=0) == []
        assert await store.audit_between(end, start) == []
        cest = timezone(timedelta(hours=2))
        assert await store.audit_between(start.astimezone(cest), end.astimezone(cest)) == got
        with pytest.raises(ValueError, match="naive"):
            await store.audit_between(datetime(2024, 5, 1, 7, 30))
        with pytest.raises(ValueError, match="naive"):
            await store.audit_between(T0, datetime(2024, 5, 1, 8, 30))

    async def test_runs_for_conversation_exact_and_chronological(self, store: Store) -> None:
        conv = '{"surface": "slack", "channel": "C1", "thread": "1700000000.000100"}'
        runs = [
            RunRecord(
                id=uuid.uuid4().hex,
                command=f"c{i}",
                user="U1",
                source="alertmanager",
                conversation=conv,
                started_at=T0 + timedelta(minutes=i),
            )
            for i in (2, 0, 1)
        ]
        twin = RunRecord(**{**runs[1].__dict__, "id": uuid.uuid4().hex, "command": "c0b"})
        elsewhere = RunRecord(
            **{**runs[0].__dict__, "id": uuid.uuid4().hex, "conversation": conv[:-2]}
        )
        for run in (*runs, twin, elsewhere):
            await store.start_run(run)
        got = await store.runs_for_conversation(conv)
        assert [r.command for r in got] == ["c0", "c0b", "c1", "c2"]
        assert got[0] == runs[1]
        assert await store.runs_for_conversation(conv[:-2]) == [elsewhere]
        assert await store.runs_for_conversation("nope") == []

    # --- alert inbox ------------------------------------------------------

    async def test_alert_events_add_a_thousand_at_once(self, store: Store) -> None:
        cest = timezone(timedelta(hours=2))
        events = [
            NewAlertEvent(
                fingerprint=f"fp-{i % 37:03d}",
                status="firing" if i % 3 else "resolved",
                labels={"alertname": f"Alert{i}", "instance": "docker-backend-1", "ü": "é\"'"},
                annotations={"summary": f"line one\nline two {i}"} if i % 2 else {},
                starts_at=(T0 + timedelta(seconds=i)).astimezone(cest) if i % 5 else None,
                ends_at=T0 + timedelta(hours=1) if i % 3 == 0 else None,
                generator_url=f"http://prometheus:9090/graph?i={i}",
            )
            for i in range(1000)
        ]
        received = (T0 + timedelta(seconds=5)).astimezone(cest)
        new_ids = await store.alert_events_add(events, received_at=received)
        assert len(new_ids) == 1000
        assert new_ids == sorted(set(new_ids))  # increasing, no duplicates
        assert await store.alert_events_pending() == 1000
        claimed = await store.alert_events_claim(now=T0, limit=1000)
        assert claimed == [
            stored(e, i, received_at=received) for e, i in zip(events, new_ids, strict=True)
        ]
        assert claimed[1].starts_at is not None
        assert claimed[1].starts_at.utcoffset() == timedelta(0)
        assert claimed[0].received_at.utcoffset() == timedelta(0)
        more = await store.alert_events_add([make_alert("fp-Z")], received_at=T0)
        assert more[0] > new_ids[-1]

    async def test_alert_events_add_groups_stores_every_group_in_one_transaction(
        self, store: Store
    ) -> None:
        groups = [
            ([make_alert(f"fp-{g}-{n}", n=n) for n in range(g)], T0 + timedelta(seconds=g))
            for g in (3, 0, 1, 700)
        ]
        ids = await store.alert_events_add_groups(groups)
        assert [len(group) for group in ids] == [3, 0, 1, 700]
        flat = [i for group in ids for i in group]
        assert flat == sorted(set(flat))  # in input order across the groups
        claimed = await store.alert_events_claim(now=T0, limit=1000)
        expected = [
            stored(e, i, received_at=at)
            for (events, at), group in zip(groups, ids, strict=True)
            for e, i in zip(events, group, strict=True)
        ]
        assert claimed == expected
        await store.alert_events_done([c.id for c in claimed[:500]] + [10**9])
        assert await store.alert_events_pending() == 204
        await store.alert_events_done([])
        assert await store.alert_events_pending() == 204

    async def test_alert_events_add_groups_refuses_a_bad_group_and_stores_none(
        self, store: Store
    ) -> None:
        bad = replace(make_alert("fp-B"), status="pending")
        with pytest.raises(ValueError, match="alert status"):
            await store.alert_events_add_groups([([make_alert("fp-A")], T0), ([bad], T0)])
        assert await store.alert_events_pending() == 0

    async def test_alert_events_add_nothing(self, store: Store) -> None:
        assert await store.alert_events_add([], received_at=T0) == []
        assert await store.alert_events_pending() == 0

    async def test_alert_events_add_refuses_bad_input_and_stores_none_of_the_batch(
        self, store: Store
    ) -> None:
        good = make_alert("fp-A")
        bad_status = NewAlertEvent(**{**good.__dict__, "status": "pending"})
        naive = NewAlertEvent(**{**good.__dict__, "starts_at": datetime(2024, 5, 1, 7, 30)})
        not_strings = NewAlertEvent(**{**good.__dict__, "labels": {"n": 1}})
        no_fingerprint = NewAlertEvent(**{**good.__dict__, "fingerprint": ""})
        with pytest.raises(ValueError, match="status"):
            await store.alert_events_add([good, bad_status], received_at=T0)
        with pytest.raises(ValueError, match="naive"):
            await store.alert_events_add([good, naive], received_at=T0)
        with pytest.raises(ValueError, match="strings"):
            await store.alert_events_add([good, not_strings], received_at=T0)
        with pytest.raises(ValueError, match="fingerprint"):
            await store.alert_events_add([good, no_fingerprint], received_at=T0)
        with pytest.raises(ValueError, match="naive"):
            await store.alert_events_add([good], received_at=datetime(2024, 5, 1, 7, 30))
        assert await store.alert_events_pending() == 0
        with pytest.raises(ValueError, match="lease_s"):
            await store.alert_events_claim(now=T0, lease_s=0)
        with pytest.raises(ValueError, match="naive"):
            await store.alert_events_claim(now=datetime(2024, 5, 1, 7, 30))

    async def test_alert_events_claim_done_and_limit(self, store: Store) -> None:
        events = [make_alert(f"fp-{i}", n=i) for i in range(3)]
        a, b, c = await store.alert_events_add(events, received_at=T0)
        assert ids(await store.alert_events_claim(now=T0, limit=2)) == [a, b]
        assert await store.alert_events_claim(now=T0) == [stored(events[2], c)]
        assert await store.alert_events_claim(now=T0) == []
        assert await store.alert_events_claim(now=T0, limit=0) == []
        await store.alert_event_done(a)
        await store.alert_event_done(a)  # twice is harmless
        await store.alert_event_done(10_000)  # unknown too
        assert await store.alert_events_pending() == 2
        # A done event is never claimed again, even once leases run out.
        later = T0 + timedelta(minutes=5)
        assert ids(await store.alert_events_claim(now=later)) == [b, c]
        # A late retry does not revive a done event.
        await store.alert_event_done(b)
        await store.alert_event_retry(b, at=later, error="late")
        assert ids(await store.alert_events_claim(now=later + timedelta(minutes=5))) == [c]
        await store.alert_event_done(c)
        assert await store.alert_events_pending() == 0

    async def test_alert_event_lease_expiry_makes_it_claimable_again(self, store: Store) -> None:
        (a,) = await store.alert_events_add([make_alert()], received_at=T0)
        assert ids(await store.alert_events_claim(now=T0, lease_s=30)) == [a]
        assert await store.alert_events_claim(now=T0 + timedelta(seconds=29.9)) == []
        (again,) = await store.alert_events_claim(now=T0 + timedelta(seconds=30))
        assert (again.id, again.attempts, again.last_error) == (a, 0, None)

    async def test_alert_event_retry_counts_waits_and_releases(self, store: Store) -> None:
        (a,) = await store.alert_events_add([make_alert()], received_at=T0)
        await store.alert_events_claim(now=T0, lease_s=300)
        at = T0 + timedelta(seconds=60)
        await store.alert_event_retry(a, at=at, error="StoreUnavailable: chat down")
        assert await store.alert_events_pending() == 1
        assert await store.alert_events_claim(now=at - timedelta(microseconds=1)) == []
        # Due at ``at`` although the first lease (300 s) had not run out: retry released it.
        (event,) = await store.alert_events_claim(now=at)
        assert (event.id, event.attempts, event.last_error) == (
            a,
            1,
            "StoreUnavailable: chat down",
        )
        await store.alert_event_retry(a, at=at, error="again")
        (event,) = await store.alert_events_claim(now=at)
        assert (event.attempts, event.last_error) == (2, "again")
        with pytest.raises(ValueError, match="naive"):
            await store.alert_event_retry(a, at=datetime(2024, 5, 1, 7, 30), error="x")

    async def test_alert_events_of_one_fingerprint_are_claimed_in_order(self, store: Store) -> None:
        firing_a, resolved_a, firing_b = await store.alert_events_add(
            [make_alert("A"), make_alert("A", "resolved"), make_alert("B")], received_at=T0
        )
        # Together in one batch is fine: the processor handles a batch in id order.
        assert ids(await store.alert_events_claim(now=T0, limit=3)) == [
            firing_a,
            resolved_a,
            firing_b,
        ]
        later = T0 + timedelta(minutes=1)  # all three leases have run out
        assert ids(await store.alert_events_claim(now=later, limit=1)) == [firing_a]
        # The resolved waits while its firing is leased elsewhere; B is independent.
        assert ids(await store.alert_events_claim(now=later)) == [firing_b]
        assert await store.alert_events_claim(now=later) == []
        # A failed firing still holds its resolved back until it is due again...
        await store.alert_event_retry(firing_a, at=later + timedelta(seconds=10), error="x")
        assert await store.alert_events_claim(now=later + timedelta(seconds=5)) == []
        # ...then both come together, in order.
        due = later + timedelta(seconds=10)
        assert ids(await store.alert_events_claim(now=due, limit=10)) == [firing_a, resolved_a]
        # Done with the firing: the resolved alone, once its lease runs out.
        await store.alert_event_done(firing_a)
        assert ids(await store.alert_events_claim(now=due + timedelta(seconds=30))) == [
            resolved_a,
            firing_b,
        ]

    async def test_alert_event_lease_expiry_of_older_event_frees_the_fingerprint(
        self, store: Store
    ) -> None:
        first, second = await store.alert_events_add(
            [make_alert("A"), make_alert("A", "resolved")], received_at=T0
        )
        assert ids(await store.alert_events_claim(now=T0, limit=1, lease_s=30)) == [first]
        assert await store.alert_events_claim(now=T0 + timedelta(seconds=10)) == []
        # The first claimer died: both come back together, oldest first.
        expired = T0 + timedelta(seconds=30)
        assert ids(await store.alert_events_claim(now=expired)) == [first, second]

    async def test_alert_event_concurrent_claims_never_share_or_reorder(
        self, store: Store, other: Store
    ) -> None:
        fingerprints = [f"fp-{n}" for n in range(6)]
        events = [
            make_alert(fingerprints[i % 6], "resolved" if i % 4 == 3 else "firing", n=i)
            for i in range(60)
        ]
        half = await store.alert_events_add(events[:30], received_at=T0)
        new_ids = half + await other.alert_events_add(events[30:], received_at=T0)
        fp_of = dict(zip(new_ids, (e.fingerprint for e in events), strict=True))
        replicas = (store, other)
        processed: list[int] = []
        for _round in range(60):
            pending = set(new_ids) - set(processed)
            if not pending:
                break
            batches = await asyncio.gather(
                *(replicas[n % 2].alert_events_claim(now=T0, limit=4) for n in range(6))
            )
            claimed = [event_id for batch in batches for event_id in ids(batch)]
            assert claimed, "pending events but nothing claimable"
            assert len(claimed) == len(set(claimed))
            for batch in batches:
                in_batch = set(ids(batch))
                for event_id in in_batch:
                    older = {p for p in pending if fp_of[p] == fp_of[event_id] and p < event_id}
                    assert older <= in_batch, f"event {event_id} claimed before {older}"
            for event_id in claimed:
                await replicas[event_id % 2].alert_event_done(event_id)
            # Each round's batches are processed before the next round claims.
            processed.extend(sorted(claimed))
        assert sorted(processed) == new_ids
        for fp in fingerprints:
            mine = [p for p in processed if fp_of[p] == fp]
            assert mine == sorted(mine)
        assert await store.alert_events_pending() == 0

    async def test_alert_events_survive_close_and_reopen(
        self, store: Store, make_store: StoreFactory
    ) -> None:
        events = [make_alert("A"), make_alert("B"), make_alert("A", "resolved")]
        a, b, a_resolved = await store.alert_events_add(events, received_at=T0)
        assert ids(await store.alert_events_claim(now=T0, limit=1, lease_s=30)) == [a]
        await store.close()
        again = make_store()
        await again.open()
        try:
            assert await again.alert_events_pending() == 3
            # The lease outlives the restart and still holds A's resolved back.
            assert await again.alert_events_claim(now=T0, lease_s=60) == [stored(events[1], b)]
            later = T0 + timedelta(seconds=30)
            assert ids(await again.alert_events_claim(now=later)) == [a, a_resolved]
        finally:
            await again.close()

    # --- incidents --------------------------------------------------------

    async def test_incident_round_trip(self, store: Store) -> None:
        cest = timezone(timedelta(hours=2))
        incident = make_incident(opened_at=T0.astimezone(cest))
        opened = await store.incident_open(incident)
        assert opened == incident
        assert opened is not None and opened.opened_at.utcoffset() == timedelta(0)
        assert await store.incident_get(incident.id) == incident
        assert await store.incident_open_for("fp-A") == incident
        assert await store.incident_open_for("fp-B") is None
        assert await store.incident_get("nope") is None
        with pytest.raises(StoreUnavailable):
            await store.incident_open(replace(incident, fingerprint="fp-other"))

    async def test_incident_refuses_bad_input(self, store: Store) -> None:
        good = make_incident()
        not_strings: dict[str, Any] = {"n": 1}
        for bad, match in [
            (replace(good, priority="P5"), "priority"),
            (replace(good, status="closed"), "status"),
            (replace(good, opened_at=datetime(2024, 5, 1, 7, 30)), "naive"),
            (replace(good, fingerprint=""), "fingerprint"),
            (replace(good, labels=not_strings), "strings"),
        ]:
            with pytest.raises(ValueError, match=match):
                await store.incident_open(bad)
        assert await store.incidents_open() == []
        await store.incident_open(good)
        with pytest.raises(ValueError, match="naive"):
            await store.incident_ack(good.id, by="U1", now=datetime(2024, 5, 1, 7, 31))
        assert await store.incident_get(good.id) == good

    async def test_incident_open_once_per_fingerprint_under_concurrency(
        self, store: Store, other: Store
    ) -> None:
        candidates = [make_incident("fp-A") for _ in range(20)]
        replicas = (store, other)
        results = await asyncio.gather(
            *(replicas[n % 2].incident_open(c) for n, c in enumerate(candidates))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        (won,) = winners
        assert won in candidates
        assert await store.incidents_open() == [won]
        assert await other.incident_open_for("fp-A") == won
        losers = [c for c in candidates if c.id != won.id]
        for loser in losers:
            assert await store.incident_get(loser.id) is None

    async def test_incident_for_a_fingerprint_reopens_after_resolve(self, store: Store) -> None:
        first = make_incident("fp-A")
        assert await store.incident_open(first) == first
        assert await store.incident_open(make_incident("fp-A")) is None
        resolved_at = T0 + timedelta(minutes=7)
        resolved = await store.incident_resolve(first.id, now=resolved_at)
        assert resolved == replace(first, status="resolved", resolved_at=resolved_at)
        assert await store.incident_open_for("fp-A") is None
        second = make_incident("fp-A", opened_at=T0 + timedelta(minutes=30))
        assert await store.incident_open(second) == second
        assert await store.incident_open_for("fp-A") == second
        assert await store.incident_get(first.id) == resolved
        assert await store.incidents_open() == [second]

    async def test_manual_incidents_do_not_collide(self, store: Store) -> None:
        manual = [make_incident(None, title=f"manual {i}") for i in range(3)]
        for incident in manual:
            assert await store.incident_open(incident) == incident
        assert await store.incidents_open() == manual

    async def test_incident_ack_exactly_once(self, store: Store, other: Store) -> None:
        incident = make_incident()
        await store.incident_open(incident)
        now = T0 + timedelta(minutes=3)
        replicas = (store, other)
        results = await asyncio.gather(
            *(replicas[n % 2].incident_ack(incident.id, by=f"U{n}", now=now) for n in range(20))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        (won,) = winners
        assert won.acknowledged_by in {f"U{n}" for n in range(20)}
        assert won == replace(incident, acknowledged_by=won.acknowledged_by, acknowledged_at=now)
        assert await other.incident_get(incident.id) == won
        # Acknowledged: no escalation any more.
        assert await store.incident_escalate(incident.id, now=now) is None
        assert await store.incident_ack(incident.id, by="U99", now=now) is None
        assert await store.incident_ack("nope", by="U1", now=now) is None

    async def test_incident_escalate_exactly_once_then_ack_still_possible(
        self, store: Store, other: Store
    ) -> None:
        incident = make_incident()
        await store.incident_open(incident)
        now = T0 + timedelta(minutes=15)
        replicas = (store, other)
        results = await asyncio.gather(
            *(replicas[n % 2].incident_escalate(incident.id, now=now) for n in range(20))
        )
        winners = [r for r in results if r is not None]
        assert winners == [replace(incident, escalated_at=now)]
        assert await store.incident_escalate(incident.id, now=now) is None
        acked = await store.incident_ack(incident.id, by="U2", now=now + timedelta(minutes=1))
        assert acked is not None
        assert (acked.escalated_at, acked.acknowledged_by) == (now, "U2")

    async def test_incident_resolve_exactly_once_and_final(
        self, store: Store, other: Store
    ) -> None:
        incident = make_incident()
        await store.incident_open(incident)
        now = T0 + timedelta(minutes=9)
        replicas = (store, other)
        results = await asyncio.gather(
            *(replicas[n % 2].incident_resolve(incident.id, now=now) for n in range(20))
        )
        winners = [r for r in results if r is not None]
        assert winners == [replace(incident, status="resolved", resolved_at=now)]
        later = now + timedelta(minutes=1)
        assert await store.incident_resolve(incident.id, now=later) is None
        assert await store.incident_touch(incident.id, now=later) is None
        assert await store.incident_ack(incident.id, by="U1", now=later) is None
        assert await store.incident_escalate(incident.id, now=later) is None
        assert await store.incident_get(incident.id) == winners[0]
        assert await store.incidents_open() == []

    async def test_incident_touch_counts_repeats(self, store: Store, other: Store) -> None:
        incident = make_incident()
        await store.incident_open(incident)
        for minutes in (1, 2, 3):
            touched = await store.incident_touch(incident.id, now=T0 + timedelta(minutes=minutes))
            assert touched is not None and touched.repeats == minutes
        assert touched == replace(incident, repeats=3, last_seen_at=T0 + timedelta(minutes=3))
        replicas = (store, other)
        now = T0 + timedelta(minutes=4)
        results = await asyncio.gather(
            *(replicas[n % 2].incident_touch(incident.id, now=now) for n in range(10))
        )
        assert sorted(r.repeats for r in results if r is not None) == list(range(4, 14))
        got = await store.incident_get(incident.id)
        assert got is not None and (got.repeats, got.last_seen_at) == (13, now)
        assert await store.incident_touch("nope", now=now) is None
        # A batch's repeats folded into one write.
        folded = await store.incident_touch(incident.id, now=now, times=5)
        assert folded is not None and folded.repeats == 18
        with pytest.raises(ValueError):
            await store.incident_touch(incident.id, now=now, times=0)

    async def test_incident_thread_and_record(self, store: Store) -> None:
        incident = make_incident()
        await store.incident_open(incident)
        conv = '{"surface": "slack", "channel": "C123", "thread_ts": "1700000000.000100"}'
        await store.incident_set_thread(incident.id, root_key="inc-root-1", conversation=conv)
        await store.incident_resolve(incident.id, now=T0 + timedelta(minutes=5))
        await store.incident_set_record(incident.id, path="incidents/2024-05-01-backend-down.md")
        got = await store.incident_get(incident.id)
        assert got == replace(
            incident,
            root_key="inc-root-1",
            conversation=conv,
            status="resolved",
            resolved_at=T0 + timedelta(minutes=5),
            record_path="incidents/2024-05-01-backend-down.md",
        )
        # Unknown ids are a no-op, as for proposal_finish.
        await store.incident_set_thread("nope", root_key="k", conversation="{}")
        await store.incident_set_record("nope", path="x.md")
        assert await store.incident_get("nope") is None

    async def test_incident_record_text_is_kept(self, store: Store) -> None:
        incident = make_incident()
        await store.incident_open(incident)
        assert await store.incident_record_text(incident.id) is None
        text = "# P0 BackendDown\n\n- Opened: ...\n" + "x" * 100_000
        await store.incident_set_record(incident.id, path="", text=text)
        assert await store.incident_record_text(incident.id) == text
        # A later path without text keeps the text.
        await store.incident_set_record(incident.id, path="incidents/x.md")
        assert await store.incident_record_text(incident.id) == text
        got = await store.incident_get(incident.id)
        assert got is not None and got.record_path == "incidents/x.md"
        assert await store.incident_record_text("nope") is None

    # --- alert-storm digests ----------------------------------------------

    async def test_digest_is_created_once_per_minute_and_lists_its_incidents(
        self, store: Store
    ) -> None:
        minute = timedelta(minutes=1)
        a, b, c = (make_incident(f"fp-{n}", opened_at=T0 + timedelta(seconds=n)) for n in range(3))
        for incident in (a, b, c):
            await store.incident_open(incident)
        first, created = await store.digest_join(a.id, now=T0, window=minute, new_id="d1")
        assert created and first == Digest(id="d1", started_at=T0)
        joined, created = await store.digest_join(
            b.id, now=T0 + timedelta(seconds=59), window=minute, new_id="d2"
        )
        assert not created and joined == first  # the one of this minute, not posted yet
        assert await store.digest_get("d2") is None
        conv = '{"surface": "slack", "channel": "C1", "root": "dg-1"}'
        posted = await store.digest_set_thread("d1", root_key="dg-1", conversation=conv)
        assert posted == Digest(id="d1", started_at=T0, root_key="dg-1", conversation=conv)
        assert await store.digest_get("d1") == posted
        assert [i.id for i in await store.digest_incidents("d1")] == [a.id, b.id]
        # A minute after it started, the next storm alert starts a new digest.
        later, created = await store.digest_join(c.id, now=T0 + minute, window=minute, new_id="d3")
        assert created and later == Digest(id="d3", started_at=T0 + minute)
        assert [i.id for i in await store.digest_incidents("d3")] == [c.id]
        assert [i.id for i in await store.digest_incidents("d1")] == [a.id, b.id]
        assert await store.digest_incidents("nope") == []
        assert await store.digest_set_thread("nope", root_key="k", conversation="{}") is None

    async def test_digest_is_created_exactly_once_under_concurrency(
        self, store: Store, other: Store
    ) -> None:
        incidents = [make_incident(f"fp-{n}") for n in range(20)]
        for incident in incidents:
            await store.incident_open(incident)
        replicas = (store, other)
        now = T0 + timedelta(seconds=5)
        results = await asyncio.gather(
            *(
                replicas[n % 2].digest_join(
                    incident.id, now=now, window=timedelta(minutes=1), new_id=f"d{n}"
                )
                for n, incident in enumerate(incidents)
            )
        )
        creators = [digest for digest, created in results if created]
        assert len(creators) == 1
        (digest,) = creators
        assert {d for d, _ in results} == {digest}  # everyone joined the one digest
        listed = await other.digest_incidents(digest.id)
        assert sorted(i.id for i in listed) == sorted(i.id for i in incidents)

    async def test_a_posted_digest_names_its_unnamed_incidents_once(self, store: Store) -> None:
        minute = timedelta(minutes=1)
        made = [make_incident(f"fp-{n}", opened_at=T0 + timedelta(seconds=n)) for n in range(4)]
        for incident in made:
            await store.incident_open(incident)
        for incident in made[:3]:
            await store.digest_join(incident.id, now=T0, window=minute, new_id="d1")
        # Not posted yet: nothing to name.
        assert await store.digests_unnamed(since=T0 - minute) == []
        conv = '{"surface": "slack", "channel": "C1", "root": "dg-1"}'
        posted = await store.digest_set_thread("d1", root_key="dg-1", conversation=conv)
        assert posted is not None
        assert await store.digests_unnamed(since=T0 - minute) == [posted]
        assert await store.digests_unnamed(since=T0) == []  # started before the horizon
        named = await store.digest_name(posted)
        assert [i.id for i in named] == [i.id for i in made[:3]]
        assert {(i.root_key, i.conversation, i.digest_id) for i in named} == {("dg-1", conv, "d1")}
        assert await store.digest_name(posted) == []  # each named once
        assert await store.digests_unnamed(since=T0 - minute) == []
        # A late joiner is the only one left to name; the incident outside stays as it is.
        await store.digest_join(
            made[3].id, now=T0 + timedelta(seconds=9), window=minute, new_id="x"
        )
        assert [i.id for i in await store.digest_name(posted)] == [made[3].id]
        assert (await store.incident_get(made[3].id)) == replace(
            made[3], root_key="dg-1", conversation=conv, digest_id="d1", last_seen_at=None
        )

    async def test_two_replicas_naming_a_digest_each_claim_an_incident_once(
        self, store: Store, other: Store
    ) -> None:
        incidents = [make_incident(f"fp-{n}") for n in range(30)]
        for incident in incidents:
            await store.incident_open(incident)
            await store.digest_join(incident.id, now=T0, window=timedelta(minutes=1), new_id="d1")
        digest = await store.digest_set_thread("d1", root_key="dg-1", conversation="{}")
        assert digest is not None
        claims = await asyncio.gather(
            *(replica.digest_name(digest) for replica in (store, other, store, other))
        )
        ids = [i.id for claim in claims for i in claim]
        assert sorted(ids) == sorted(i.id for i in incidents)  # every one, none twice

    async def test_incidents_resolved_for_a_fingerprint_since(self, store: Store) -> None:
        a, b = make_incident("fp-A"), make_incident("fp-B")
        for incident in (a, b):
            await store.incident_open(incident)
        at = T0 + timedelta(minutes=3)
        resolved = await store.incident_resolve(a.id, now=at)
        assert await store.incidents_resolved_for("fp-A", since=at) == [resolved]
        assert await store.incidents_resolved_for("fp-A", since=at + timedelta(seconds=1)) == []
        assert await store.incidents_resolved_for("fp-B", since=T0) == []  # still open

    async def test_incidents_open_between_and_opened_since(self, store: Store) -> None:
        at = [T0 + timedelta(minutes=m) for m in range(5)]
        made = [make_incident(f"fp-{i}", opened_at=at[i]) for i in range(5)]
        for i in (3, 0, 4, 1, 2):
            await store.incident_open(made[i])
        await store.incident_resolve(made[1].id, now=at[4])
        manual = make_incident(None, opened_at=at[2])  # same instant: insertion order after
        await store.incident_open(manual)
        assert [i.id for i in await store.incidents_open()] == [
            made[0].id,
            made[2].id,
            manual.id,
            made[3].id,
            made[4].id,
        ]
        between = await store.incidents_between(at[1], at[3])
        assert [i.id for i in between] == [made[1].id, made[2].id, manual.id]
        assert between[0].status == "resolved"
        assert await store.incidents_between(at[3], at[1]) == []
        assert await store.incidents_opened_since(at[2]) == 4
        assert await store.incidents_opened_since(at[4] + timedelta(microseconds=1)) == 0
        assert await store.incidents_opened_since(T0 - timedelta(days=1)) == 6
        with pytest.raises(ValueError, match="naive"):
            await store.incidents_opened_since(datetime(2024, 5, 1))
        with pytest.raises(ValueError, match="naive"):
            await store.incidents_between(datetime(2024, 5, 1), at[4])

    async def test_version_2_database_upgrades_to_alerts_and_incidents(
        self, make_store: StoreFactory
    ) -> None:
        old = make_store(MIGRATIONS[:2])
        await old.open()
        run = make_run()
        p = make_proposal()
        try:
            assert await old.schema_version() == 2
            await old.start_run(run)
            await old.proposal_add(p)
            await add(old, "m1")
        finally:
            await old.close()
        store = make_store()
        await store.open()
        try:
            assert LATEST_VERSION >= 3
            assert await store.schema_version() == LATEST_VERSION
            assert await store.get_run(run.id) == run
            assert await store.runs_for_conversation(run.conversation) == [run]
            assert await store.proposal_get(p.id) == p
            assert await store.outbox_pending() == 1
            event = make_alert()
            (event_id,) = await store.alert_events_add([event], received_at=T0)
            assert await store.alert_events_claim(now=T0) == [stored(event, event_id)]
            incident = make_incident()
            assert await store.incident_open(incident) == incident
            assert await store.incident_open(make_incident()) is None
        finally:
            await store.close()

    async def test_version_3_database_upgrades_to_job_runs(self, make_store: StoreFactory) -> None:
        old = make_store(MIGRATIONS[:3])
        await old.open()
        run = make_run()
        incident = make_incident()
        try:
            assert await old.schema_version() == 3
            await old.start_run(run)
            await write_old_incident(old, incident)
            (event_id,) = await old.alert_events_add([make_alert()], received_at=T0)
        finally:
            await old.close()
        store = make_store()
        await store.open()
        try:
            assert LATEST_VERSION >= 4
            assert await store.schema_version() == LATEST_VERSION
            assert await store.get_run(run.id) == run
            assert await store.incident_open_for("fp-A") == incident
            assert ids(await store.alert_events_claim(now=T0)) == [event_id]
            assert await store.job_claim(JOB, slot=SLOT, runner="host-a:1", now=T0) is True
            assert await store.job_last(JOB) == JobRun(JOB, SLOT, T0, "host-a:1")
        finally:
            await store.close()

    # --- scheduled jobs ---------------------------------------------------

    async def test_job_claim_finish_and_last(self, store: Store) -> None:
        cest = timezone(timedelta(hours=2))
        started = T0 + timedelta(seconds=1)
        assert await store.job_last(JOB) is None
        assert await store.job_runs(JOB) == []
        # The slot given in another zone is the same instant, stored and returned as UTC.
        claimed = await store.job_claim(
            JOB, slot=SLOT.astimezone(cest), runner="host-a:1", now=started
        )
        assert claimed is True
        running = JobRun(job=JOB, slot=SLOT, started_at=started, runner="host-a:1")
        last = await store.job_last(JOB)
        assert last == running
        assert last is not None and last.slot.tzinfo == UTC and last.status == "running"
        # Taken: nobody claims it again, not even its own runner, and the row is untouched.
        assert await store.job_claim(JOB, slot=SLOT, runner="host-b:2", now=started) is False
        assert await store.job_claim(JOB, slot=SLOT, runner="host-a:1", now=started) is False
        assert await store.job_runs(JOB) == [running]

        finished = T0 + timedelta(seconds=42)
        await store.job_finish(JOB, slot=SLOT.astimezone(cest), status="warn", now=finished)
        done = replace(running, status="warn", finished_at=finished)
        assert await store.job_last(JOB) == done
        # Finishing twice keeps the first outcome; finishing a never-claimed slot adds nothing.
        await store.job_finish(JOB, slot=SLOT, status="failed", now=finished + timedelta(1))
        await store.job_finish(JOB, slot=SLOT + timedelta(days=1), status="ok", now=finished)
        assert await store.job_runs(JOB) == [done]
        # Other jobs have their own slots.
        assert await store.job_claim("weekly-routine", slot=SLOT, runner="h:3", now=T0) is True
        assert await store.job_runs(JOB) == [done]
        assert await store.job_last("weekly-routine") == JobRun("weekly-routine", SLOT, T0, "h:3")

    async def test_job_runs_newest_slot_first_whatever_the_claim_order(self, store: Store) -> None:
        slots = [SLOT + timedelta(days=d) for d in range(5)]
        # A catch-up after downtime can claim an older slot after a newer one.
        for day in (2, 0, 4, 1, 3):
            now = T0 + timedelta(minutes=day)
            assert await store.job_claim(JOB, slot=slots[day], runner="r:1", now=now)
        await store.job_claim("weekly-routine", slot=SLOT + timedelta(days=9), runner="r", now=T0)
        runs = await store.job_runs(JOB)
        assert [r.slot for r in runs] == slots[::-1]
        assert [r.started_at for r in runs] == [T0 + timedelta(minutes=d) for d in (4, 3, 2, 1, 0)]
        assert [r.slot for r in await store.job_runs(JOB, limit=2)] == [slots[4], slots[3]]
        assert await store.job_runs(JOB, limit=0) == []
        assert await store.job_runs("no-such-job") == []
        last = await store.job_last(JOB)
        assert last is not None and last.slot == slots[4]

    async def test_job_slot_is_claimed_exactly_once_under_concurrency(
        self, store: Store, other: Store
    ) -> None:
        for day in range(3):
            slot = SLOT + timedelta(days=day)
            results = await asyncio.gather(
                *(
                    (store if i % 2 else other).job_claim(
                        JOB, slot=slot, runner=f"replica-{i}", now=T0
                    )
                    for i in range(20)
                )
            )
            assert sum(results) == 1, results
            winner = f"replica-{results.index(True)}"
            last = await other.job_last(JOB)
            assert last is not None and (last.slot, last.runner) == (slot, winner)
        assert len(await store.job_runs(JOB)) == 3

    async def test_an_exclusive_claim_waits_for_the_running_slot_of_its_job(
        self, store: Store, other: Store
    ) -> None:
        first, second = T0, T0 + timedelta(minutes=3)
        lease = 600.0
        claim = partial(store.job_claim, "restore", exclusive=True, lease_s=lease)
        assert await claim(slot=first, runner="host-a:1", now=first) is True
        # Another slot of the same job, on another replica, while the first runs: refused.
        refused = await other.job_claim(
            "restore", slot=second, runner="host-b:2", now=second, lease_s=lease, exclusive=True
        )
        assert refused is False
        assert [r.slot for r in await store.job_runs("restore")] == [first]
        # Other jobs, and claims that are not exclusive, are not held back.
        assert await claim(slot=second, runner="h", now=second) is False
        assert await store.job_claim(JOB, slot=second, runner="h", now=second, exclusive=True)
        # Once the first finished, the next may run.
        await store.job_finish("restore", slot=first, status="ok", now=second)
        assert await claim(slot=second, runner="host-b:2", now=second) is True
        # A runner that stopped renewing holds the job no longer than its lease.
        third = second + timedelta(seconds=lease - 1)
        assert await claim(slot=third, runner="host-c:3", now=third) is False
        third += timedelta(seconds=1)
        assert await claim(slot=third, runner="host-c:3", now=third) is True

    async def test_exclusive_claims_of_one_job_race_to_one_winner(
        self, store: Store, other: Store
    ) -> None:
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).job_claim(
                    "restore",
                    slot=T0 + timedelta(seconds=i),
                    runner=f"replica-{i}",
                    now=T0 + timedelta(seconds=30),
                    exclusive=True,
                )
                for i in range(12)
            )
        )
        assert sum(results) == 1, results
        [running] = await store.job_runs("restore")
        assert running.runner == f"replica-{results.index(True)}"

    async def test_job_refuses_bad_input(self, store: Store) -> None:
        with pytest.raises(ValueError, match="naive"):
            await store.job_claim(JOB, slot=datetime(2024, 5, 1, 7, 30), runner="r", now=T0)
        with pytest.raises(ValueError, match="naive"):
            await store.job_claim(JOB, slot=SLOT, runner="r", now=datetime(2024, 5, 1))
        with pytest.raises(ValueError, match="job name"):
            await store.job_claim("", slot=SLOT, runner="r", now=T0)
        with pytest.raises(ValueError, match="runner"):
            await store.job_claim(JOB, slot=SLOT, runner="", now=T0)
        assert await store.job_runs(JOB) == []
        assert await store.job_claim(JOB, slot=SLOT, runner="r", now=T0)
        for status in ("running", "pending", "OK"):
            with pytest.raises(ValueError, match="status"):
                await store.job_finish(JOB, slot=SLOT, status=status, now=T0)
        with pytest.raises(ValueError, match="naive"):
            await store.job_finish(JOB, slot=SLOT, status="ok", now=datetime(2024, 5, 1))
        last = await store.job_last(JOB)
        assert last is not None and last.status == "running" and last.finished_at is None

    async def test_job_slot_left_running_past_its_lease_is_reported_once(
        self, store: Store, other: Store
    ) -> None:
        assert await store.job_claim(JOB, slot=SLOT, runner="a:1", now=T0, lease_s=60)
        assert await store.job_renew(
            JOB, slot=SLOT, runner="a:1", now=T0 + timedelta(seconds=50), lease_s=60
        )
        # Renewed until T0+110: not lost yet, whoever looks.
        assert await other.job_lost(now=T0 + timedelta(seconds=100)) == []
        assert (
            await other.job_renew(JOB, slot=SLOT, runner="b:2", now=T0, lease_s=60) is False
        )  # not b's to renew
        late = T0 + timedelta(seconds=111)
        found = await asyncio.gather(store.job_lost(now=late), other.job_lost(now=late))
        lost = [run for batch in found for run in batch]
        assert lost == [JobRun(JOB, SLOT, T0, "a:1", "failed", late)]
        assert await store.job_lost(now=late + timedelta(hours=1)) == []
        # The stopped runner cannot renew it, nor finish it as if nothing happened,
        # and nobody runs the slot again.
        assert await store.job_renew(JOB, slot=SLOT, runner="a:1", now=late, lease_s=60) is False
        await store.job_finish(JOB, slot=SLOT, status="ok", now=late)
        assert (await store.job_last(JOB)) == lost[0]
        assert await other.job_claim(JOB, slot=SLOT, runner="b:2", now=late) is False

    async def test_job_finished_in_time_is_never_lost(self, store: Store) -> None:
        await store.job_claim(JOB, slot=SLOT, runner="a:1", now=T0, lease_s=60)
        await store.job_finish(JOB, slot=SLOT, status="warn", now=T0 + timedelta(seconds=5))
        assert await store.job_lost(now=T0 + timedelta(days=1)) == []

    async def test_job_last_success_per_job(self, store: Store) -> None:
        assert await store.job_last_success() == {}
        day = timedelta(days=1)
        for n, status in enumerate(("ok", "crit", "failed")):
            slot = SLOT + n * day
            await store.job_claim(JOB, slot=slot, runner="a:1", now=slot)
            await store.job_finish(JOB, slot=slot, status=status, now=slot + timedelta(seconds=9))
        await store.job_claim("weekly", slot=SLOT, runner="a:1", now=SLOT)
        # crit is a finished run (its checks found problems); failed is not.
        assert await store.job_last_success() == {
            JOB: (SLOT + day, SLOT + day + timedelta(seconds=9))
        }

    async def test_job_runs_survive_close_and_reopen(
        self, store: Store, make_store: StoreFactory
    ) -> None:
        await store.job_claim(JOB, slot=SLOT, runner="r:1", now=T0)
        await store.job_finish(JOB, slot=SLOT, status="ok", now=T0 + timedelta(seconds=3))
        await store.close()
        again = make_store()
        await again.open()
        try:
            assert await again.job_runs(JOB) == [
                JobRun(JOB, SLOT, T0, "r:1", "ok", T0 + timedelta(seconds=3))
            ]
            assert await again.job_claim(JOB, slot=SLOT, runner="r:2", now=T0) is False
        finally:
            await again.close()

    # --- leadership -------------------------------------------------------

    async def test_leadership_is_exclusive_idempotent_and_handed_over(
        self, store: Store, other: Store
    ) -> None:
        assert await store.leader_check(LEADER) is False
        assert await store.leader_acquire(LEADER) is True
        assert await store.leader_acquire(LEADER) is True  # already held: still True
        assert await store.leader_check(LEADER) is True
        assert await other.leader_acquire(LEADER) is False
        assert await other.leader_check(LEADER) is False
        # Another name is another lock.
        assert await other.leader_acquire("sms-bot-other") is True
        assert await store.leader_acquire("sms-bot-other") is False

        await store.leader_release(LEADER)
        assert await store.leader_check(LEADER) is False
        assert await other.leader_acquire(LEADER) is True
        assert await other.leader_check(LEADER) is True
        assert await store.leader_acquire(LEADER) is False
        # Releasing what one does not hold changes nothing, twice over.
        await store.leader_release(LEADER)
        await store.leader_release("never-held")
        assert await other.leader_check(LEADER) is True
        await other.leader_release(LEADER)
        await other.leader_release(LEADER)
        assert await store.leader_acquire(LEADER) is True

    async def test_leadership_is_released_by_close(self, store: Store, other: Store) -> None:
        assert await store.leader_acquire(LEADER) is True
        assert await store.leader_acquire("sms-bot-other") is True
        await store.close()
        assert await store.leader_check(LEADER) is False
        assert await other.leader_acquire(LEADER) is True
        assert await other.leader_acquire("sms-bot-other") is True

    async def test_leadership_checks_its_input_and_needs_an_open_store(
        self, store: Store, make_store: StoreFactory
    ) -> None:
        for bad in ("", "../escape", "a b", "-dash-first", "x" * 101):
            with pytest.raises(ValueError, match="leader name"):
                await store.leader_acquire(bad)
        unopened = make_store()
        with pytest.raises(StoreUnavailable, match="not open"):
            await unopened.leader_acquire(LEADER)
        assert await unopened.leader_check(LEADER) is False
        await unopened.leader_release(LEADER)

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

    # --- migration 9 (issue 12): capacity samples, key rotations, retention --------

    async def test_capacity_samples_round_trip_and_replace(self, store: Store) -> None:
        day = timedelta(days=1)
        await store.capacity_sample_put(T0 - day, {"db_bytes": 1e8, "users": 18})
        await store.capacity_sample_put(T0, {"db_bytes": 2e8, "users": 20})
        await store.capacity_sample_put(T0, {"users": 21})  # the same reading again: replaced
        got = await store.capacity_samples(T0 - day)
        assert [(s.at, s.metric, s.value) for s in got] == [
            (T0 - day, "db_bytes", 1e8),
            (T0 - day, "users", 18.0),
            (T0, "db_bytes", 2e8),
            (T0, "users", 21.0),
        ]
        assert [s.at for s in await store.capacity_samples(T0)] == [T0, T0]

    async def test_key_rotations_newest_per_key(self, store: Store) -> None:
        assert await store.key_rotations_last() == []
        await store.key_rotation_add("BACKUP_ENCRYPTION_KEY", at=T0 - timedelta(days=40), by="U1")
        await store.key_rotation_add("BACKUP_ENCRYPTION_KEY", at=T0, by="U2")
        await store.key_rotation_add("ADMIN_PASSWORD", at=T0 - timedelta(days=3), by="U1")
        got = await store.key_rotations_last()
        assert [(r.key, r.rotated_at, r.rotated_by) for r in got] == [
            ("ADMIN_PASSWORD", T0 - timedelta(days=3), "U1"),
            ("BACKUP_ENCRYPTION_KEY", T0, "U2"),
        ]

    async def test_prune_deletes_old_finished_rows_and_keeps_everything_pending(
        self, store: Store
    ) -> None:
        old, new = T0 - timedelta(days=40), T0
        cutoff = T0 - timedelta(days=30)
        # Audit: one year.
        for at in (T0 - timedelta(days=400), old):
            await store.audit(
                AuditEvent(at=at, actor="U1", source="slack", action="a", target="t", outcome="ok")
            )
        # Runs: an old finished one (with a step), an old one still running, an old one
        # whose proposal waits for a click, and a new one.
        finished, running, waiting, recent = (
            make_run(started_at=old),
            make_run(started_at=old),
            make_run(started_at=old),
            make_run(started_at=new),
        )
        for run in (finished, running, waiting, recent):
            await store.start_run(run)
        for run in (finished, waiting, recent):
            await store.finish_run(run.id, status="ok", finished_at=run.started_at)
        await store.save_step(
            StepRecord(
                run_id=finished.id,
                index=0,
                name="s",
                status="ok",
                started_at=old,
                duration_s=1.0,
                summary="",
            )
        )
        proposal = replace(make_proposal(created_at=old), run_id=waiting.id)
        await store.proposal_add(proposal)
        # Outbox: an old delivered item, an old undelivered one.
        delivered = await add(store, "k-done", now=old)
        (claimed,) = await store.outbox_claim(now=old)
        await store.outbox_done(claimed.id)
        undelivered = await add(store, "k-pending", now=old)
        # Alert inbox: an old processed event, an old unprocessed one.
        done_id, pending_id = await store.alert_events_add(
            [make_alert("fp-done"), make_alert("fp-pending")], received_at=old
        )
        await store.alert_event_done(done_id)

        counts = await store.prune(
            PruneCutoffs(audit=T0 - timedelta(days=365), runs=cutoff, outbox=cutoff, alerts=cutoff)
        )
        assert counts == {"audit": 1, "runs": 1, "outbox": 1, "alerts": 1}
        assert [e.at for e in await store.recent_audit()] == [old]
        assert await store.get_run(finished.id) is None
        assert await store.list_steps(finished.id) == []
        for kept in (running, waiting, recent):
            assert await store.get_run(kept.id) is not None
        left = await store.outbox_items(include_done=True)
        assert ids(left) == [undelivered] and delivered != undelivered
        assert await store.alert_events_pending() == 1
        assert ids(await store.alert_events_claim(now=T0)) == [pending_id]
        # Again: nothing more to prune.
        assert await store.prune(
            PruneCutoffs(audit=T0 - timedelta(days=365), runs=cutoff, outbox=cutoff, alerts=cutoff)
        ) == {"audit": 0, "runs": 0, "outbox": 0, "alerts": 0}

    async def test_one_open_change_at_a_time(self, store: Store) -> None:
        assert await store.change_current() is None
        first = Change(
            id="c1", description="upgrade", critical=True, started_by="U1", started_at=T0
        )
        assert await store.change_start(first) == first
        second = replace(first, id="c2", description="other", critical=False)
        assert (await store.change_start(second)).id == "c1"  # refused: c1 is open
        await store.change_update("c1", conversation="thread", before='{"p95_ms": 350}')
        await store.change_update("c1", silence_id="s1")
        current = await store.change_current()
        assert current is not None
        assert (current.conversation, current.silence_id, current.before) == (
            "thread",
            "s1",
            '{"p95_ms": 350}',
        )
        ended = await store.change_end("c1", status="done", at=T0 + timedelta(minutes=20))
        assert ended is not None and ended.status == "done"
        assert ended.ended_at == T0 + timedelta(minutes=20)
        assert await store.change_end("c1", status="aborted", at=T0) is None  # once
        assert await store.change_current() is None
        assert (await store.change_start(second)).id == "c2"  # now it may open
