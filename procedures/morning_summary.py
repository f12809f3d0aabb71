"""The scheduled morning summary: the five Daily Health Checks as one message.

The first line is the verdict an on-call engineer reads on a phone; one line
per check follows, with its value against the runbook's expectation and, for
each check that needs attention (a warning included), the runbook's "Action
if Failed". Tables stay in the thread, as ``health`` posts them. A last step
compares today's headline figures with the same moment yesterday.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import timedelta

from bot.baseline import Metric, baseline_metrics, format_value
from bot.catalogue import ProcedureSpec, Schedule
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Field, Status
from procedures.checks import (
    ACTIONS_IF_FAILED,
)
from procedures.health import CHECK_WORK, CHECKS

__all__ = [
    "COMPARED",
    "SPEC",
    "STEADY_PCT",
    "Trend",
    "compare_with_yesterday",
    "morning_summary",
    "trend",
]

# Within this many percent of yesterday's value a figure reads as steady (→).
STEADY_PCT = 5.0
# The figures compared with yesterday: (baseline key, label as shown).
COMPARED = (("p95_ms", "p95"), ("error_rate_pct", "error rate"), ("throughput_rps", "throughput"))
# Performance figures named in the verdict line when every metric is within baseline.
_HEADLINE = ("p95_ms", "error_rate_pct", "throughput_rps")


@dataclass(frozen=True)
class Trend:
    """One figure now and 24 hours ago."""

    label: str
    unit: str
    now: float | None
    yesterday: float | None

    @property
    def arrow(self) -> str:
        return trend(self.now, self.yesterday)

    def field_value(self) -> str:
        now = format_value(self.now, self.unit)
        if self.yesterday is None:
            return f"{now} (no data for yesterday)"
        return f"{now} (yesterday {format_value(self.yesterday, self.unit)} {self.arrow})"


def _value(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def trend(now: float | None, yesterday: float | None) -> str:
    """↑, ↓ or → (within ``STEADY_PCT`` percent of yesterday); "" when one side is missing."""
    now, yesterday = _value(now), _value(yesterday)
    if now is None or yesterday is None:
        return ""
    if yesterday == 0:
        return "→" if now == 0 else "↑"
    change = (now - yesterday) / abs(yesterday) * 100
    if abs(change) <= STEADY_PCT:
        return "→"
    return "↑" if change > 0 else "↓"


async def compare_with_yesterday(deps: Deps) -> Outcome:
    """p95, error rate and throughput now against the same instant 24 hours ago."""
    metrics = {m.key: m for m in baseline_metrics(deps.settings)}
    now = deps.clock()
    before = now - timedelta(days=1)
    chosen: list[tuple[Metric, str]] = [(metrics[key], label) for key, label in COMPARED]
    values = await asyncio.gather(
        *(deps.prometheus.scalar(m.query, at=now) for m, _ in chosen),
        *(deps.prometheus.scalar(m.query, at=before) for m, _ in chosen),
    )
    today, yesterday = values[: len(chosen)], values[len(chosen) :]
    trends = [
        Trend(label, metric.unit, _value(t), _value(y))
        for (metric, label), t, y in zip(chosen, today, yesterday, strict=True)
    ]
    fields = tuple(Field(t.label, t.field_value()) for t in trends)
    if all(t.yesterday is None for t in trends):
        summary = "no data for yesterday"
    else:
        summary = ", ".join(
            f"{t.label} {t.arrow or 'n/a'}" for t in trends if t.yesterday is not None
        )
        missing = [t.label for t in trends if t.yesterday is None]
        if missing:
            summary += f"; no data for yesterday: {', '.join(missing)}"
    return Outcome(Status.OK, summary, fields=fields)


def _performance_line(deps: Deps, outcome: Outcome | None, summary: str) -> str:
    """The judged metrics: the ones off baseline, or the headline ones when all are fine."""
    if outcome is None:
        return summary
    headline = {m.label for m in baseline_metrics(deps.settings) if m.key in _HEADLINE}
    if outcome.status is Status.OK:
        shown = [f for f in outcome.fields if f.label in headline]
    else:
        shown = [f for f in outcome.fields if f.status is not Status.OK]
    if not shown:
        return summary
    judged = "; ".join(f"{f.label} {f.value}" for f in shown)
    return f"{summary}: {judged}" if outcome.status is Status.OK else judged


async def morning_summary(run: Run) -> None:
    deps = run.deps
    results = await asyncio.gather(
        *(run.step(name, CHECK_WORK[key](deps)) for key, name in CHECKS),
        run.step("Compare with yesterday", compare_with_yesterday(deps)),
    )
    by_name = {step.name: step for step in run.steps}
    lines: list[str] = []
    attention = 0
    max_age = deps.settings.sms_backup_max_age_hours
    for (key, name), result in zip(CHECKS, results[: len(CHECKS)], strict=True):
        step = by_name[name]
        outcome = result if isinstance(result, Outcome) else None
        if key == "performance":
            shown = _performance_line(deps, outcome, step.summary)
        elif key == "backups" and step.status is Status.OK:
            shown = f"{step.summary} (limit {max_age:g} h)"
        else:
            shown = step.summary
        line = f"{step.status.icon} {name}: {shown}"
        if step.status is not Status.OK:
            attention += 1
            line += f"\n    → {ACTIONS_IF_FAILED[key]}"
        lines.append(line)
    total = len(CHECKS)
    verdict = (
        f"All {total} checks passed."
        if attention == 0
        else f"{attention} of {total} checks need attention."
    )
    change = await deps.store.change_current()
    if change is not None:
        lines.append(
            f"⚠ A change is still open: {change.description!r} by {change.started_by} since "
            f"{change.started_at:%Y-%m-%d %H:%M} UTC (`/sms change done` or `/sms change abort`)."
        )
    run.text = "\n".join([verdict, *lines])


SPEC = ProcedureSpec(
    name="morning_summary",
    summary="The five daily checks posted to the alert channel every morning",
    schedules=(
        Schedule(
            job="morning-summary",
            title="Morning summary",
            cron_setting="sms_morning_summary_cron",
            procedure=morning_summary,
        ),
    ),
)
