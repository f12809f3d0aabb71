"""The SLA report against fakes: each commitment, the verdict line, the month's window."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.adapters.prometheus import DEFAULT_QUERIES
from bot.chat.base import Conversation
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.errors import UsageError
from bot.events import Command
from bot.messages import Status, Table
from bot.store.base import AuditEvent, Incident, RunRecord
from procedures.sla import largest_gap, month_window, over_window, sla_report
from tests.fakes import NOW, FakeSurface

WINDOW = month_window("2026-11", now=NOW, timezone="UTC")
UP = 'max(up{job="backend"})'
RANGE = f"[{WINDOW.seconds - 1}s:1m]"
DOWN_Q = f"sum_over_time(({UP} == bool 0){RANGE})"
MEASURED_Q = f"count_over_time(({UP}){RANGE})"
P95_Q = over_window(DEFAULT_QUERIES["p95_ms"], WINDOW.seconds)
ERR_Q = over_window(DEFAULT_QUERIES["error_rate_pct"], WINDOW.seconds)


def _answers(deps: Deps, *, down: float, p95: float, errors: float) -> None:
    prom = deps.prometheus
    minutes = WINDOW.seconds / 60
    for query, value in ((DOWN_Q, down), (MEASURED_Q, minutes), (P95_Q, p95), (ERR_Q, errors)):
        prom.by_query[query] = value  # type: ignore[attr-defined]


def _backups(deps: Deps, hours_ago: list[float]) -> None:
    for n, age in enumerate(hours_ago):
        path = Path(deps.settings.sms_backup_dir) / f"backup_{n:03d}.sql"
        path.write_bytes(b"-- PostgreSQL database dump\n")
        ts = (NOW - timedelta(hours=age)).timestamp()
        os.utime(path, (ts, ts))


async def _report(deps: Deps) -> tuple[Run, FakeSurface]:
    surface = FakeSurface()
    command = Command(
        text="sla 2026-11",
        user="console:alice",
        source="console",
        conversation=Conversation("fake", "#ops"),
    )

    async def procedure(run: Run) -> None:
        await sla_report(run, window=WINDOW)

    run = await Engine(deps).execute(
        procedure, name="sla", title="SLA report", command=command, surface=surface
    )
    return run, surface


def _table(surface: FakeSurface) -> dict[str, tuple[str, ...]]:
    [table] = [
        d
        for m in surface.replies()
        for d in m.details
        if isinstance(d, Table) and d.title.startswith("SLA commitments")
    ]
    return {row[0]: row for row in table.rows}


async def test_all_commitments_met(deps: Deps) -> None:
    _answers(deps, down=12, p95=350, errors=1.3)
    _backups(deps, [5.5 + 24 * d for d in range(30)])
    run, surface = await _report(deps)
    assert run.text.startswith("SLA met. SLA of 2026-11, to 26 Nov 07:30 UTC.")
    rows = _table(surface)
    assert rows["Uptime"][3] == "met"
    assert "12 min down" in rows["Uptime"][2]
    assert "3h 27m of the 3.65 h budget left" in rows["Uptime"][2]
    assert rows["Response time (p95)"][2].startswith("p95 350 ms")
    assert rows["Recovery time (RTO)"][2] == "no restore this month (nothing to measure)"
    assert rows["Backup gap (RPO)"][3] == "met"


async def test_missed_commitments_are_counted_first(deps: Deps) -> None:
    _answers(deps, down=300, p95=620, errors=1.0)
    _backups(deps, [5, 60, 84])  # a 55-hour gap, and nothing before 84 h ago
    run, surface = await _report(deps)
    assert run.text.startswith("3 of 5 commitments missed")
    rows = _table(surface)
    assert rows["Uptime"][3] == "MISSED"
    assert "budget of 3.65 h exceeded by 1h 21m" in rows["Uptime"][2]
    assert rows["Response time (p95)"][3] == "MISSED"
    assert rows["Error rate"][3] == "met"
    assert rows["Backup gap (RPO)"][3] == "MISSED"
    assert run.status is Status.CRIT


async def test_a_safety_dump_does_not_close_a_backup_gap(deps: Deps) -> None:
    _answers(deps, down=12, p95=350, errors=1.3)
    _backups(deps, [5, *(45 + 24 * d for d in range(30))])  # one 40-hour gap...
    # ...which a restore's safety dump written in its middle must not close.
    path = Path(deps.settings.sms_backup_dir) / "pre_restore_20261125_063000.sql"
    path.write_bytes(b"-- PostgreSQL database dump\n")
    ts = (NOW - timedelta(hours=25)).timestamp()
    os.utime(path, (ts, ts))
    _, surface = await _report(deps)
    row = _table(surface)["Backup gap (RPO)"]
    assert row[3] == "MISSED"
    assert row[2].startswith("largest gap 40h 00m"), row[2]


async def test_no_availability_data_is_not_measured(deps: Deps) -> None:
    _answers(deps, down=0, p95=300, errors=0.5)
    deps.prometheus.by_query[MEASURED_Q] = None  # type: ignore[attr-defined]
    _backups(deps, [5 + 24 * d for d in range(30)])
    run, surface = await _report(deps)
    assert run.text.startswith("SLA met (1 not measured)")
    assert "check SMS_SLA_UP_QUERY" in _table(surface)["Uptime"][2]


async def test_restores_against_the_rto_and_incidents_with_their_times(deps: Deps) -> None:
    _answers(deps, down=0, p95=300, errors=0.5)
    _backups(deps, [5 + 24 * d for d in range(30)])
    started = NOW - timedelta(days=3)
    await deps.store.start_run(
        RunRecord(
            id="r1",
            command="restore",
            user="u",
            source="slack",
            conversation="",
            started_at=started,
        )
    )
    await deps.store.finish_run("r1", status="ok", finished_at=started + timedelta(minutes=22))
    await deps.store.audit(
        AuditEvent(
            at=started + timedelta(minutes=22),
            actor="U1",
            source="slack",
            action="restore",
            target="backup_x.sql",
            outcome="ok",
            detail={"run_id": "r1"},
        )
    )
    opened = NOW - timedelta(days=2)
    await deps.store.incident_open(
        Incident(
            id="i1",
            fingerprint="f1",
            title="BackendDown",
            priority="P0",
            procedure="backend_down",
            labels={},
            annotations={},
            opened_at=opened,
            opened_by="alertmanager",
        )
    )
    await deps.store.incident_ack("i1", by="U1", now=opened + timedelta(minutes=4))
    await deps.store.incident_resolve("i1", now=opened + timedelta(minutes=31))
    run, surface = await _report(deps)
    assert run.text.startswith("1 of 5 commitments missed")
    assert _table(surface)["Recovery time (RTO)"][2].startswith("1 restore(s), longest 22m 00s")
    [incidents] = [
        d
        for m in surface.replies()
        for d in m.details
        if isinstance(d, Table) and d.title.startswith("Incidents")
    ]
    assert incidents.rows[0][1:] == ("P0", "BackendDown", "4m 00s", "31m 00s")


def test_the_largest_gap_counts_the_backup_before_the_month() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 11, 3, tzinfo=UTC)
    times = [datetime(2026, 10, 31, 2, tzinfo=UTC), datetime(2026, 11, 2, 2, tzinfo=UTC)]
    gap, after, until = largest_gap(times, start, end)
    assert gap == timedelta(hours=48)
    assert (after, until) == (times[0], times[1])


def test_month_window() -> None:
    whole = month_window("2026-10", now=NOW, timezone="UTC")
    assert (whole.start, whole.end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    december = month_window("2025-12", now=NOW, timezone="UTC")
    assert december.end == datetime(2026, 1, 1, tzinfo=UTC)
    assert month_window(None, now=NOW, timezone="UTC").end == NOW
    athens = month_window("2026-10", now=NOW, timezone="Europe/Athens")
    assert athens.start == datetime(2026, 9, 30, 21, tzinfo=UTC)  # 00:00 local, summer time
    assert athens.end == datetime(2026, 10, 31, 22, tzinfo=UTC)
    assert athens.end.tzinfo is UTC
    with pytest.raises(UsageError, match="YYYY-MM"):
        month_window("november", now=NOW, timezone="UTC")
    with pytest.raises(UsageError, match="not started"):
        month_window("2027-01", now=NOW, timezone="UTC")
