"""``sla [MONTH]``: the runbook's SLA Commitments, measured, on the first of each month.

Five commitments, each from its real source: uptime 99.5 % (downtime minutes
from Prometheus, against the 3.65 h monthly budget), p95 < 500 ms and error
rate < 2 % over the month (Prometheus), and backup recovery: RTO < 15 min (the
month's restores, from the bot's audit and run records) and RPO < 24 h (the
largest gap between backups in the backup folder). The month's incidents
follow with their times to acknowledge and resolve. The verdict line comes
first because it is what a phone shows.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.baseline import baseline_metrics
from bot.catalogue import (
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    RunbookEntry,
    Schedule,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UsageError
from bot.incidents import format_duration
from bot.messages import Message, Status, Table, worst

__all__ = [
    "BUDGET_MIN",
    "ERROR_RATE_PCT",
    "P95_MS",
    "RPO",
    "RTO",
    "SPEC",
    "UPTIME_PCT",
    "Window",
    "month_window",
    "over_window",
    "sla_report",
]

# The runbook's SLA Commitments.
UPTIME_PCT = 99.5
BUDGET_MIN = 3.65 * 60  # "maximum 3.65 hours downtime/month"
P95_MS = 500.0
ERROR_RATE_PCT = 2.0
RTO = timedelta(minutes=15)
RPO = timedelta(hours=24)
COMMITMENTS = 5
# Steps that judge a commitment (the incidents step only informs).
_JUDGED = ("Uptime", "Response time (p95)", "Error rate", "Recovery time (RTO)", "Backup gap (RPO)")
_PROMETHEUS_TIMEOUT_S = 60.0
_USAGE = "sla [MONTH]"


@dataclass(frozen=True)
class Window:
    """The measured stretch of a month: ``start`` to ``end`` (now, for the current month)."""

    label: str  # "2026-11"
    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return max(60, int((self.end - self.start).total_seconds()))


def month_window(month: str | None, *, now: datetime, timezone: str) -> Window:
    """``YYYY-MM`` (default: this month) in ``timezone``, cut at ``now``."""
    tz = ZoneInfo(timezone)
    local = now.astimezone(tz)
    if month is None:
        year, number = local.year, local.month
    else:
        try:
            year_s, number_s = month.split("-")
            year, number = int(year_s), int(number_s)
            start = datetime(year, number, 1, tzinfo=tz)
        except ValueError:
            raise UsageError(
                f"{month!r} is not a month; write it as YYYY-MM, e.g. {local:%Y-%m}.",
                usage=f"/sms {_USAGE}",
            ) from None
    start = datetime(year, number, 1, tzinfo=tz)
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=tz)
    if start > now:
        raise UsageError(f"{year:04d}-{number:02d} has not started yet.", usage=f"/sms {_USAGE}")
    end = min(following, now).astimezone(UTC)
    return Window(f"{year:04d}-{number:02d}", start.astimezone(UTC), end)


def previous_month(now: datetime, timezone: str) -> str:
    local = now.astimezone(ZoneInfo(timezone))
    first = local.replace(day=1)
    before = first - timedelta(days=1)
    return f"{before:%Y-%m}"


def over_window(promql: str, seconds: int) -> str:
    """A baseline query (rates over ``[5m]``) turned into the same figure over the window.

    A ratio or quantile of rates over the whole window equals the one of the
    window's increases, so the configured query (``SMS_PROMQL``) serves as is.
    """
    return promql.replace("[5m]", f"[{seconds}s]")


def _row(name: str, target: str, measured: str, status: Status) -> tuple[str, ...]:
    verdict = {Status.OK: "met", Status.CRIT: "MISSED"}.get(status, "not measured")
    return (name, target, measured, verdict)


# -- the commitments ---------------------------------------------------------------------


async def uptime(deps: Deps, window: Window) -> Outcome:
    """Minutes in which the backend's availability series read 0, against the budget."""
    up = f"max({deps.settings.sms_sla_up_query})"
    # One point per minute of the window; a second short so the minute it starts at,
    # which belongs to the time before, is not counted (range ends are inclusive).
    rng = f"[{window.seconds - 1}s:1m]"
    down, measured = await asyncio.gather(
        deps.prometheus.scalar(f"sum_over_time(({up} == bool 0){rng})", at=window.end),
        deps.prometheus.scalar(f"count_over_time(({up}){rng})", at=window.end),
    )
    if not measured:
        return Outcome(
            Status.WARN,
            f"no data: `{deps.settings.sms_sla_up_query}` has no samples in {window.label} "
            "(check SMS_SLA_UP_QUERY)",
        )
    down_min = down or 0.0
    pct = 100.0 * (1 - down_min / measured)
    left = BUDGET_MIN - down_min
    status = Status.OK if left >= 0 else Status.CRIT
    budget = (
        f"{_minutes(left)} of the 3.65 h budget left"
        if left >= 0
        else f"budget of 3.65 h exceeded by {_minutes(-left)}"
    )
    return Outcome(
        status,
        f"{pct:.2f} %: {down_min:.0f} min down in {measured:.0f} min measured; {budget}",
    )


