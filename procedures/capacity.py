"""``capacity``: the runbook's Capacity Planning, measured, monthly and on demand.

Users and courses are counted in the SMS database, its size read from
PostgreSQL, free disk and concurrent users from Prometheus (where a metric
exists; the report says so when none does). Each is set against the
runbook's capacity figures and the Year 1 / Year 2 growth projections. A
daily job samples the database size and row counts into the bot's own store
(migration 9), so the report shows the growth per month and the date a
resource is projected to cross 80 % of its capacity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.adapters.prometheus import PrometheusError
from bot.baseline import baseline_metrics
from bot.catalogue import (
    CommandSpec,
    JobContext,
    ProcedureSpec,
    RunbookEntry,
    Schedule,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status, Table, worst
from bot.store.base import CapacitySample
from procedures.checks import format_size

__all__ = [
    "CAPACITY",
    "PROJECTIONS",
    "SHARE",
    "SPEC",
    "Projection",
    "Trend",
    "capacity_report",
    "capacity_sample",
    "growth",
    "sample_capacity",
]

GB = 1024**3
# The runbook's Current Capacity ("system supports ...").
CAPACITY: Mapping[str, float] = {
    "users": 10_000,
    "courses": 1_000,
    "db_bytes": 100 * GB,
    "concurrent": 200,
}
# Past this share of capacity a resource needs planning.
SHARE = 0.8
# How far back the daily samples are read for the growth per month.
_LOOKBACK = timedelta(days=180)
_MONTH_DAYS = 30.44
_TABLES = ("users", "courses")
_LABELS = {
    "users": "Users",
    "courses": "Courses",
    "db_bytes": "Database size",
    "concurrent": "Concurrent users (30-day peak)",
}


@dataclass(frozen=True)
class Projection:
    """One year of the runbook's Growth Projections."""

    name: str
    users: tuple[int, int]
    courses: tuple[int, int]
    disk_gb_month: tuple[float, float]
    action: str


PROJECTIONS: Mapping[int, Projection] = {
    2026: Projection("Year 1 (2026)", (500, 1000), (50, 100), (1, 2), "No scaling needed"),
    2027: Projection(
        "Year 2 (2027)",
        (2000, 5000),
        (200, 500),
        (5, 10),
        "Consider horizontal scaling (multiple backend instances)",
    ),
}


def projection_for(year: int) -> Projection:
    return PROJECTIONS[min(max(year, min(PROJECTIONS)), max(PROJECTIONS))]


@dataclass(frozen=True)
class Trend:
    """Growth per month from the samples, and when 80 % of capacity is reached."""

    per_month: float | None
    crosses: datetime | None  # projected; None when not growing (or already past)


