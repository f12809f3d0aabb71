"""The five Morning Checklist checks, each returning an ``Outcome``.

They are shared by ``health`` and (later) the scheduled morning summary.
Each judges what an adapter returned against the runbook's expectations and
says, in one line, what the on-call engineer needs to know.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from bot.adapters.backups import BackupFile, BackupKind
from bot.adapters.prometheus import PrometheusError, PrometheusUnavailable, Sample
from bot.baseline import Metric, baseline_metrics, classify, format_value, plausible
from bot.deps import Deps
from bot.engine import Outcome
from bot.messages import CodeBlock, Field, Status, Table, worst

__all__ = [
    "ACTIONS_IF_FAILED",
    "MetricReading",
    "backups_table",
    "check_backups",
    "check_containers",
    "check_database",
    "check_health_endpoint",
    "check_performance",
    "format_age",
    "format_size",
    "implausible_queries",
    "read_metrics",
]

# The runbook's "Action if Failed" for each Morning Checklist step.
ACTIONS_IF_FAILED = {
    "containers": "Check the container's logs: `/sms logs SERVICE` (runbook: docker logs).",
    "health": (
        "Check the failing component named above, or why the endpoint does not answer "
        "(runbook step 2)."
    ),
    "performance": "Investigate the alerts in Alertmanager and the Grafana dashboards.",
    "database": "Check the PostgreSQL logs: `/sms logs postgres`.",
    "backups": "Trigger a manual backup (runbook: Manual Backup).",
}


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(hours: float) -> str:
    if hours < 0:
        return "in the future"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


async def check_containers(deps: Deps) -> Outcome:
    """Step 1: all expected containers run; the configured services are healthy."""
    overview = await deps.docker.overview()
    expected = deps.settings.sms_expected_containers
    problems: list[str] = []
    status = Status.OK
    for info in overview.missing:
        problems.append(f"{info.service} ({info.name}) missing")
    for info in overview.not_running:
        if info.state != "missing":
            problems.append(f"{info.service} ({info.name}) {info.state}")
    for info in overview.unhealthy:
        problems.append(f"{info.service} ({info.name}) unhealthy")
    if problems:
        status = Status.CRIT
    starting = [info for info in overview.services.values() if info.health == "starting"]
    for info in starting:
        problems.append(f"{info.service} health check starting")
        status = worst([status, Status.WARN])
    if overview.running < expected:
        status = worst([status, Status.WARN])
    summary = f"{overview.running}/{expected} containers running"
    if problems:
        summary += "; " + ", ".join(problems)
    details: tuple[Table, ...] = ()
    if status is not Status.OK:
        rows = tuple(
            (info.name, info.state, info.health or "-", info.status_text or "-")
            for info in overview.containers
            if info.state != "running" or info.health in {"unhealthy", "starting"}
        )
        missing_rows = tuple((info.name, "missing", "-", "not found") for info in overview.missing)
        if rows or missing_rows:
            details = (
                Table(
                    title="Containers needing attention",
                    columns=("container", "state", "health", "status"),
                    rows=missing_rows + rows,
                ),
            )
    return Outcome(status, summary, details=details)


async def check_health_endpoint(deps: Deps) -> Outcome:
    """Step 2: ``/health`` says healthy and every component check passes."""
    report = await deps.health.fetch()
    total = len(report.components)
    failing = report.failing
    if report.healthy and not failing:
        passing = f", all {total} checks passing" if total else ""
        return Outcome(Status.OK, f"{report.status}{passing} ({report.latency_ms:.0f} ms)")
    names = ", ".join(f"{c.name} ({c.status})" for c in failing) or "no component named"
    return Outcome(
        Status.CRIT,
        f"status {report.status!r} (HTTP {report.http_status}); failing: {names}",
    )


@dataclass(frozen=True)
class MetricReading:
    """One baseline metric as read now.

    ``no_requests``: a per-request metric (latency, error rate) with no
    requests to measure; it is not judged, throughput is.
    """

    metric: Metric
    value: float | None
    status: Status
    error: str | None = None
    no_requests: bool = False

    @property
    def shown(self) -> str:
        if self.error:
            return f"query failed: {self.error}"
        if self.no_requests:
            return "no requests (see throughput)"
        return format_value(self.value, self.metric.unit)

    @property
    def implausible(self) -> bool:
        return self.value is not None and not plausible(self.value, self.metric.unit)


def implausible_queries(readings: list[MetricReading]) -> tuple[CodeBlock, ...]:
    """The query behind each implausible value, so whoever fixes ``SMS_PROMQL`` sees it."""
    bad = [r for r in readings if r.implausible]
    if not bad:
        return ()
    text = "\n\n".join(
        f"# {r.metric.key} ({r.metric.label}) = {r.value}\n{r.metric.query}" for r in bad
    )
    return (CodeBlock(title="Implausible values: the queries that produced them", text=text),)


def _first(samples: list[Sample]) -> float | None:
    """The first series' value (NaN kept: it is not the same as no series at all)."""
    return samples[0].value if samples else None


