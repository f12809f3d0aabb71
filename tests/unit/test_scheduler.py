"""The scheduler: cron semantics, one run per slot, catch-up after downtime, APScheduler firing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import Settings
from bot.cron import cron_trigger, next_fire, previous_fire
from bot.deps import Deps
from bot.messages import Status
from bot.scheduler import JobSpec, Scheduler
from bot.store import StoreUnavailable, open_store
from handlers.jobs import schedule_rows
from tests.unit.conftest import make_settings


def test_five_and_six_field_crons() -> None:
    trigger = cron_trigger("30 7 * * *", "Europe/Athens")
    now = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)  # 06:00 in Athens
    fire = next_fire(trigger, now)
    assert fire is not None and fire.astimezone(UTC) == datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    every5s = cron_trigger("*/5 * * * * *", "UTC")
    assert next_fire(every5s, datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 0, 5, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        cron_trigger("* * *", "UTC")


def test_first_monday_of_the_month() -> None:
    trigger = cron_trigger("0 9 1-7 * mon", "UTC")
    fire = next_fire(trigger, datetime(2026, 11, 26, tzinfo=UTC))
    assert fire == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # the first Monday of December
    fire = next_fire(trigger, datetime(2026, 12, 8, tzinfo=UTC))
    assert fire == datetime(2027, 1, 4, 9, 0, tzinfo=UTC)


def test_previous_fire() -> None:
    trigger = cron_trigger("30 7 * * *", "UTC")
    now = datetime(2026, 11, 26, 7, 45, tzinfo=UTC)
    assert previous_fire(trigger, now, lookback=timedelta(hours=1)) == datetime(
        2026, 11, 26, 7, 30, tzinfo=UTC
    )
    assert previous_fire(trigger, now, lookback=timedelta(minutes=10)) is None


def test_schedule_lists_every_job_with_its_next_run(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    rows = schedule_rows(settings, datetime(2026, 11, 26, 8, 0, tzinfo=UTC))  # a Thursday
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == {
        "morning-summary",
        "backup-freshness",
        "weekly-checklist",
        "weekly-report",
        "monthly-maintenance",
        "sla-report",
        "prune",
        "capacity-report",
        "capacity-sample",
        "compliance",
    }
    assert by_name["sla-report"][3].startswith("Tue 2026-12-01 09:00")
    assert by_name["morning-summary"][3].startswith("Fri 2026-11-27 07:30")
    assert by_name["weekly-report"][3].startswith("Fri 2026-11-27 16:00")
    assert by_name["monthly-maintenance"][3].startswith("Mon 2026-12-07 09:00")
    assert by_name["backup-freshness"][2] == "UTC"


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Status:
        self.calls += 1
        return Status.OK


def _scheduler(
    deps: Deps,
    counter: Counter,
    *,
    cron: str = "30 7 * * *",
    runner: str = "a",
    grace_min: float = 60,
) -> Scheduler:
    job = JobSpec("morning-summary", "Morning summary", cron, "UTC", counter)
    return Scheduler(
        deps, [job], grace=timedelta(minutes=grace_min), runner=runner, retry_leadership_s=0.05
    )


async def test_a_slot_runs_once_even_with_two_schedulers(deps: Deps) -> None:
    counter = Counter()
    slot = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    first, second = _scheduler(deps, counter), _scheduler(deps, counter, runner="b")
    results = await asyncio.gather(
        first.fire("morning-summary", slot), second.fire("morning-summary", slot)
    )
    assert sorted(results) == [False, True]
    assert counter.calls == 1
    last = await deps.store.job_last("morning-summary")
    assert last is not None and last.slot == slot and last.status == "ok"


async def test_a_missed_run_catches_up_once_within_the_grace(deps: Deps) -> None:
    counter = Counter()
    at = {"now": datetime(2026, 11, 26, 8, 10, tzinfo=UTC)}  # the bot was down at 07:30
    clocked = replace(deps, clock=lambda: at["now"])
    assert await _scheduler(clocked, counter).catch_up() == ["morning-summary"]
    assert counter.calls == 1
    # Started again ten minutes later: the slot already ran, nothing more.
    at["now"] = datetime(2026, 11, 26, 8, 20, tzinfo=UTC)
    assert await _scheduler(clocked, counter).catch_up() == []
    assert counter.calls == 1


async def test_a_run_missed_beyond_the_grace_is_skipped(deps: Deps) -> None:
    counter = Counter()
    clocked = replace(deps, clock=lambda: datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    assert await _scheduler(clocked, counter).catch_up() == []
    assert counter.calls == 0
    assert await deps.store.job_last("morning-summary") is None


async def test_apscheduler_fires_the_job_while_leading(deps: Deps, tmp_path: Path) -> None:
    counter = Counter()
    live = replace(deps, clock=lambda: datetime.now(UTC))
    scheduler = _scheduler(live, counter, cron="* * * * * *", grace_min=0)
    task = asyncio.create_task(scheduler.run())
    try:
        deadline = time.monotonic() + 15
        while counter.calls < 2:
            assert time.monotonic() < deadline, "APScheduler did not fire the job"
            await asyncio.sleep(0.1)
        assert "morning-summary" in scheduler.next_run_times()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    runs = await deps.store.job_runs("morning-summary")
    assert len({r.slot for r in runs}) == len(runs) >= 2


async def test_only_one_of_two_schedulers_leads(deps: Deps, tmp_path: Path) -> None:
    other_store = open_store(deps.settings.bot_state_url)
    await other_store.open()
    try:
        live = replace(deps, clock=lambda: datetime.now(UTC))
        a_count, b_count = Counter(), Counter()
        a = _scheduler(live, a_count, cron="* * * * * *", runner="a", grace_min=0)
        b = _scheduler(
            replace(live, store=other_store), b_count, cron="* * * * * *", runner="b", grace_min=0
        )
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        deadline = time.monotonic() + 15
        while a_count.calls + b_count.calls < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (a_count.calls == 0) != (b_count.calls == 0), (a_count.calls, b_count.calls)
    finally:
        await other_store.close()


class Blocking:
    """A job that runs until the test lets it finish (or its replica is killed)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> Status:
        self.calls += 1
        self.started.set()
        await self.finish.wait()
        return Status.OK