def growth(
    samples: Sequence[tuple[datetime, float]], *, now: datetime, value: float, capacity: float
) -> Trend:
    """A least-squares line through the samples (and today's value)."""
    points = sorted({*samples, (now, value)})
    if len(points) < 2 or (points[-1][0] - points[0][0]) < timedelta(days=1):
        return Trend(None, None)
    xs = [(at - points[0][0]).total_seconds() / 86400 for at, _v in points]
    ys = [v for _at, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    per_day = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    crosses = None
    limit = SHARE * capacity
    if per_day > 0 and value < limit:
        days = (limit - value) / per_day
        if days < 365 * 100:
            crosses = now + timedelta(days=days)
    return Trend(per_day * _MONTH_DAYS, crosses)


def _amount(metric: str, value: float) -> str:
    return format_size(int(value)) if metric == "db_bytes" else f"{value:,.0f}"


def _range(low: float, high: float) -> str:
    return f"{low:,.0f}-{high:,.0f}"


def _against(value: float, low: float, high: float) -> str:
    if value < low:
        return "below"
    return "within" if value <= high else "ABOVE"


# -- readings ----------------------------------------------------------------------------


async def read_now(deps: Deps) -> dict[str, float]:
    """Today's database figures: rows of users and courses, database size in bytes."""
    counts = await deps.db.table_counts(_TABLES)
    check = await deps.db.check()
    values = {table: float(n) for table, n in counts.items() if n is not None}
    values["db_bytes"] = float(check.size_bytes)
    return values


async def _take_sample(deps: Deps) -> Outcome:
    """Record today's figures in the bot's store, for the report's growth per month."""
    now = deps.clock()
    values = await read_now(deps)
    await deps.store.capacity_sample_put(now, values)
    parts = [f"{values[t]:,.0f} {t}" for t in _TABLES if t in values]
    parts.append(f"database {format_size(int(values['db_bytes']))}")
    return Outcome(Status.OK, f"sample of {now:%Y-%m-%d %H:%M} UTC stored: {', '.join(parts)}")


async def sample_capacity(context: JobContext) -> Status:
    """The daily job: record today's figures in the bot's store; posts nothing."""
    done = await _take_sample(context.deps)
    return done.status


async def capacity_sample(run: Run) -> None:
    """``sms-bot run capacity-sample``: take and store the sample, in one line.

    What the daily job does, shown: not the monthly report (``capacity-report``
    and ``capacity`` show that).
    """
    done = await run.step("Record today's capacity sample", _take_sample(run.deps))
    run.text = (
        done.summary[0].upper() + done.summary[1:] + "."
        if done
        else "Could not take the capacity sample: see the step."
    )


async def _disk(deps: Deps) -> Outcome:
    free = await deps.prometheus.scalar('max(node_filesystem_avail_bytes{mountpoint="/"})')
    metric = next(m for m in baseline_metrics(deps.settings) if m.key == "disk_pct")
    used = await deps.prometheus.scalar(metric.query)
    if free is None or used is None:
        return Outcome(Status.WARN, "no disk metrics in Prometheus (node exporter)")
    status = Status.OK if used < SHARE * 100 else Status.CRIT
    return Outcome(status, f"{format_size(int(free))} free, {used:.0f} % used")


async def _concurrent(deps: Deps) -> tuple[float | None, str]:
    query = deps.settings.sms_concurrent_users_query
    if not query:
        return None, "no metric configured (SMS_CONCURRENT_USERS_QUERY)"
    try:
        peak = await deps.prometheus.scalar(f"max_over_time(({query})[30d:5m])")
    except PrometheusError as exc:
        return None, f"not measured: {exc}"
    if peak is None:
        return None, f"no metric: Prometheus has no data for `{query}`, so it is not measured"
    return peak, ""


# -- the report --------------------------------------------------------------------------


def _by_metric(samples: Sequence[CapacitySample]) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, list[tuple[datetime, float]]] = {}
    for s in samples:
        out.setdefault(s.metric, []).append((s.at, s.value))
    return out


