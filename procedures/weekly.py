"""The runbook's Weekly Tasks: the Monday checklist and the Friday performance report.

Monday: what the bot can check (disk space, the week's alerts, whether the
newest backup is readable) is checked, each as a step; the rest (dashboards,
a test restore, security patches) is listed to do by hand, with links.

Friday: the week's p95, p99, throughput and error rate against the
runbook's baseline table, the slowest endpoints, and the week's incidents.
Weekly figures are means of samples taken every hour over the week (a range
query), so a Prometheus holding less history reports what it has, and one
holding none says "no data".
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.adapters.alertmanager import AlertInfo, AlertmanagerError
from bot.adapters.backups import BackupUnreadable
from bot.adapters.prometheus import DEFAULT_QUERIES, Series
from bot.baseline import Metric, baseline_metrics, classify, format_value, plausible
from bot.catalogue import ProcedureSpec, RunbookEntry, Schedule
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import CodeBlock, Status, Table, worst
from bot.store.base import Incident
from procedures.checks import format_age, format_size

__all__ = [
    "DASHBOARDS",
    "REPORT_METRICS",
    "SPEC",
    "WEEK",
    "dashboard_links",
    "weekly_checklist",
    "weekly_report",
]

WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)
# The runbook's Grafana dashboards (Monitoring & Alerting).
DASHBOARDS = (
    ("System Overview", "/d/system-overview"),
    ("Application Performance", "/d/app-performance"),
    ("Business Metrics", "/d/business-metrics"),
)
REPORT_METRICS = ("p95_ms", "p99_ms", "throughput_rps", "error_rate_pct")
_PRIORITIES = ("P0", "P1", "P2", "P3")
_TOP_ENDPOINTS = 5


def dashboard_links(deps: Deps) -> list[tuple[str, str]]:
    base = deps.settings.sms_grafana_url.rstrip("/")
    return [(title, base + path) for title, path in DASHBOARDS]


def _duration(delta: timedelta) -> str:
    return format_age(delta.total_seconds() / 3600)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


# -- Monday -------------------------------------------------------------------


async def _disk(deps: Deps) -> Outcome:
    metric = next(m for m in baseline_metrics(deps.settings) if m.key == "disk_pct")
    value = await deps.prometheus.scalar(metric.query)
    status = classify(value, metric.threshold, unit=metric.unit)
    shown = format_value(value, metric.unit)
    used = "" if value is None else " used"
    return Outcome(status, f"{shown}{used} ({metric.threshold.describe()})")


def _incident_row(incident: Incident, now: datetime) -> tuple[str, ...]:
    if incident.resolved_at is not None:
        state = f"resolved in {_duration(incident.resolved_at - incident.opened_at)}"
    else:
        state = f"open for {_duration(now - incident.opened_at)}"
    return ("incident", incident.priority, incident.title, _when(incident.opened_at), state)


def _alert_row(alert: AlertInfo) -> tuple[str, ...]:
    name = alert.labels.get("alertname", alert.fingerprint)
    severity = alert.labels.get("severity", "-")
    return ("active now", severity, name, _when(alert.starts_at), alert.state)


def _by_priority(incidents: Sequence[Incident]) -> str:
    counts = Counter(i.priority for i in incidents)
    return ", ".join(f"{p} {counts[p]}" for p in _PRIORITIES if counts[p])


async def _alert_history(deps: Deps) -> Outcome:
    """The bot's incidents of the last 7 days, and what Alertmanager has firing now."""
    now = deps.clock()
    incidents = await deps.store.incidents_between(now - WEEK, now)
    alerts: list[AlertInfo] = []
    problem = ""
    try:
        alerts = await deps.alertmanager.alerts()
    except AlertmanagerError as exc:
        problem = f"; Alertmanager not checked: {exc}"
    if incidents:
        still_open = sum(1 for i in incidents if i.resolved_at is None)
        summary = f"{_count(len(incidents), 'incident')} ({_by_priority(incidents)})"
        if still_open:
            summary += f", {still_open} still open"
    else:
        summary = "no incidents"
    if not problem:
        summary += f"; {_count(len(alerts), 'alert')} active in Alertmanager"
    rows = tuple(_incident_row(i, now) for i in incidents) + tuple(_alert_row(a) for a in alerts)
    details: tuple[Table, ...] = ()
    if rows:
        details = (
            Table(
                title="Alert history: the bot's incidents (7 days) and alerts active now",
                columns=("source", "priority", "alert", "since (UTC)", "state"),
                rows=rows,
            ),
        )
    return Outcome(Status.WARN if problem else Status.OK, summary + problem, details=details)


