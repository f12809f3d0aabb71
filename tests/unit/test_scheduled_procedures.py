"""The scheduled procedures (morning summary, backups, weekly, monthly) against fakes."""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from bot.adapters.alertmanager import AlertmanagerUnavailable
from bot.adapters.backups import BackupFile, BackupKind, BackupStore, BackupUnreadable
from bot.adapters.docker import ExecResult
from bot.adapters.postgres import QueryTimeout
from bot.adapters.prometheus import DEFAULT_QUERIES, PrometheusUnavailable
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Status, Table
from bot.store.base import Incident
from procedures.backup import BACKUP_ARGV, backup_action, backup_command
from procedures.backup_freshness import backup_freshness
from procedures.backups import backups as backups_procedure
from procedures.monthly import monthly_maintenance
from procedures.morning_summary import morning_summary, trend
from procedures.vacuum import VACUUM_TIMEOUT_S, database_name, vacuum_action
from procedures.weekly import weekly_checklist, weekly_report
from tests.fakes import NOW, FakeSurface, alert_info, series
from tests.unit.conftest import SERVICES, make_settings

YESTERDAY = NOW - timedelta(days=1)


def _backup(deps: Deps, name: str, *, age_h: float, data: bytes | None = None) -> Path:
    path = Path(deps.settings.sms_backup_dir) / name
    path.write_bytes(b"-- PostgreSQL database dump\nSET x = 1;\n" * 50 if data is None else data)
    ts = (NOW - timedelta(hours=age_h)).timestamp()
    os.utime(path, (ts, ts))
    return path


async def _run(
    deps: Deps, procedure: Callable[[Run], Awaitable[None]], name: str = "job"
) -> tuple[Run, FakeSurface]:
    surface = FakeSurface()
    command = Command(
        text=f"scheduled {name}",
        user="sms-bot",
        source="scheduler",
        conversation=Conversation("fake", "#sms-alerts"),
    )
    run = await Engine(deps).execute(
        procedure, name=name, title=name, command=command, surface=surface
    )
    return run, surface


def _steps(surface: FakeSurface) -> dict[str, tuple[Status, str]]:
    return {s.name: (s.status, s.summary) for s in surface.last().steps}


def _fields(surface: FakeSurface) -> dict[str, str]:
    return {f.label: f.value for f in surface.last().fields}


def _tables(surface: FakeSurface) -> dict[str, Table]:
    return {d.title: d for m in surface.replies() for d in m.details if isinstance(d, Table)}


def _code(surface: FakeSurface) -> list[CodeBlock]:
    return [d for m in surface.replies() for d in m.details if isinstance(d, CodeBlock)]


def _with_settings(deps: Deps, tmp_path: Path, **overrides: object) -> Deps:
    return replace(deps, settings=make_settings(tmp_path, **overrides))


# -- morning summary ------------------------------------------------------------


async def test_morning_summary_all_green_in_one_message(deps: Deps) -> None:
    _backup(deps, "backup_20261126_020000.sql", age_h=5.5)
    run, surface = await _run(deps, morning_summary)
    lines = surface.last().text.splitlines()
    assert run.status is Status.OK
    assert lines[0] == "All 5 checks passed."
    assert lines[1] == "✓ Container health: 3/3 containers running"
    assert lines[2].startswith("✓ System health endpoint: healthy, all 3 checks passing")
    assert lines[3] == (
        "✓ Performance metrics: all 7 metrics within baseline: "
        "Response time p95 350 ms (warn > 500, crit > 1000); "
        "Throughput 30.20 req/s (warn < 20, crit < 10); "
        "Error rate 1.3% (warn > 2, crit > 5)"
    )
    assert lines[4].startswith("✓ Database connectivity: connected, 18 users")
    assert lines[5].startswith("✓ Backup verification: newest backup_20261126_020000.sql, 5.5 h")
    assert lines[5].endswith("(limit 24 h)")
    assert len(lines) == 6  # no "action if failed" anywhere
    assert list(_steps(surface))[-1] == "Compare with yesterday"
    # The checks' details still go to the thread (the backup table).
    assert "Newest backups in " + deps.settings.sms_backup_dir in _tables(surface)