def _minutes(value: float) -> str:
    return format_duration(value * 60)


@dataclass(frozen=True)
class _Target:
    """An SLA ceiling on a baseline metric, and how its monthly value is said."""

    key: str
    ceiling: float
    said: Callable[[float], str]


_P95 = _Target(
    "p95_ms", P95_MS, lambda v: f"p95 {v:.0f} ms over the month (target < {P95_MS:.0f} ms)"
)
_ERRORS = _Target(
    "error_rate_pct",
    ERROR_RATE_PCT,
    lambda v: f"{v:.2f} % of requests failed (target < {ERROR_RATE_PCT:g} %)",
)


async def _against(deps: Deps, window: Window, target: _Target) -> Outcome:
    """The metric over the month against its ceiling: OK under it, CRIT at or over."""
    metric = next(m for m in baseline_metrics(deps.settings) if m.key == target.key)
    query = over_window(metric.query, window.seconds)
    value = await deps.prometheus.scalar(query, at=window.end)
    if value is None:
        return Outcome(Status.WARN, f"no requests recorded in {window.label}")
    return Outcome(Status.OK if value < target.ceiling else Status.CRIT, target.said(value))


async def response_time(deps: Deps, window: Window) -> Outcome:
    return await _against(deps, window, _P95)


async def error_rate(deps: Deps, window: Window) -> Outcome:
    return await _against(deps, window, _ERRORS)


async def recovery_time(deps: Deps, window: Window) -> Outcome:
    """The month's restores from the audit: each run's duration against the 15-minute RTO."""
    events = await deps.store.audit_between(window.start, window.end, limit=100_000)
    restores = [e for e in events if e.action == "restore"]
    if not restores:
        return Outcome(Status.OK, "no restore this month (nothing to measure)")
    took: list[float] = []
    for event in restores:
        run_id = event.detail.get("run_id")
        record = await deps.store.get_run(str(run_id)) if run_id else None
        if record is not None and record.finished_at is not None:
            took.append((record.finished_at - record.started_at).total_seconds())
    failed = sum(1 for e in restores if e.outcome != "ok")
    if not took:
        return Outcome(Status.WARN, f"{len(restores)} restore(s), durations not recorded")
    longest = max(took)
    status = Status.OK if longest <= RTO.total_seconds() and not failed else Status.CRIT
    summary = f"{len(restores)} restore(s), longest {format_duration(longest)} (target < 15 min)"
    if failed:
        summary += f"; {failed} failed"
    return Outcome(status, summary)


def largest_gap(
    times: Sequence[datetime], start: datetime, end: datetime
) -> tuple[timedelta, datetime, datetime]:
    """The longest stretch of ``start..end`` without a backup (the one before counts)."""
    before = [t for t in times if t <= start]
    inside = sorted(t for t in times if start < t <= end)
    points = [max(before) if before else start, *inside, end]
    gaps = [(b - a, a, b) for a, b in itertools.pairwise(points)]
    return max(gaps, key=lambda g: g[0])


async def backup_gap(deps: Deps, window: Window) -> Outcome:
    files = await deps.backups.newest(100_000)
    if not files:
        return Outcome(Status.CRIT, f"no backup in {deps.backups.directory}")
    gap, after, until = largest_gap([f.modified for f in files], window.start, window.end)
    status = Status.OK if gap <= RPO else Status.CRIT
    count = sum(1 for f in files if window.start < f.modified <= window.end)
    return Outcome(
        status,
        f"largest gap {format_duration(gap.total_seconds())} ({after:%d %b %H:%M} to "
        f"{until:%d %b %H:%M} UTC) among {count} backup(s) (target < 24 h)",
    )