async def test_a_slot_left_running_by_a_dead_replica_is_reported_once_and_not_rerun(
    deps: Deps, settings: Settings
) -> None:
    slot = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    at = {"now": slot}
    clocked = replace(deps, clock=lambda: at["now"])
    # Replica a: its own store handle, killed while the job runs.
    dead_store = open_store(settings.bot_state_url)
    await dead_store.open()
    job = Blocking()
    dying = Scheduler(
        replace(clocked, store=dead_store),
        [JobSpec("morning-summary", "Morning summary", "30 7 * * *", "Europe/Berlin", job)],
        grace=timedelta(hours=1),
        runner="host-a:1",
        job_lease_s=60,
    )
    running = asyncio.create_task(dying.fire("morning-summary", slot))
    await job.started.wait()
    await dead_store.close()  # the replica is gone: nothing it does reaches the store again
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError, StoreUnavailable):
        await running

    reports: list[str] = []

    async def report(text: str) -> None:
        reports.append(text)

    counter = Counter()
    job_b = JobSpec("morning-summary", "Morning summary", "30 7 * * *", "Europe/Berlin", counter)
    leader = Scheduler(
        clocked, [job_b], grace=timedelta(hours=1), runner="host-b:2", report_lost=report
    )
    at["now"] = slot + timedelta(seconds=30)  # within the lease: not lost yet
    assert await leader.report_lost() == []
    at["now"] = slot + timedelta(seconds=61)
    (lost,) = await leader.report_lost()
    assert (lost.runner, lost.status) == ("host-a:1", "failed")
    assert await leader.report_lost() == []  # reported once
    assert reports == [
        "morning-summary of 08:30 (2026-11-26) did not finish: its replica (host-a:1) stopped."
        " It is not run again; run it by hand if it is still needed."
    ]
    # Not run again, neither on its slot nor by catching up.
    assert await leader.fire("morning-summary", slot) is False
    assert await leader.catch_up() == []
    assert counter.calls == 0
    value = deps.metrics.registry.get_sample_value
    assert value("smsbot_scheduled_jobs_lost_total", {"job_name": "morning-summary"}) == 1


async def test_the_runner_renews_its_slot_while_the_job_runs(deps: Deps) -> None:
    live = replace(deps, clock=lambda: datetime.now(UTC))
    job = Blocking()
    spec = JobSpec("morning-summary", "Morning summary", "30 7 * * *", "UTC", job)
    runner = Scheduler(live, [spec], grace=timedelta(0), runner="a", job_lease_s=0.6)
    watcher = Scheduler(live, [spec], grace=timedelta(0), runner="b")
    slot = datetime.now(UTC).replace(microsecond=0)
    running = asyncio.create_task(runner.fire("morning-summary", slot))
    await job.started.wait()
    # Three leases long, a watcher looking all the while: the heartbeat keeps it alive.
    deadline = time.monotonic() + 1.8
    while time.monotonic() < deadline:
        assert await watcher.report_lost() == []
        await asyncio.sleep(0.05)
    job.finish.set()
    assert await running is True
    last = await deps.store.job_last("morning-summary")
    assert last is not None and last.status == "ok"