async def test_morning_summary_names_the_runbook_action_for_each_failing_check(
    deps: Deps,
) -> None:
    _backup(deps, "backup_20261124_020000.sql", age_h=53)
    deps.prometheus.by_query[DEFAULT_QUERIES["p95_ms"]] = 1200.0  # type: ignore[attr-defined]
    run, surface = await _run(deps, morning_summary)
    text = surface.last().text
    lines = text.splitlines()
    assert run.status is Status.CRIT
    assert lines[0] == "2 of 5 checks need attention."
    assert "✗ Performance metrics: Response time p95 1200 ms (warn > 500, crit > 1000)" in lines
    assert "    → Investigate the alerts in Alertmanager and the Grafana dashboards." in lines
    backup_line = next(line for line in lines if line.startswith("✗ Backup verification"))
    assert "older than 24 h" in backup_line
    assert "    → Trigger a manual backup (runbook: Manual Backup)." in lines
    # Passing checks carry no action.
    assert text.count("→ ") == 2
    assert "✓ Database connectivity" in text


async def test_a_warning_counts_as_needing_attention(deps: Deps, tmp_path: Path) -> None:
    deps = _with_settings(deps, tmp_path, sms_expected_containers=4)
    _backup(deps, "backup_1.sql", age_h=1)
    run, surface = await _run(deps, morning_summary)
    lines = surface.last().text.splitlines()
    assert run.status is Status.WARN
    assert lines[0] == "1 of 5 checks need attention."
    assert lines[1] == "! Container health: 3/4 containers running"
    assert lines[2].startswith("    → Check the container's logs")


async def test_a_failed_check_is_reported_with_its_error_and_action(deps: Deps) -> None:
    _backup(deps, "backup_1.sql", age_h=1)
    deps.prometheus.unavailable = PrometheusUnavailable("http://prom: connection refused")  # type: ignore[attr-defined]
    run, surface = await _run(deps, morning_summary)
    assert run.status is Status.FAILED
    text = surface.last().text
    assert text.startswith("1 of 5 checks need attention.")
    assert "✗ Performance metrics: http://prom: connection refused" in text
    steps = _steps(surface)
    assert steps["Compare with yesterday"] == (Status.FAILED, "http://prom: connection refused")


async def test_compare_with_yesterday_shows_trend_arrows(deps: Deps) -> None:
    _backup(deps, "backup_1.sql", age_h=1)
    prom = deps.prometheus
    prom.by_query[DEFAULT_QUERIES["p95_ms"]] = 340.0  # type: ignore[attr-defined]
    prom.at_values[(DEFAULT_QUERIES["p95_ms"], YESTERDAY)] = 320.0  # type: ignore[attr-defined]
    prom.at_values[(DEFAULT_QUERIES["error_rate_pct"], YESTERDAY)] = 1.27  # type: ignore[attr-defined]
    prom.at_values[(DEFAULT_QUERIES["throughput_rps"], YESTERDAY)] = 40.0  # type: ignore[attr-defined]
    _run_result, surface = await _run(deps, morning_summary)
    fields = _fields(surface)
    assert fields["p95"] == "340 ms (yesterday 320 ms ↑)"
    assert fields["error rate"] == "1.3% (yesterday 1.3% →)"
    assert fields["throughput"] == "30.20 req/s (yesterday 40.00 req/s ↓)"
    assert _steps(surface)["Compare with yesterday"] == (
        Status.OK,
        "p95 ↑, error rate →, throughput ↓",
    )


async def test_compare_with_yesterday_without_history(deps: Deps) -> None:
    _backup(deps, "backup_1.sql", age_h=1)
    for key in ("p95_ms", "error_rate_pct", "throughput_rps"):
        deps.prometheus.at_values[(DEFAULT_QUERIES[key], YESTERDAY)] = None  # type: ignore[attr-defined]
    run, surface = await _run(deps, morning_summary)
    fields = _fields(surface)
    assert fields["p95"] == "350 ms (no data for yesterday)"
    assert fields["throughput"] == "30.20 req/s (no data for yesterday)"
    assert _steps(surface)["Compare with yesterday"] == (Status.OK, "no data for yesterday")
    assert run.status is Status.OK