async def _backup_integrity(deps: Deps) -> Outcome:
    files = await deps.backups.newest(1)
    if not files:
        return Outcome(Status.CRIT, f"no backup files in {deps.backups.directory}")
    newest = files[0]
    age = format_age(newest.age_hours(deps.clock()))
    try:
        what = await deps.backups.check_readable(newest)
    except BackupUnreadable as exc:
        return Outcome(Status.CRIT, f"newest backup unusable: {exc}")
    return Outcome(
        Status.OK, f"{newest.name} ({format_size(newest.size)}, {age} old) is readable: {what}"
    )


async def weekly_checklist(run: Run) -> None:
    deps = run.deps
    checked = (
        ("Check disk space", _disk(deps)),
        ("Review alert history (7 days)", _alert_history(deps)),
        ("Verify backup integrity", _backup_integrity(deps)),
    )
    await asyncio.gather(*(run.step(name, work) for name, work in checked))
    links = " · ".join(f"{title}: {url}" for title, url in dashboard_links(deps))
    by_hand = (
        f"Review Grafana dashboards for trends: {links}",
        "Test-restore the newest backup (the bot only checked that it is readable).",
        "Update security patches if available (the bot cannot check this).",
    )
    steps = {s.name: s for s in run.steps}
    lines = [f"Monday checklist (runbook: Weekly Tasks): {len(checked)} items checked by the bot."]
    for name, _work in checked:
        step = steps[name]
        lines.append(f"{step.status.icon} {name}: {step.summary}")
    lines.append("To do by hand:")
    lines.extend(f"• {item}" for item in by_hand)
    run.text = "\n".join(lines)


# -- Friday -------------------------------------------------------------------


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mean(series: Sequence[Series]) -> tuple[float | None, int]:
    """Mean of the first series' finite samples, and how many there were."""
    values = _finite(series[0].values) if series else []
    return (statistics.fmean(values) if values else None), len(values)


def _threshold(metric: Metric, value: float) -> str:
    sign = ">" if metric.threshold.higher_is_worse else "<"
    return f"{sign} {format_value(value, metric.unit)}"


def _every(step: timedelta) -> str:
    seconds = step.total_seconds()
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


async def _week_performance(deps: Deps, window: timedelta, step: timedelta) -> Outcome:
    end = deps.clock()
    start = end - window
    metrics = [m for m in baseline_metrics(deps.settings) if m.key in REPORT_METRICS]
    answers = await asyncio.gather(
        *(
            deps.prometheus.query_range(m.query, start=start, end=end, step_s=step.total_seconds())
            for m in metrics
        )
    )
    means = [_mean(series) for series in answers]
    rows = []
    statuses = []
    for metric, (value, _n) in zip(metrics, means, strict=True):
        status = classify(value, metric.threshold, unit=metric.unit)
        statuses.append(status)
        rows.append(
            (
                metric.label,
                format_value(value, metric.unit),
                format_value(metric.baseline, metric.unit),
                _threshold(metric, metric.threshold.warn),
                _threshold(metric, metric.threshold.crit),
                status.value.upper() if value is not None else "NO DATA",
            )
        )
    samples = max(n for _value, n in means)
    table = Table(
        title=(
            f"Performance {_when(start)} to {_when(end)} UTC against the runbook's baselines "
            f"(mean of {_count(samples, 'sample')}, one every {_every(step)})"
        ),
        columns=("metric", "7-day value", "baseline", "alert", "critical", "status"),
        rows=tuple(rows),
    )
    if all(value is None for value, _n in means):
        return Outcome(
            Status.WARN, f"no data in Prometheus for {_duration(window)}", details=(table,)
        )
    wrong = [
        f"# {m.key} ({m.label}) = {v}\n{m.query}"
        for m, (v, _n) in zip(metrics, means, strict=True)
        if v is not None and not plausible(v, m.unit)
    ]
    queries: tuple[CodeBlock, ...] = ()
    if wrong:
        title = "Implausible values: the queries that produced them"
        queries = (CodeBlock(title=title, text="\n\n".join(wrong)),)
    off = [
        f"{m.label} {format_value(v, m.unit)} ({s.value})"
        for m, (v, _n), s in zip(metrics, means, statuses, strict=True)
        if s is not Status.OK
    ]
    mean = f"mean of {_count(samples, 'sample')}"
    summary = "; ".join(off) if off else f"all {len(metrics)} within baseline ({mean})"
    return Outcome(worst(statuses), summary, details=(table, *queries))


