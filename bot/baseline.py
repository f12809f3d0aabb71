"""The runbook's Performance Baselines table, as data.

Each metric has the runbook's label, unit, baseline value, the PromQL that
measures it (overridable with ``SMS_PROMQL``) and the thresholds from
``SMS_THRESHOLD_*``. ``classify`` judges a value against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.adapters.prometheus import DEFAULT_QUERIES
from bot.config import Settings, Threshold
from bot.messages import Status

__all__ = ["METRIC_KEYS", "Metric", "baseline_metrics", "classify", "format_value"]

# key: (label, unit, runbook baseline)
_TABLE: dict[str, tuple[str, str, float]] = {
    "p95_ms": ("Response time p95", "ms", 350.0),
    "p99_ms": ("Response time p99", "ms", 2000.0),
    "throughput_rps": ("Throughput", "req/s", 30.22),
    "error_rate_pct": ("Error rate", "%", 1.33),
    "cpu_pct": ("CPU usage", "%", 15.0),
    "memory_pct": ("Memory usage", "%", 15.3),
    "disk_pct": ("Disk usage", "%", 2.95),
}
METRIC_KEYS: tuple[str, ...] = tuple(_TABLE)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    baseline: float
    query: str
    threshold: Threshold


def baseline_metrics(settings: Settings) -> tuple[Metric, ...]:
    """The table with this deployment's thresholds and queries."""
    thresholds = {
        "p95_ms": settings.sms_threshold_p95_ms,
        "p99_ms": settings.sms_threshold_p99_ms,
        "throughput_rps": settings.sms_threshold_throughput_rps,
        "error_rate_pct": settings.sms_threshold_error_rate_pct,
        "cpu_pct": settings.sms_threshold_cpu_pct,
        "memory_pct": settings.sms_threshold_memory_pct,
        "disk_pct": settings.sms_threshold_disk_pct,
    }
    return tuple(
        Metric(
            key=key,
            label=label,
            unit=unit,
            baseline=baseline,
            query=settings.sms_promql.get(key, DEFAULT_QUERIES[key]),
            threshold=thresholds[key],
        )
        for key, (label, unit, baseline) in _TABLE.items()
    )


def classify(value: float | None, threshold: Threshold) -> Status:
    """OK, WARN past the alert threshold, CRIT past the critical one.

    No value (no data, NaN) is a WARN: the check could not confirm health,
    but nothing says the system is failing either.
    """
    if value is None or math.isnan(value):
        return Status.WARN
    if threshold.higher_is_worse:
        if value > threshold.crit:
            return Status.CRIT
        if value > threshold.warn:
            return Status.WARN
        return Status.OK
    if value < threshold.crit:
        return Status.CRIT
    if value < threshold.warn:
        return Status.WARN
    return Status.OK


def format_value(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "no data"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:.2f} {unit}"