def test_trend_arrow_thresholds() -> None:
    assert trend(105.0, 100.0) == "→"  # exactly 5 %: steady
    assert trend(105.1, 100.0) == "↑"
    assert trend(94.9, 100.0) == "↓"
    assert trend(0.0, 0.0) == "→"
    assert trend(1.0, 0.0) == "↑"
    assert trend(None, 100.0) == ""
    assert trend(100.0, float("nan")) == ""


# -- backup freshness and the manual backup -------------------------------------


async def test_fresh_backups_propose_nothing(deps: Deps) -> None:
    _backup(deps, "backup_20261126_020000.sql", age_h=5.5)
    run, surface = await _run(deps, backup_freshness)
    assert run.status is Status.OK
    assert run.proposals == []
    assert surface.last().text.startswith("Backups are fresh (limit 24 h): newest backup_2026")


@pytest.mark.parametrize(
    ("age_h", "size", "why"),
    [(30.0, 4096, "older than 24 h"), (1.0, 0, "the file is empty")],
)
async def test_stale_or_empty_backup_proposes_the_manual_backup(
    deps: Deps, age_h: float, size: int, why: str
) -> None:
    _backup(deps, "backup_20261125_020000.sql", age_h=age_h, data=b"x" * size)
    run, surface = await _run(deps, backup_freshness)
    assert run.status is Status.CRIT
    assert why in _steps(surface)["Check the newest backup"][1]
    [proposal] = run.proposals
    assert proposal.action == "backup"
    assert proposal.args == {"service": "backup", "container": "sms-db-backup"}
    assert proposal.summary == "run the manual backup in sms-db-backup"
    shown = surface.first_versions[proposal.message_key]
    assert any(b.label == "Run manual backup" for b in shown.buttons)
    command = "docker exec sms-db-backup python -m backend.services.backup_service --backup"
    assert command in shown.text
    assert surface.last().text.endswith("Proposed: run the manual backup in sms-db-backup.")


async def test_a_safety_dump_of_a_restore_does_not_make_the_backups_fresh(deps: Deps) -> None:
    # The schedule's last backup is 30 h old; a restore wrote its safety dump an hour ago.
    _backup(deps, "backup_20261125_020000.sql", age_h=30)
    _backup(deps, "pre_restore_20261126_063000.sql", age_h=1)
    run, surface = await _run(deps, backup_freshness)
    assert run.status is Status.CRIT
    assert "newest backup_20261125_020000.sql" in _steps(surface)["Check the newest backup"][1]
    [proposal] = run.proposals
    assert proposal.action == "backup"


async def test_backups_lists_safety_dumps_marked_and_judges_without_them(deps: Deps) -> None:
    _backup(deps, "backup_20261125_020000.sql", age_h=30)
    _backup(deps, "pre_restore_20261126_063000.sql", age_h=1)
    run, surface = await _run(deps, backups_procedure, "backups")
    assert run.status is Status.CRIT
    [table] = _tables(surface).values()
    assert [row[0] for row in table.rows] == [
        "pre_restore_20261126_063000.sql (safety dump)",
        "backup_20261125_020000.sql",
    ]


async def test_the_backup_store_tells_safety_dumps_from_backups(tmp_path: Path) -> None:
    for name in ("backup_20261125_020000.sql", "pre_restore_20261126_063000.sql"):
        (tmp_path / name).write_text("-- PostgreSQL database dump\n")
    store = BackupStore(tmp_path)
    assert [f.name for f in await store.newest()] == ["backup_20261125_020000.sql"]
    kinds = {f.name: f.kind for f in await store.newest(safety_dumps=True)}
    assert kinds == {
        "backup_20261125_020000.sql": BackupKind.SCHEDULED,
        "pre_restore_20261126_063000.sql": BackupKind.SAFETY_DUMP,
    }


