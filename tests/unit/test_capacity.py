"""The capacity report against fakes: figures, growth from the store's samples, projections."""

from __future__ import annotations

from datetime import timedelta

from bot.catalogue import JobContext
from bot.chat.base import Conversation
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.events import Command
from bot.messages import Status, Table
from procedures.capacity import GB, capacity_report, growth, sample_capacity
from procedures.catalogue import CATALOGUE
from tests.fakes import NOW, FakeSurface

FREE_Q = 'max(node_filesystem_avail_bytes{mountpoint="/"})'
PEAK_Q = "max_over_time((sum(sms_active_users))[30d:5m])"


async def _no_alerts(_batch: object) -> int:
    return 0


async def _report(deps: Deps) -> tuple[Run, dict[str, tuple[str, ...]]]:
    surface = FakeSurface()
    command = Command(
        text="capacity", user="console:a", source="console", conversation=Conversation("fake")
    )
    run = await Engine(deps).execute(
        capacity_report, name="capacity", title="Capacity", command=command, surface=surface
    )
    [table] = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    return run, {row[0]: row for row in table.rows}


async def test_growth_from_daily_samples_and_the_projected_crossing(deps: Deps) -> None:
    for days, size in ((60, 50), (30, 60)):
        await deps.store.capacity_sample_put(
            NOW - timedelta(days=days), {"db_bytes": size * GB, "users": 18, "courses": 5}
        )
    deps.db.size_bytes = 70 * GB  # type: ignore[attr-defined]
    deps.prometheus.by_query[FREE_Q] = 900 * GB  # type: ignore[attr-defined]
    run, rows = await _report(deps)
    size = rows["Database size"]
    assert size[1] == "70.0 GB"
    assert size[2] == "100.0 GB (70.0 %)"
    assert size[3] == "+10.1 GB/month"
    assert size[4] == "2026-12-26"  # 10 GB more at 10 GB per 30 days
    assert size[5].startswith("Year 1 (2026): 1-2 GB/month; now 10.15 GB/month, ABOVE")
    users = rows["Users"]
    assert users[1:4] == ("18", "10,000 (0.2 %)", "+0/month")
    assert users[5] == "Year 1 (2026): 500-1,000, below"
    concurrent = rows["Concurrent users (30-day peak)"]
    assert "no metric: Prometheus has no data for `sum(sms_active_users)`" in concurrent[1]
    assert run.status is Status.WARN  # crossing within six months
    text = run.message().text
    assert "database size crosses 80 % around 2026-12-26" in text
    assert "Disk: 900.0 GB free, 3 % used." in text
    assert "concurrent users: no metric" in text


async def test_past_80_percent_and_a_concurrent_users_metric(deps: Deps) -> None:
    deps.db.rows["users"] = 8_500  # type: ignore[attr-defined]
    del deps.db.rows["courses"]  # type: ignore[attr-defined]
    deps.prometheus.by_query[PEAK_Q] = 45  # type: ignore[attr-defined]
    run, rows = await _report(deps)
    assert rows["Users"][4] == "past 80 % now"
    assert rows["Courses"][1] == "no `courses` table"
    assert rows["Concurrent users (30-day peak)"][1:3] == ("45", "200 (22.5 %)")
    assert run.status is Status.CRIT
    assert run.message().text.startswith("Users past 80 % of capacity")


async def test_the_daily_sample_is_stored(deps: Deps) -> None:
    assert await sample_capacity(JobContext(deps=deps, receive_alerts=_no_alerts)) is Status.OK
    got = {s.metric: s.value for s in await deps.store.capacity_samples(NOW)}
    assert got == {"users": 18.0, "courses": 5.0, "db_bytes": float(100 * 1024 * 1024)}


def test_growth_needs_a_day_of_samples() -> None:
    trend = growth([(NOW - timedelta(hours=2), 1.0)], now=NOW, value=2.0, capacity=10.0)
    assert trend.per_month is None and trend.crosses is None
    shrinking = growth([(NOW - timedelta(days=10), 5.0)], now=NOW, value=4.0, capacity=10.0)
    assert shrinking.per_month is not None and shrinking.per_month < 0
    assert shrinking.crosses is None


async def test_run_capacity_sample_takes_the_sample_and_says_so_in_one_line(deps: Deps) -> None:
    job = CATALOGUE.schedule("capacity-sample")
    report = CATALOGUE.schedule("capacity-report")
    assert job is not None and report is not None
    assert job.procedure is not report.procedure  # the monthly report stays its own job
    surface = FakeSurface()
    command = Command(
        text="capacity-sample", user="cli:a", source="cli", conversation=Conversation("fake")
    )
    run = await Engine(deps).execute(
        job.procedure, name=job.job, title=job.title, command=command, surface=surface
    )
    assert run.status is Status.OK
    assert run.message().text == (
        "Sample of 2026-11-26 07:30 UTC stored: 18 users, 5 courses, database 100.0 MB."
    )
    assert [m for m in surface.replies() if m.details] == []  # no capacity table
    got = {s.metric: s.value for s in await deps.store.capacity_samples(NOW)}
    assert got == {"users": 18.0, "courses": 5.0, "db_bytes": float(100 * 1024 * 1024)}
