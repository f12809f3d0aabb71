"""The read-only procedures against fakes at the adapter boundary."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from bot.adapters.docker import DockerUnavailable
from bot.adapters.http_health import HealthEndpointUnreachable
from bot.adapters.postgres import ActiveQuery, DatabaseUnavailable
from bot.adapters.prometheus import DEFAULT_QUERIES, PrometheusQueryError, PrometheusUnavailable
from bot.deps import Deps
from bot.engine import Engine
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Status, Table
from procedures.health import health
from procedures.metrics import metrics
from tests.fakes import NOW, FakeSurface, container, healthy_report


def _backup(deps: Deps, name: str, *, age_h: float, size: int = 2048) -> Path:
    path = Path(deps.settings.sms_backup_dir) / name
    path.write_bytes(b"x" * size)
    ts = (NOW - timedelta(hours=age_h)).timestamp()
    os.utime(path, (ts, ts))
    return path


async def _run(deps: Deps, procedure, text: str = "health") -> tuple[FakeSurface, Status]:
    surface = FakeSurface()
    cmd = Command(
        text=text, user="console:bob", source="console", conversation=Conversation("console")
    )
    run = await Engine(deps).execute(procedure, name=text, title=text, command=cmd, surface=surface)
    return surface, run.status


def _steps(surface: FakeSurface) -> dict[str, tuple[Status, str]]:
    return {s.name: (s.status, s.summary) for s in surface.last().steps}


async def test_health_all_green(deps: Deps) -> None:
    _backup(deps, "backup_20261126_020000.sql", age_h=5.5)
    surface, status = await _run(deps, health)
    steps = _steps(surface)
    assert status is Status.OK
    assert list(steps) == [
        "Container health",
        "System health endpoint",
        "Performance metrics",
        "Database connectivity",
        "Backup verification",
    ]
    assert all(s is Status.OK for s, _ in steps.values())
    assert steps["Container health"][1] == "3/3 containers running"
    assert steps["System health endpoint"][1].startswith("healthy, all 3 checks passing")
    assert steps["Performance metrics"][1] == "all 7 metrics within baseline"
    assert steps["Database connectivity"][1].startswith("connected, 18 users")
    assert "backup_20261126_020000.sql, 5.5 h old" in steps["Backup verification"][1]
    assert surface.last().text == "All 5 checks passed."
    # The metric values and thresholds are shown as judged fields.
    p95 = next(f for f in surface.last().fields if f.label == "Response time p95")
    assert p95.value == "350 ms (warn > 500, crit > 1000)" and p95.status is Status.OK


async def test_health_reports_every_failure_with_the_runbook_action(deps: Deps) -> None:
    deps.docker.containers = [  # type: ignore[attr-defined]
        container("docker-backend-1", service="backend", health="unhealthy"),
        container("docker-postgres-1", service="postgres"),
    ]
    deps.health.report = healthy_report(database="down")  # type: ignore[attr-defined]
    deps.prometheus.by_query[DEFAULT_QUERIES["p95_ms"]] = 1200.0  # type: ignore[attr-defined]
    deps.prometheus.by_query[DEFAULT_QUERIES["error_rate_pct"]] = 3.0  # type: ignore[attr-defined]
    deps.db.error = DatabaseUnavailable("cannot connect to localhost:5432: refused")  # type: ignore[attr-defined]
    _backup(deps, "backup_20261124_020000.sql", age_h=53)

    surface, status = await _run(deps, health)
    steps = _steps(surface)
    assert status is Status.FAILED
    assert steps["Container health"] == (
        Status.CRIT,
        "2/3 containers running; backup (sms-db-backup) missing, "
        "backend (docker-backend-1) unhealthy",
    )
    assert steps["System health endpoint"][0] is Status.CRIT
    assert "failing: database (down)" in steps["System health endpoint"][1]
    assert steps["Performance metrics"][0] is Status.CRIT
    assert "Response time p95 1200 ms (crit)" in steps["Performance metrics"][1]
    assert "Error rate 3.0% (warn)" in steps["Performance metrics"][1]
    assert steps["Database connectivity"] == (
        Status.FAILED,
        "cannot connect to localhost:5432: refused",
    )
    assert steps["Backup verification"][0] is Status.CRIT
    assert "older than 24 h" in steps["Backup verification"][1]
    text = surface.last().text
    assert text.startswith("5 of 5 checks need attention.")
    assert "Trigger a manual backup" in text
    assert "/sms logs postgres" in text
    # Problem containers come as a table in the thread.
    tables = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    assert any(t.title == "Containers needing attention" for t in tables)


async def test_a_dead_dependency_holds_only_its_own_step(deps: Deps) -> None:
    _backup(deps, "backup_1.sql", age_h=1)
    deps.health.delay = 3600  # type: ignore[attr-defined]
    surface, status = await _run(deps, health)
    steps = _steps(surface)
    assert steps["System health endpoint"] == (Status.FAILED, "timed out after 2 s")
    others = [s for name, (s, _) in steps.items() if name != "System health endpoint"]
    assert others == [Status.OK] * 4
    assert status is Status.FAILED


async def test_the_checks_run_concurrently(deps: Deps) -> None:
    """Docker waits for the database check and vice versa: run one after the other, it hangs."""
    _backup(deps, "backup_1.sql", age_h=1)
    docker_called, db_called = asyncio.Event(), asyncio.Event()
    real_overview, real_count = deps.docker.overview, deps.db.count_users

    async def overview():  # type: ignore[no-untyped-def]
        docker_called.set()
        await db_called.wait()
        return await real_overview()

    async def count_users():  # type: ignore[no-untyped-def]
        db_called.set()
        await docker_called.wait()
        return await real_count()

    deps.docker.overview = overview  # type: ignore[method-assign]
    deps.db.count_users = count_users  # type: ignore[method-assign]
    surface, status = await _run(deps, health)
    assert status is Status.OK, _steps(surface)


async def test_health_with_prometheus_down_and_a_bad_query(deps: Deps) -> None:
    _backup(deps, "backup_1.sql", age_h=1)
    deps.prometheus.unavailable = PrometheusUnavailable(  # type: ignore[attr-defined]
        "http://localhost:9090: connection refused"
    )
    surface, _ = await _run(deps, health)
    assert _steps(surface)["Performance metrics"] == (
        Status.FAILED,
        "http://localhost:9090: connection refused",
    )

    deps.prometheus.unavailable = None  # type: ignore[attr-defined]
    deps.prometheus.errors[DEFAULT_QUERIES["cpu_pct"]] = PrometheusQueryError(  # type: ignore[attr-defined]
        "bad_data: parse error"
    )
    surface, _ = await _run(deps, health)
    status, summary = _steps(surface)["Performance metrics"]
    assert status is Status.FAILED
    assert "CPU usage query failed: bad_data: parse error" in summary


async def test_missing_metric_data_is_a_warning(deps: Deps) -> None:
    deps.prometheus.by_query[DEFAULT_QUERIES["throughput_rps"]] = None  # type: ignore[attr-defined]
    surface, status = await _run(deps, metrics, "metrics")
    assert status is Status.WARN
    table = surface.replies()[0].details[0]
    assert isinstance(table, Table)
    row = next(r for r in table.rows if r[0] == "Throughput")
    assert row == ("Throughput", "no data", "30.22 req/s", "< 20.00 req/s", "< 10.00 req/s", "WARN")


async def test_metrics_table_shows_baseline_thresholds_and_status(deps: Deps) -> None:
    deps.prometheus.by_query[DEFAULT_QUERIES["throughput_rps"]] = 8.0  # type: ignore[attr-defined]
    surface, status = await _run(deps, metrics, "metrics")
    assert status is Status.CRIT
    table = surface.replies()[0].details[0]
    assert isinstance(table, Table)
    assert table.columns == ("metric", "current", "baseline", "alert", "critical", "status")
    rows = {r[0]: r for r in table.rows}
    assert rows["Response time p95"] == (
        "Response time p95",
        "350 ms",
        "350 ms",
        "> 500 ms",
        "> 1000 ms",
        "OK",
    )
    assert rows["Throughput"][-1] == "CRIT"
    assert _steps(surface)["Query Prometheus"][1] == "1 of 7 outside baseline: Throughput"


async def test_status_lists_containers_with_uptime(deps: Deps) -> None:
    from procedures.status import status as status_procedure

    deps.docker.containers.append(  # type: ignore[attr-defined]
        container("grafana-1", health=None, started=NOW - timedelta(minutes=3, seconds=5))
    )
    deps.docker.containers[1] = container(  # type: ignore[attr-defined]
        "docker-postgres-1", service="postgres", state="exited", health=None
    )
    surface, status = await _run(deps, status_procedure, "status")
    assert status is Status.CRIT
    table = surface.replies()[0].details[0]
    assert isinstance(table, Table)
    rows = {r[0]: r for r in table.rows}
    assert rows["docker-backend-1"] == (
        "docker-backend-1",
        "backend",
        "running",
        "healthy",
        "5h 0m",
    )
    assert rows["docker-postgres-1"][2:] == ("exited", "-", "-")
    assert rows["grafana-1"] == ("grafana-1", "", "running", "-", "3m 5s")
    assert "postgres exited" in _steps(surface)["List containers"][1]


async def test_status_when_docker_is_down(deps: Deps) -> None:
    from procedures.status import status as status_procedure

    deps.docker.error = DockerUnavailable("Docker engine not reachable")  # type: ignore[attr-defined]
    surface, status = await _run(deps, status_procedure, "status")
    assert status is Status.FAILED
    assert _steps(surface)["List containers"] == (Status.FAILED, "Docker engine not reachable")


async def test_logs_are_redacted_and_counted(deps: Deps) -> None:
    from functools import partial

    from procedures.logs import logs

    surface, status = await _run(
        deps, partial(logs, service="backend", lines=50), "logs backend 50"
    )
    assert status is Status.OK
    assert _steps(surface)["Tail backend logs (50 lines)"][1] == (
        "2 lines from docker-backend-1, 1 ERROR"
    )
    block = surface.replies()[0].details[0]
    assert "s3cret" not in block.text  # type: ignore[union-attr]
    assert "password=[REDACTED]" in block.text  # type: ignore[union-attr]
    assert deps.docker.log_calls == [("backend", 50)]  # type: ignore[attr-defined]


async def test_db_slow_lists_long_queries(deps: Deps) -> None:
    from procedures.db import db_slow

    surface, status = await _run(deps, db_slow, "db slow")
    assert status is Status.OK
    assert _steps(surface)["Find long-running queries (pg_stat_activity)"][1] == (
        "no active query older than 5 s"
    )
    deps.db.queries = [  # type: ignore[attr-defined]
        ActiveQuery(4242, "sms_user", "active", NOW, 31.0, "SELECT pg_sleep(60) -- password=x"),
        ActiveQuery(17, "sms_user", "active", NOW, 2.0, "SELECT 1"),
    ]
    surface, status = await _run(deps, db_slow, "db slow")
    assert status is Status.WARN
    table = surface.replies()[0].details[0]
    assert isinstance(table, Table)
    assert table.rows == (
        ("4242", "sms_user", "31.0 s", "SELECT pg_sleep(60) -- password=[REDACTED]"),
    )


async def test_db_check_shows_server_fields(deps: Deps) -> None:
    from procedures.db import db_check

    surface, status = await _run(deps, db_check, "db check")
    assert status is Status.OK
    fields = {f.label: f.value for f in surface.last().fields}
    assert fields["Connections"] == "12 of 100 (12%)"
    assert fields["Size"] == "100.0 MB"


async def test_backups_empty_and_missing_dir(deps: Deps) -> None:
    from procedures.backups import backups

    surface, status = await _run(deps, backups, "backups")
    assert status is Status.CRIT
    assert "no backup files in" in _steps(surface)["List newest backups"][1]

    for i in range(7):
        _backup(deps, f"backup_2026112{i}_020000.sql", age_h=1 + 24 * i)
    _backup(deps, "notes.txt", age_h=0)
    surface, status = await _run(deps, backups, "backups")
    assert status is Status.OK
    table = surface.replies()[0].details[0]
    assert isinstance(table, Table)
    assert [r[0] for r in table.rows] == [f"backup_2026112{i}_020000.sql" for i in range(5)]
    assert table.rows[0][2:] == ("1.0 h", "2.0 KB")

    _backup(deps, "backup_empty.sql", age_h=0.5, size=0)
    surface, status = await _run(deps, backups, "backups")
    assert status is Status.CRIT
    assert "the file is empty" in _steps(surface)["List newest backups"][1]


async def test_backup_dir_missing(deps: Deps, tmp_path: Path) -> None:
    from bot.adapters.backups import BackupStore
    from procedures.backups import backups

    object.__setattr__(deps, "backups", BackupStore(tmp_path / "nowhere"))
    surface, status = await _run(deps, backups, "backups")
    assert status is Status.FAILED
    assert "does not exist" in _steps(surface)["List newest backups"][1]


async def test_health_endpoint_unreachable(deps: Deps) -> None:
    deps.health.error = HealthEndpointUnreachable(  # type: ignore[attr-defined]
        "http://localhost:8080/health: connection refused"
    )
    surface, _ = await _run(deps, health)
    assert _steps(surface)["System health endpoint"] == (
        Status.FAILED,
        "http://localhost:8080/health: connection refused",
    )


# -- values that are right, values that cannot be, and nothing to measure -------


async def test_no_error_ever_reads_zero_percent_and_passes(deps: Deps) -> None:
    deps.prometheus.by_query[DEFAULT_QUERIES["error_rate_pct"]] = 0.0  # type: ignore[attr-defined]
    _backup(deps, "backup_20261126_020000.sql", age_h=5.5)
    surface, status = await _run(deps, health)
    assert status is Status.OK
    fields = {f.label: f for f in surface.last().fields}
    assert fields["Error rate"].value.startswith("0.0% (")
    assert fields["Error rate"].status is Status.OK
    assert surface.last().text == "All 5 checks passed."


async def test_without_requests_latency_and_error_rate_say_so_and_throughput_judges(
    deps: Deps,
) -> None:
    prom = deps.prometheus
    prom.by_query[DEFAULT_QUERIES["throughput_rps"]] = 0.0  # type: ignore[attr-defined]
    prom.by_query[DEFAULT_QUERIES["error_rate_pct"]] = float("nan")  # type: ignore[attr-defined]
    prom.by_query[DEFAULT_QUERIES["p95_ms"]] = float("nan")  # type: ignore[attr-defined]
    prom.by_query[DEFAULT_QUERIES["p99_ms"]] = None  # type: ignore[attr-defined]
    surface, status = await _run(deps, metrics, "metrics")
    rows = {r[0]: r for r in surface.replies()[0].details[0].rows}  # type: ignore[union-attr]
    for label in ("Response time p95", "Response time p99", "Error rate"):
        assert rows[label][1] == "no requests (see throughput)"
        assert rows[label][-1] == "OK"
    assert rows["Throughput"][1:] == (
        "0.00 req/s",
        "30.22 req/s",
        "< 20.00 req/s",
        "< 10.00 req/s",
        "CRIT",
    )
    assert status is Status.CRIT


async def test_nan_while_requests_flow_is_implausible_not_no_data(deps: Deps) -> None:
    deps.prometheus.by_query[DEFAULT_QUERIES["p95_ms"]] = float("nan")  # type: ignore[attr-defined]
    surface, _status = await _run(deps, health)
    status, summary = _steps(surface)["Performance metrics"]
    assert status is Status.WARN
    assert "Response time p95 NaN: implausible (check `SMS_PROMQL`)" in summary


async def test_an_implausible_value_is_a_warning_with_its_query(deps: Deps) -> None:
    inverted = (
        "100 * sum(rate(http_requests_total[5m])) "
        '/ sum(rate(http_requests_total{status=~"5.."}[5m]))'
    )
    deps = replace(
        deps,
        settings=deps.settings.model_copy(update={"sms_promql": {"error_rate_pct": inverted}}),
    )
    deps.prometheus.by_query[inverted] = 7518.8  # type: ignore[attr-defined]
    _backup(deps, "backup_20261126_020000.sql", age_h=5.5)
    surface, status = await _run(deps, health)
    step_status, summary = _steps(surface)["Performance metrics"]
    assert step_status is Status.WARN and status is Status.WARN
    assert summary == "Error rate 7518.8%: implausible (check `SMS_PROMQL`) (warn)"
    assert surface.last().text.startswith("1 of 5 checks need attention.")
    blocks = [d for m in surface.replies() for d in m.details if isinstance(d, CodeBlock)]
    assert [b.title for b in blocks] == ["Implausible values: the queries that produced them"]
    assert inverted in blocks[0].text and "error_rate_pct" in blocks[0].text

    surface, status = await _run(deps, metrics, "metrics")
    details = [d for m in surface.replies() for d in m.details]
    rows = {r[0]: r for r in details[0].rows}  # type: ignore[union-attr]
    assert rows["Error rate"][1] == "7518.8%: implausible (check `SMS_PROMQL`)"
    assert rows["Error rate"][-1] == "WARN"
    assert isinstance(details[1], CodeBlock) and inverted in details[1].text