async def test_no_backup_service_means_no_proposal_and_a_warning(
    deps: Deps, tmp_path: Path
) -> None:
    deps = _with_settings(
        deps, tmp_path, sms_services={"backend": "docker-backend-1", "postgres": "pg-1"}
    )
    _backup(deps, "backup_1.sql", age_h=40)
    run, surface = await _run(deps, backup_freshness)
    assert run.proposals == []
    status, summary = _steps(surface)["Find the backup container"]
    assert status is Status.WARN
    assert "SMS_SERVICES has no 'backup' entry" in summary
    assert "No manual backup proposed: add backup=CONTAINER to SMS_SERVICES" in (
        surface.last().text
    )


async def test_unreadable_backup_dir_fails_without_a_proposal(deps: Deps, tmp_path: Path) -> None:
    deps = _with_settings(deps, tmp_path, sms_backup_dir=str(tmp_path / "nowhere"))
    deps = replace(deps, backups=BackupStore(tmp_path / "nowhere"))
    run, surface = await _run(deps, backup_freshness)
    assert run.status is Status.FAILED
    assert run.proposals == []
    assert surface.last().text.startswith("Could not check the backups: backup directory")


def _writes_backup(deps: Deps, name: str = "backup_20261126_073000.sql") -> None:
    def write(service: str, argv: tuple[str, ...]) -> None:
        path = Path(deps.settings.sms_backup_dir) / name
        path.write_bytes(b"-- PostgreSQL database dump\n")
        ts = (NOW + timedelta(seconds=3)).timestamp()
        os.utime(path, (ts, ts))

    deps.docker.on_exec = write  # type: ignore[attr-defined]


async def test_backup_action_runs_the_runbook_command_and_sees_the_new_file(deps: Deps) -> None:
    _backup(deps, "backup_20261125_020000.sql", age_h=29.5)
    _writes_backup(deps)
    deps.docker.exec_result = ExecResult(  # type: ignore[attr-defined]
        0, "connecting to postgresql://sms:hunter2@db/sms\nbackup written\n"
    )
    run, surface = await _run(
        deps, partial(backup_action, service="backup", container="sms-db-backup")
    )
    assert run.status is Status.OK, _steps(surface)
    assert deps.docker.exec_calls == [("backup", BACKUP_ARGV, 600.0)]  # type: ignore[attr-defined]
    steps = _steps(surface)
    assert steps["Run the manual backup in sms-db-backup"] == (
        Status.OK,
        "exited with code 0, 2 lines of output",
    )
    assert steps["Verify a new backup appeared"][0] is Status.OK
    assert steps["Verify a new backup appeared"][1].startswith("backup_20261126_073000.sql, 28 B")
    [output] = _code(surface)
    assert "hunter2" not in output.text and "[REDACTED]" in output.text
    assert surface.last().text.startswith("Manual backup done in ")


async def test_backup_action_refuses_when_the_service_map_changed(deps: Deps) -> None:
    run, _surface = await _run(
        deps, partial(backup_action, service="backup", container="old-backup-container")
    )
    assert run.status is Status.FAILED
    assert run.error is not None and "no longer maps backup to old-backup-container" in run.error
    assert deps.docker.exec_calls == []  # type: ignore[attr-defined]


async def test_backup_action_stops_when_the_command_fails(deps: Deps) -> None:
    deps.docker.exec_result = ExecResult(1, "Traceback...\nBackupError: disk full\n")  # type: ignore[attr-defined]
    run, surface = await _run(
        deps, partial(backup_action, service="backup", container="sms-db-backup")
    )
    steps = _steps(surface)
    assert run.status is Status.CRIT
    assert steps["Run the manual backup in sms-db-backup"] == (
        Status.CRIT,
        "exited with code 1: BackupError: disk full",
    )
    assert "Verify a new backup appeared" not in steps
    assert "failed (exited with code 1" in surface.last().text