def _idle(metrics: tuple[Metric, ...], results: list[object]) -> bool:
    """No requests to measure: throughput answered with nothing, or with 0 req/s."""
    for metric, result in zip(metrics, results, strict=True):
        if metric.key == "throughput_rps" and isinstance(result, list):
            value = _first(result)
            return value is None or value == 0
    return False


async def read_metrics(deps: Deps) -> list[MetricReading]:
    """Evaluate every baseline metric concurrently.

    Raises ``PrometheusUnavailable`` when Prometheus cannot be reached at
    all; a single bad query is reported on its own line instead. With no
    requests at all, latency and error rate read "no requests" and are not
    judged: throughput (no data, or 0 req/s) carries the verdict.
    """
    metrics = baseline_metrics(deps.settings)
    results: list[object] = list(
        await asyncio.gather(
            *(deps.prometheus.query(m.query) for m in metrics), return_exceptions=True
        )
    )
    idle = _idle(metrics, results)
    readings: list[MetricReading] = []
    for metric, result in zip(metrics, results, strict=True):
        if isinstance(result, PrometheusUnavailable):
            raise result
        if isinstance(result, PrometheusError):
            readings.append(MetricReading(metric, None, Status.FAILED, str(result)))
        elif isinstance(result, BaseException):
            raise result
        else:
            assert isinstance(result, list)
            value = _first(result)
            if metric.per_request and idle and (value is None or math.isnan(value)):
                readings.append(MetricReading(metric, None, Status.OK, no_requests=True))
            else:
                status = classify(value, metric.threshold, unit=metric.unit)
                readings.append(MetricReading(metric, value, status))
    return readings


async def check_performance(deps: Deps) -> Outcome:
    """Step 3: the baseline metrics against their alert and critical thresholds."""
    readings = await read_metrics(deps)
    status = worst([r.status for r in readings])
    fields = tuple(
        Field(
            r.metric.label,
            f"{r.shown} ({r.metric.threshold.describe()})",
            r.status,
        )
        for r in readings
    )
    bad = [r for r in readings if r.status is not Status.OK]
    if not bad:
        summary = f"all {len(readings)} metrics within baseline"
    else:
        summary = "; ".join(f"{r.metric.label} {r.shown} ({r.status.value})" for r in bad)
    return Outcome(status, summary, fields=fields, details=implausible_queries(readings))


async def check_database(deps: Deps) -> Outcome:
    """Step 4: the runbook's ``SELECT COUNT(*) FROM users`` succeeds."""
    result = await deps.db.count_users()
    return Outcome(Status.OK, f"connected, {result.count} users ({result.latency_ms:.0f} ms)")


def backups_table(files: list[BackupFile], deps: Deps, *, title: str = "") -> Table:
    now = deps.clock()
    return Table(
        title=title or f"Newest backups in {deps.backups.directory}",
        columns=("file", "written (UTC)", "age", "size"),
        rows=tuple(
            (
                f.name if f.kind is BackupKind.SCHEDULED else f"{f.name} ({f.kind.value})",
                f.modified.strftime("%Y-%m-%d %H:%M"),
                format_age(f.age_hours(now)),
                format_size(f.size),
            )
            for f in files
        ),
    )


def judge_backups(files: list[BackupFile], deps: Deps) -> Outcome:
    max_age = deps.settings.sms_backup_max_age_hours
    if not files:
        return Outcome(Status.CRIT, f"no backup files in {deps.backups.directory}")
    newest = files[0]
    age = newest.age_hours(deps.clock())
    described = f"newest {newest.name}, {format_age(age)} old, {format_size(newest.size)}"
    if newest.size == 0:
        return Outcome(Status.CRIT, f"{described}: the file is empty")
    if age > max_age:
        return Outcome(Status.CRIT, f"{described}: older than {max_age:g} h")
    return Outcome(Status.OK, described)


async def check_backups(deps: Deps, *, safety_dumps: bool = False) -> Outcome:
    """Step 5: a non-empty backup younger than ``SMS_BACKUP_MAX_AGE_HOURS``.

    Judged on the schedule's backups alone; ``safety_dumps`` also lists
    restore's safety dumps, marked, in the table.
    """
    files = await deps.backups.newest(5)
    outcome = judge_backups(files, deps)
    listed = await deps.backups.newest(5, safety_dumps=True) if safety_dumps else files
    details = (backups_table(listed, deps),) if listed else ()
    return Outcome(outcome.status, outcome.summary, details=details)