async def _worst_endpoints(deps: Deps, window: timedelta, step: timedelta) -> Outcome:
    end = deps.clock()
    series = await deps.prometheus.query_range(
        DEFAULT_QUERIES["endpoint_p95_ms"],
        start=end - window,
        end=end,
        step_s=step.total_seconds(),
    )
    p95 = next(m for m in baseline_metrics(deps.settings) if m.key == "p95_ms")
    ranked: list[tuple[str, float, int]] = []
    for s in series:
        value, n = _mean([s])
        if value is not None:
            ranked.append((s.labels.get("handler", "(no handler label)"), value, n))
    if not ranked:
        return Outcome(Status.OK, "no data per endpoint")
    ranked.sort(key=lambda item: item[1], reverse=True)
    top = ranked[:_TOP_ENDPOINTS]
    table = Table(
        title=f"Slowest endpoints by mean p95 over {_duration(window)}",
        columns=("endpoint", "p95", "status", "samples"),
        rows=tuple(
            (
                handler,
                format_value(value, "ms"),
                classify(value, p95.threshold).value.upper(),
                str(n),
            )
            for handler, value, n in top
        ),
    )
    handler, value, _n = top[0]
    return Outcome(Status.OK, f"slowest: {handler} {format_value(value, 'ms')}", details=(table,))


def _median_max(deltas: Sequence[timedelta]) -> tuple[str, str]:
    if not deltas:
        return "-", "-"
    seconds = [d.total_seconds() for d in deltas]
    return (
        _duration(timedelta(seconds=statistics.median(seconds))),
        _duration(timedelta(seconds=max(seconds))),
    )


def _times_to_resolve(incidents: Sequence[Incident]) -> list[timedelta]:
    return [i.resolved_at - i.opened_at for i in incidents if i.resolved_at is not None]


def _incident_stats(label: str, incidents: Sequence[Incident]) -> tuple[str, ...]:
    resolved = _times_to_resolve(incidents)
    median, longest = _median_max(resolved)
    opened, done = len(incidents), len(resolved)
    return (label, str(opened), str(done), str(opened - done), median, longest)


async def _week_incidents(deps: Deps) -> Outcome:
    now = deps.clock()
    incidents = await deps.store.incidents_between(now - WEEK, now)
    if not incidents:
        return Outcome(Status.OK, "no incidents this week")
    rows = [
        _incident_stats(priority, [i for i in incidents if i.priority == priority])
        for priority in _PRIORITIES
        if any(i.priority == priority for i in incidents)
    ]
    rows.append(_incident_stats("all", incidents))
    all_resolved = _times_to_resolve(incidents)
    median, longest = _median_max(all_resolved)
    table = Table(
        title="Incidents of the last 7 days",
        columns=("priority", "opened", "resolved", "open", "median to resolve", "longest"),
        rows=tuple(rows),
    )
    summary = f"{_count(len(incidents), 'incident')} ({_by_priority(incidents)})"
    if all_resolved:
        summary += f"; median time to resolve {median}, longest {longest}"
    still_open = len(incidents) - len(all_resolved)
    if still_open:
        summary += f"; {still_open} still open"
    return Outcome(Status.OK, summary, details=(table,))


async def weekly_report(run: Run, *, window: timedelta = WEEK, step: timedelta = HOUR) -> None:
    """The Friday report; ``window`` and ``step`` shape the Prometheus range queries."""
    deps = run.deps
    steps = (
        ("Performance over the last 7 days", _week_performance(deps, window, step)),
        ("Worst endpoints (7-day p95)", _worst_endpoints(deps, window, step)),
        ("Incidents of the week", _week_incidents(deps)),
    )
    await asyncio.gather(*(run.step(name, work) for name, work in steps))
    end = deps.clock()
    by_name = {s.name: s for s in run.steps}
    lines = [f"Weekly performance report, {end - WEEK:%d %b} to {end:%d %b %Y}."]
    for name, _work in steps:
        step_view = by_name[name]
        lines.append(f"{step_view.status.icon} {name}: {step_view.summary}")
    run.text = "\n".join(lines)


SPEC = ProcedureSpec(
    name="weekly",
    summary="The runbook's Monday checklist and Friday performance report",
    schedules=(
        Schedule(
            job="weekly-checklist",
            title="Monday checklist",
            cron_setting="sms_weekly_checklist_cron",
            procedure=weekly_checklist,
        ),
        Schedule(
            job="weekly-report",
            title="Friday performance report",
            cron_setting="sms_weekly_report_cron",
            procedure=weekly_report,
        ),
    ),
    runbook=(
        RunbookEntry(
            "Weekly and monthly maintenance",
            "Mondays, Fridays, first Monday of the month",
            "dashboards, disk, alert history, backup integrity, VACUUM ANALYZE",
        ),
    ),
)