async def test_backup_action_reports_when_no_new_file_appears(deps: Deps) -> None:
    _backup(deps, "backup_20261125_020000.sql", age_h=29.5)
    run, surface = await _run(
        deps, partial(backup_action, service="backup", container="sms-db-backup", verify_s=0)
    )
    assert run.status is Status.CRIT
    status, summary = _steps(surface)["Verify a new backup appeared"]
    assert status is Status.CRIT
    assert "no new non-empty backup" in summary
    assert "newest is backup_20261125_020000.sql" in summary
    assert "could be confirmed" in surface.last().text


# -- backup readability ---------------------------------------------------------


def _file(path: Path) -> BackupFile:
    stat = path.stat()
    return BackupFile(path.name, path, datetime.fromtimestamp(stat.st_mtime).astimezone(), 0)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "backup_1.sql",
            b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n",
            "PostgreSQL database dump (plain SQL)",
        ),
        ("backup_2.sql", b"BEGIN;\nCREATE TABLE users (id int);\n", "SQL text"),
        (
            "backup_3.sql.gz",
            gzip.compress(b"-- PostgreSQL database dump\nSET x;\n" * 5000),
            "gzip-compressed PostgreSQL database dump (plain SQL)",
        ),
        ("backup_4.dump", b"PGDMP\x01\x0e\x00" + b"\x00" * 100, "pg_dump custom-format archive"),
    ],
)
async def test_readable_backups_are_described(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert await BackupStore(tmp_path).check_readable(_file(path)) == expected


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("backup_1.sql", b"", "the file is empty"),
        ("backup_2.sql.gz", b"\x1f\x8b\x08\x00" + os.urandom(64), "corrupt gzip data"),
        ("backup_3.gz", b"-- PostgreSQL database dump\n", "not gzip data"),
        ("backup_4.sql", bytes(range(256)) * 4, "does not start like a SQL dump"),
        ("backup_5.sql.gz", gzip.compress(b""), "the compressed dump is empty"),
        ("backup_6.sql.gz", gzip.compress(b"\x00\x01binary" * 10), "does not start like a SQL"),
    ],
)
async def test_unusable_backups_raise_a_typed_error(
    tmp_path: Path, name: str, data: bytes, error: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BackupUnreadable, match=error):
        await BackupStore(tmp_path).check_readable(_file(path))


async def test_a_missing_backup_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "backup_gone.sql"
    file = BackupFile(path.name, path, NOW, 10)
    with pytest.raises(BackupUnreadable, match="cannot be read"):
        await BackupStore(tmp_path).check_readable(file)


# -- Monday checklist -------------------------------------------------------------


async def _incident(
    deps: Deps, priority: str, *, opened_h_ago: float, resolved_after_min: float | None
) -> Incident:
    incident = Incident(
        id=uuid.uuid4().hex,
        fingerprint=f"fp-{uuid.uuid4().hex[:6]}",
        title=f"{priority} alert",
        priority=priority,
        procedure="",
        labels={"alertname": f"{priority}Alert"},
        annotations={},
        opened_at=NOW - timedelta(hours=opened_h_ago),
        opened_by="alertmanager",
    )
    opened = await deps.store.incident_open(incident)
    assert opened is not None
    if resolved_after_min is not None:
        await deps.store.incident_resolve(
            incident.id, now=incident.opened_at + timedelta(minutes=resolved_after_min)
        )
    return incident