async def _resources(deps: Deps) -> Outcome:
    now = deps.clock()
    values = await read_now(deps)
    history = _by_metric(await deps.store.capacity_samples(now - _LOOKBACK))
    # Today's reading is a sample too (the same slot again replaces it).
    await deps.store.capacity_sample_put(now, values)
    year = projection_for(now.year)
    rows = []
    statuses = []
    notes = []
    for metric in ("users", "courses", "db_bytes"):
        capacity = CAPACITY[metric]
        if metric not in values:
            rows.append((_LABELS[metric], f"no `{metric}` table", "-", "-", "-", "-"))
            statuses.append(Status.WARN)
            continue
        value = values[metric]
        share = value / capacity
        trend = growth(history.get(metric, []), now=now, value=value, capacity=capacity)
        status = Status.CRIT if share >= SHARE else Status.OK
        if trend.crosses is not None and trend.crosses - now < timedelta(days=180):
            status = worst([status, Status.WARN])
        statuses.append(status)
        if metric == "db_bytes":
            low, high = year.disk_gb_month
            per_month = trend.per_month / GB if trend.per_month is not None else None
            measured = (
                "not enough samples yet"
                if per_month is None
                else f"now {per_month:.2f} GB/month, {_against(per_month, low, high)}"
            )
            expected = f"{year.name}: {low:g}-{high:g} GB/month; {measured}"
        else:
            low_i, high_i = year.users if metric == "users" else year.courses
            expected = f"{year.name}: {_range(low_i, high_i)}, {_against(value, low_i, high_i)}"
        if trend.per_month is None:
            growth_text = "not enough samples yet"
        else:
            sign = "+" if trend.per_month >= 0 else "-"
            growth_text = f"{sign}{_amount(metric, abs(trend.per_month))}/month"
        if share >= SHARE:
            crossing = "past 80 % now"
        elif trend.crosses is None:
            crossing = "not on the way"
        else:
            crossing = f"{trend.crosses:%Y-%m-%d}"
            notes.append(f"{_LABELS[metric].lower()} crosses 80 % around {trend.crosses:%Y-%m-%d}")
        rows.append(
            (
                _LABELS[metric],
                _amount(metric, value),
                f"{_amount(metric, capacity)} ({share * 100:.1f} %)",
                growth_text,
                crossing,
                expected,
            )
        )
    peak, missing = await _concurrent(deps)
    concurrent_cap = CAPACITY["concurrent"]
    if peak is None:
        rows.append((_LABELS["concurrent"], missing, f"{concurrent_cap:,.0f}", "-", "-", "-"))
    else:
        share = peak / concurrent_cap
        statuses.append(Status.CRIT if share >= SHARE else Status.OK)
        rows.append(
            (
                _LABELS["concurrent"],
                f"{peak:,.0f}",
                f"{concurrent_cap:,.0f} ({share * 100:.1f} %)",
                "-",
                "-",
                "-",
            )
        )
    table = Table(
        title=f"Capacity against the runbook's figures and {year.name} projections",
        columns=("resource", "now", "capacity (share)", "growth", "80 % on", "projection"),
        rows=tuple(rows),
    )
    past = [r[0] for r, s in zip(rows, statuses, strict=False) if s is Status.CRIT]
    if past:
        summary = f"{', '.join(past)} past 80 % of capacity"
    else:
        summary = "every resource below 80 % of capacity"
    if notes:
        summary += "; " + "; ".join(notes)
    if peak is None:
        summary += f"; concurrent users: {missing}"
    return Outcome(worst(statuses), summary, details=(table,))


async def capacity_report(run: Run) -> None:
    deps = run.deps
    resources = await run.step("Users, courses, database size, concurrent users", _resources(deps))
    disk = await run.step("Disk free", _disk(deps))
    year = projection_for(deps.clock().year)
    lines = []
    if resources is not None:
        lines.append(resources.summary[0].upper() + resources.summary[1:] + ".")
    else:
        lines.append("Could not read the capacity figures: see the step.")
    if disk is not None:
        lines.append(f"Disk: {disk.summary}.")
    lines.append(f"Runbook for {year.name}: {year.action}.")
    run.text = "\n".join(lines)


SPEC = ProcedureSpec(
    name="capacity",
    summary="The runbook's capacity planning: figures, growth and projections",
    commands=(
        CommandSpec(
            "capacity",
            usage="capacity",
            summary="Users, courses, database size, disk and concurrent users against capacity",
            parse=without_args("capacity", "Capacity", capacity_report),
        ),
    ),
    schedules=(
        Schedule(
            job="capacity-report",
            title="Capacity report",
            cron_setting="sms_capacity_cron",
            procedure=capacity_report,
        ),
        Schedule(
            job="capacity-sample",
            title="Capacity sample",
            cron_setting="sms_capacity_sample_cron",
            procedure=capacity_sample,
            check=sample_capacity,
            local_time=False,
        ),
    ),
    runbook=(
        RunbookEntry(
            "Capacity planning",
            "monthly (first Monday); sampled daily",
            "users, courses, database size, disk, concurrent users vs capacity and projections",
        ),
    ),
)