async def incidents(deps: Deps, window: Window) -> Outcome:
    found = await deps.store.incidents_between(window.start, window.end)
    if not found:
        return Outcome(Status.OK, f"no incidents in {window.label}")
    rows = []
    acks: list[float] = []
    resolves: list[float] = []
    for i in found:
        ack = (i.acknowledged_at - i.opened_at).total_seconds() if i.acknowledged_at else None
        res = (i.resolved_at - i.opened_at).total_seconds() if i.resolved_at else None
        if ack is not None:
            acks.append(ack)
        if res is not None:
            resolves.append(res)
        rows.append(
            (
                f"{i.opened_at:%d %b %H:%M}",
                i.priority,
                i.title,
                format_duration(ack) if ack is not None else "-",
                format_duration(res) if res is not None else "open",
            )
        )
    table = Table(
        title=f"Incidents of {window.label}",
        columns=("opened (UTC)", "priority", "incident", "to acknowledge", "to resolve"),
        rows=tuple(rows),
    )
    parts = [f"{len(found)} incident(s)"]
    if acks:
        parts.append(f"median time to acknowledge {format_duration(statistics.median(acks))}")
    if resolves:
        parts.append(f"median time to resolve {format_duration(statistics.median(resolves))}")
    return Outcome(Status.OK, "; ".join(parts), details=(table,))


# -- the report --------------------------------------------------------------------------


def verdict(statuses: Sequence[Status]) -> str:
    missed = sum(1 for s in statuses if s is Status.CRIT)
    unknown = sum(1 for s in statuses if s not in (Status.OK, Status.CRIT))
    line = f"{missed} of {COMMITMENTS} commitments missed" if missed else "SLA met"
    if unknown:
        line += f" ({unknown} not measured)"
    return line


async def sla_report(run: Run, *, window: Window) -> None:
    deps = run.deps
    targets = (
        f"≥ {UPTIME_PCT} % (≤ 3.65 h down)",
        f"p95 < {P95_MS:.0f} ms",
        f"< {ERROR_RATE_PCT:g} %",
        "< 15 min",
        "< 24 h between backups",
    )
    work = (
        uptime(deps, window),
        response_time(deps, window),
        error_rate(deps, window),
        recovery_time(deps, window),
        backup_gap(deps, window),
    )
    await asyncio.gather(
        *(
            run.step(name, w, timeout=_PROMETHEUS_TIMEOUT_S)
            for name, w in zip(_JUDGED, work, strict=True)
        )
    )
    judged = {s.name: s for s in run.steps}
    statuses = [judged[name].status for name in _JUDGED]
    await run.step("Incidents of the month", incidents(deps, window))
    whole = window.end.astimezone(ZoneInfo(deps.settings.sms_timezone)).day == 1
    until = "" if whole else f", to {window.end:%d %b %H:%M} UTC"
    run.text = f"{verdict(statuses)}. SLA of {window.label}{until}."
    table = Table(
        title=f"SLA commitments, {window.label}",
        columns=("commitment", "target", "measured", "verdict"),
        rows=tuple(
            _row(name, target, judged[name].summary, judged[name].status)
            for name, target in zip(_JUDGED, targets, strict=True)
        ),
    )
    await run.reply(Message(title=table.title, status=worst(statuses), details=(table,)))


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    if len(args) > 1:
        raise UsageError(f"Unexpected argument {' '.join(args[1:])!r}.", usage=f"/sms {_USAGE}")
    deps = ctx.deps
    window = month_window(
        args[0] if args else None, now=deps.clock(), timezone=deps.settings.sms_timezone
    )

    async def procedure(run: Run) -> None:
        await sla_report(run, window=window)

    return Invocation(name="sla", title=f"SLA report {window.label}", procedure=procedure)


async def monthly_sla(run: Run) -> None:
    """The scheduled report: the month that just ended."""
    deps = run.deps
    now = deps.clock()
    month = previous_month(now, deps.settings.sms_timezone)
    await sla_report(run, window=month_window(month, now=now, timezone=deps.settings.sms_timezone))


SPEC = ProcedureSpec(
    name="sla",
    summary="The runbook's SLA commitments measured for a month",
    commands=(
        CommandSpec(
            "sla",
            usage=_USAGE,
            summary="Uptime, p95, error rate, RTO and RPO of a month (YYYY-MM) against the SLA",
            parse=_parse,
        ),
    ),
    schedules=(
        Schedule(
            job="sla-report",
            title="SLA report",
            cron_setting="sms_sla_cron",
            procedure=monthly_sla,
        ),
    ),
    runbook=(
        RunbookEntry(
            "SLA commitments",
            "first day of each month, 09:00",
            "uptime vs 3.65 h budget, p95, error rate, RTO, RPO, incidents",
        ),
    ),
)