async def test_weekly_checklist_checks_what_it_can(deps: Deps) -> None:
    _backup(deps, "backup_20261126_020000.sql", age_h=5.5)
    await _incident(deps, "P0", opened_h_ago=50, resolved_after_min=12)
    await _incident(deps, "P1", opened_h_ago=20, resolved_after_min=None)
    await _incident(deps, "P2", opened_h_ago=24 * 9, resolved_after_min=5)  # older than a week
    deps.alertmanager.active = [alert_info("HighErrorRate")]  # type: ignore[attr-defined]
    run, surface = await _run(deps, weekly_checklist)
    steps = _steps(surface)
    assert run.status is Status.OK, steps
    assert steps["Check disk space"] == (Status.OK, "3.0% used (warn > 80, crit > 90)")
    assert steps["Review alert history (7 days)"] == (
        Status.OK,
        "2 incidents (P0 1, P1 1), 1 still open; 1 alert active in Alertmanager",
    )
    assert steps["Verify backup integrity"] == (
        Status.OK,
        "backup_20261126_020000.sql (1.9 KB, 5.5 h old) is readable: "
        "PostgreSQL database dump (plain SQL)",
    )
    table = _tables(surface)["Alert history: the bot's incidents (7 days) and alerts active now"]
    assert [row[:3] for row in table.rows] == [
        ("incident", "P0", "P0 alert"),
        ("incident", "P1", "P1 alert"),
        ("active now", "warning", "HighErrorRate"),
    ]
    assert table.rows[0][4] == "resolved in 12 min"
    assert table.rows[1][4] == "open for 20.0 h"
    text = surface.last().text
    assert text.startswith("Monday checklist (runbook: Weekly Tasks): 3 items checked by the bot.")
    assert "System Overview: http://localhost:3000/d/system-overview" in text
    assert "Application Performance: http://localhost:3000/d/app-performance" in text
    assert "Business Metrics: http://localhost:3000/d/business-metrics" in text
    assert "Update security patches if available" in text
    assert text.index("To do by hand:") > text.index("Verify backup integrity")


async def test_weekly_checklist_flags_disk_corrupt_backup_and_alertmanager_down(
    deps: Deps,
) -> None:
    _backup(deps, "backup_20261126_020000.sql.gz", age_h=5.5, data=b"\x1f\x8b" + b"junk" * 20)
    deps.prometheus.by_query[DEFAULT_QUERIES["disk_pct"]] = 93.5  # type: ignore[attr-defined]
    deps.alertmanager.alerts_error = AlertmanagerUnavailable("http://am:9093: connection refused")  # type: ignore[attr-defined]
    run, surface = await _run(deps, weekly_checklist)
    steps = _steps(surface)
    assert run.status is Status.CRIT
    assert steps["Check disk space"] == (Status.CRIT, "93.5% used (warn > 80, crit > 90)")
    assert steps["Review alert history (7 days)"] == (
        Status.WARN,
        "no incidents; Alertmanager not checked: http://am:9093: connection refused",
    )
    status, summary = steps["Verify backup integrity"]
    assert status is Status.CRIT
    assert summary.startswith("newest backup unusable: backup_20261126_020000.sql.gz: corrupt gzip")


# -- Friday report ----------------------------------------------------------------


def _week_of(deps: Deps, key: str, values: list[float]) -> None:
    deps.prometheus.ranges[DEFAULT_QUERIES[key]] = [series(values)]  # type: ignore[attr-defined]


