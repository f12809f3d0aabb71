"""``metrics``: the runbook's Performance Baselines table with the current values."""

from __future__ import annotations

from bot.baseline import format_value
from bot.catalogue import (
    CommandSpec,
    ProcedureSpec,
    RunbookEntry,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status, Table, worst
from procedures.checks import implausible_queries, read_metrics

__all__ = ["SPEC", "metrics"]


def _threshold(value: float, unit: str, higher_is_worse: bool) -> str:
    return f"{'>' if higher_is_worse else '<'} {format_value(value, unit)}"


async def _table(deps: Deps) -> Outcome:
    readings = await read_metrics(deps)
    rows = tuple(
        (
            r.metric.label,
            r.shown,
            format_value(r.metric.baseline, r.metric.unit),
            _threshold(r.metric.threshold.warn, r.metric.unit, r.metric.threshold.higher_is_worse),
            _threshold(r.metric.threshold.crit, r.metric.unit, r.metric.threshold.higher_is_worse),
            r.status.value.upper(),
        )
        for r in readings
    )
    status = worst([r.status for r in readings])
    bad = [r.metric.label for r in readings if r.status is not Status.OK]
    summary = (
        f"all {len(readings)} metrics within baseline"
        if not bad
        else f"{len(bad)} of {len(readings)} outside baseline: {', '.join(bad)}"
    )
    table = Table(
        title="Performance baselines (runbook) and current values",
        columns=("metric", "current", "baseline", "alert", "critical", "status"),
        rows=rows,
    )
    return Outcome(status, summary, details=(table, *implausible_queries(readings)))


async def metrics(run: Run) -> None:
    await run.step("Query Prometheus", _table(run.deps))


SPEC = ProcedureSpec(
    name="metrics",
    summary="The runbook's baseline table with current values from Prometheus",
    commands=(
        CommandSpec(
            "metrics",
            usage="metrics",
            summary="The baseline table with current values",
            parse=without_args("metrics", "Performance metrics", metrics),
        ),
    ),
    runbook=(
        RunbookEntry(
            "Performance baselines",
            "p95 > 500 ms; throughput < 20 req/s",
            "baseline table with current values from Prometheus",
        ),
    ),
)