async def test_weekly_report_against_the_baseline_table(deps: Deps) -> None:
    _week_of(deps, "p95_ms", [300.0, 400.0, float("nan")])
    _week_of(deps, "p99_ms", [2000.0, 2200.0])
    _week_of(deps, "throughput_rps", [18.0, 20.0])
    _week_of(deps, "error_rate_pct", [1.0, 1.5])
    deps.prometheus.ranges[DEFAULT_QUERIES["endpoint_p95_ms"]] = [  # type: ignore[attr-defined]
        series([v, v], labels={"handler": f"/api/{i}"})
        for i, v in enumerate([100.0, 900.0, 50.0, 600.0, 300.0, 1200.0, 20.0])
    ]
    await _incident(deps, "P0", opened_h_ago=30, resolved_after_min=10)
    await _incident(deps, "P0", opened_h_ago=40, resolved_after_min=30)
    await _incident(deps, "P1", opened_h_ago=10, resolved_after_min=120)
    await _incident(deps, "P2", opened_h_ago=5, resolved_after_min=None)

    run, surface = await _run(deps, weekly_report)
    steps = _steps(surface)
    assert run.status is Status.WARN, steps
    # 7 days of hourly points, ending now.
    _promql, start, end, step_s = deps.prometheus.range_calls[0]  # type: ignore[attr-defined]
    assert (end - start, end, step_s) == (timedelta(days=7), NOW, 3600.0)
    tables = _tables(surface)
    perf = next(t for title, t in tables.items() if title.startswith("Performance "))
    assert perf.columns == ("metric", "7-day value", "baseline", "alert", "critical", "status")
    assert perf.rows == (
        ("Response time p95", "350 ms", "350 ms", "> 500 ms", "> 1000 ms", "OK"),
        ("Response time p99", "2100 ms", "2000 ms", "> 3000 ms", "> 5000 ms", "OK"),
        ("Throughput", "19.00 req/s", "30.22 req/s", "< 20.00 req/s", "< 10.00 req/s", "WARN"),
        ("Error rate", "1.2%", "1.3%", "> 2.0%", "> 5.0%", "OK"),
    )
    assert steps["Performance over the last 7 days"] == (
        Status.WARN,
        "Throughput 19.00 req/s (warn)",
    )
    endpoints = tables["Slowest endpoints by mean p95 over 7.0 days"]
    assert [row[:3] for row in endpoints.rows] == [
        ("/api/5", "1200 ms", "CRIT"),
        ("/api/1", "900 ms", "WARN"),
        ("/api/3", "600 ms", "WARN"),
        ("/api/4", "300 ms", "OK"),
        ("/api/0", "100 ms", "OK"),
    ]
    assert steps["Worst endpoints (7-day p95)"] == (Status.OK, "slowest: /api/5 1200 ms")
    incidents = tables["Incidents of the last 7 days"]
    assert incidents.rows == (
        ("P0", "2", "2", "0", "20 min", "30 min"),
        ("P1", "1", "1", "0", "2.0 h", "2.0 h"),
        ("P2", "1", "0", "1", "-", "-"),
        ("all", "4", "3", "1", "30 min", "2.0 h"),
    )
    assert steps["Incidents of the week"] == (
        Status.OK,
        "4 incidents (P0 2, P1 1, P2 1); median time to resolve 30 min, longest 2.0 h; "
        "1 still open",
    )
    assert surface.last().text.startswith("Weekly performance report, 19 Nov to 26 Nov 2026.")


async def test_weekly_report_says_no_data_cleanly(deps: Deps) -> None:
    run, surface = await _run(deps, weekly_report)
    steps = _steps(surface)
    assert steps["Performance over the last 7 days"] == (
        Status.WARN,
        "no data in Prometheus for 7.0 days",
    )
    perf = next(t for title, t in _tables(surface).items() if title.startswith("Performance "))
    assert all(row[1] == "no data" and row[5] == "NO DATA" for row in perf.rows)
    assert steps["Worst endpoints (7-day p95)"] == (Status.OK, "no data per endpoint")
    assert steps["Incidents of the week"] == (Status.OK, "no incidents this week")
    assert run.status is Status.WARN


async def test_weekly_report_window_is_adjustable(deps: Deps) -> None:
    _week_of(deps, "p95_ms", [340.0])
    await _run(
        deps, partial(weekly_report, window=timedelta(minutes=5), step=timedelta(seconds=30))
    )
    _promql, start, end, step_s = deps.prometheus.range_calls[0]  # type: ignore[attr-defined]
    assert (end - start, step_s) == (timedelta(minutes=5), 30.0)


# -- monthly maintenance and VACUUM ANALYZE --------------------------------------


async def test_monthly_maintenance_lists_tasks_old_backups_and_proposes_vacuum(
    deps: Deps,
) -> None:
    _backup(deps, "backup_20261126_020000.sql", age_h=5)
    _backup(deps, "backup_20261001_020000.sql", age_h=24 * 56)
    _backup(deps, "backup_20261020_020000.sql", age_h=24 * 37)
    _backup(deps, "backup_20261030_020000.sql", age_h=24 * 27)
    run, surface = await _run(deps, monthly_maintenance)
    steps = _steps(surface)
    assert steps["Count backups past the 30-day retention"][0] is Status.WARN
    assert steps["Count backups past the 30-day retention"][1].startswith(
        "2 of 4 backup files (3.8 KB) are older than 30 days: archive them"
    )
    old = _tables(surface)["Backups older than 30 days (oldest first)"]
    assert [row[0] for row in old.rows] == [
        "backup_20261001_020000.sql",
        "backup_20261020_020000.sql",
    ]
    assert steps["Check database size and connections"] == (
        Status.OK,
        "student_management: 100.0 MB, 12/100 connections, PostgreSQL 15.8",
    )
    [proposal] = run.proposals
    assert proposal.action == "vacuum"
    assert proposal.args == {"database": "student_management"}
    assert proposal.summary == "run VACUUM ANALYZE on student_management"
    shown = surface.first_versions[proposal.message_key]
    assert any(b.label == "Run VACUUM ANALYZE" for b in shown.buttons)
    assert "`VACUUM ANALYZE;` on student_management" in shown.text
    text = surface.last().text
    for reminder in ("rotate encryption keys", "Performance baseline update", "health audit"):
        assert reminder in text
    assert deps.db.vacuums == []  # type: ignore[attr-defined]  # nothing runs before a click


async def test_vacuum_action_reports_the_duration(deps: Deps) -> None:
    deps.db.vacuum_s = 4.25  # type: ignore[attr-defined]
    run, surface = await _run(deps, partial(vacuum_action, database="student_management"))
    assert run.status is Status.OK
    assert _steps(surface)["VACUUM ANALYZE"] == (Status.OK, "done in 4.2 s")
    assert deps.db.vacuums == [VACUUM_TIMEOUT_S]  # type: ignore[attr-defined]
    assert surface.last().text == "VACUUM ANALYZE on student_management finished: done in 4.2 s."


async def test_vacuum_action_refuses_another_database(deps: Deps) -> None:
    run, _surface = await _run(deps, partial(vacuum_action, database="other_db"))
    assert run.status is Status.FAILED
    assert run.error is not None and "not other_db" in run.error
    assert deps.db.vacuums == []  # type: ignore[attr-defined]


async def test_vacuum_action_failure_is_shown(deps: Deps) -> None:
    deps.db.error = QueryTimeout("query on db timed out after 1800s")  # type: ignore[attr-defined]
    run, surface = await _run(deps, partial(vacuum_action, database="student_management"))
    assert run.status is Status.FAILED
    assert surface.last().text == (
        "VACUUM ANALYZE on student_management failed: query on db timed out after 1800s"
    )


def test_database_name_from_the_dsn() -> None:
    assert database_name("postgresql://u:p@h:5432/student_management") == "student_management"
    assert database_name("postgresql://u@h/my%20db?sslmode=require") == "my db"
    assert database_name("postgresql://u@h?dbname=x") == "x"
    assert database_name("postgresql://sms_user@h") == "sms_user"
    assert database_name("") is None


def test_backup_command_is_the_runbooks() -> None:
    assert backup_command("sms-db-backup") == (
        "docker exec sms-db-backup python -m backend.services.backup_service --backup"
    )
    assert SERVICES["backup"] == "sms-db-backup"


async def test_monthly_maintenance_without_a_database_url_proposes_nothing(
    deps: Deps, tmp_path: Path
) -> None:
    deps = _with_settings(deps, tmp_path, sms_database_url="")
    run, surface = await _run(deps, monthly_maintenance)
    assert run.proposals == []
    assert "VACUUM ANALYZE: not proposed, SMS_DATABASE_URL names no database." in (
        surface.last().text
    )


async def test_weekly_report_shows_an_implausible_mean_as_a_warning_with_its_query(
    deps: Deps,
) -> None:
    _week_of(deps, "p95_ms", [340.0])
    _week_of(deps, "p99_ms", [1900.0])
    _week_of(deps, "throughput_rps", [30.0])
    _week_of(deps, "error_rate_pct", [7500.0, 7540.0])  # an inverted ratio, say
    run, surface = await _run(deps, weekly_report)
    steps = _steps(surface)
    assert steps["Performance over the last 7 days"] == (
        Status.WARN,
        "Error rate 7520%: implausible (check `SMS_PROMQL`) (warn)",
    )
    blocks = [d for m in surface.replies() for d in m.details if isinstance(d, CodeBlock)]
    assert any(DEFAULT_QUERIES["error_rate_pct"] in b.text for b in blocks), blocks
    assert run.status is Status.WARN
