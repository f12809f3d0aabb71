"""The runbook's Performance Baselines table, as data.

Each metric has the runbook's label, unit, baseline value, the PromQL that
measures it (overridable with ``SMS_PROMQL``) and the thresholds from
``SMS_THRESHOLD_*``. ``classify`` judges a value against them.

A value no healthy query can produce (NaN, ±Inf, a negative latency or rate,
a percentage outside 0-100) is not judged against the thresholds at all: it
says the query is wrong, so it reads "implausible" and counts as a warning,
never as fine (an inverted ratio must not pass as "0.0%" or as "CRIT").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.adapters.prometheus import DEFAULT_QUERIES
from bot.config import Settings, Threshold
from bot.messages import Status

__all__ = [
    "IMPLAUSIBLE",
    "METRIC_KEYS",
    "Metric",
    "baseline_metrics",
    "classify",
    "format_value",
    "plausible",
]

# What an impossible value reads as: the fix is the query, not the system.
IMPLAUSIBLE = "implausible (check `SMS_PROMQL`)"

# key: (label, unit, runbook baseline, measured per request)
_TABLE: dict[str, tuple[str, str, float, bool]] = {
    "p95_ms": ("Response time p95", "ms", 350.0, True),
    "p99_ms": ("Response time p99", "ms", 2000.0, True),
    "throughput_rps": ("Throughput", "req/s", 30.22, False),
    "error_rate_pct": ("Error rate", "%", 1.33, True),
    "cpu_pct": ("CPU usage", "%", 15.0, False),
    "memory_pct": ("Memory usage", "%", 15.3, False),
    "disk_pct": ("Disk usage", "%", 2.95, False),
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
    # Latency and error rate exist only while requests arrive: with none
    # there is nothing to measure, and throughput is the metric that judges.
    per_request: bool = False


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
            per_request=per_request,
        )
        for key, (label, unit, baseline, per_request) in _TABLE.items()
    )


def plausible(value: float, unit: str = "") -> bool:
    """Whether ``value`` could be a true reading: finite, not negative, a percentage 0-100.

    Every baseline metric (latency, rate, share) is a non-negative quantity.
    """
    if not math.isfinite(value) or value < 0:
        return False
    return unit != "%" or value <= 100


def classify(value: float | None, threshold: Threshold, *, unit: str = "") -> Status:
    """OK, WARN past the alert threshold, CRIT past the critical one.

    No value (no data) is a WARN: the check could not confirm health, but
    nothing says the system is failing either. An implausible value (see
    ``plausible``; ``unit`` "%" adds the 0-100 bound) is a WARN too: it
    measures the query, not the system.
    """
    if value is None or not plausible(value, unit):
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


def _raw(value: float, unit: str) -> str:
    """An implausible value as it came, so the reader sees what the query said."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return f"{'+' if value > 0 else '-'}Inf {unit}".rstrip()
    return f"{value:g}{unit}" if unit == "%" else f"{value:g} {unit}"


def format_value(value: float | None, unit: str) -> str:
    """``None`` reads "no data"; an implausible value says so, with what the query returned."""
    if value is None:
        return "no data"
    if not plausible(value, unit):
        return f"{_raw(value, unit)}: {IMPLAUSIBLE}"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:.2f} {unit}"
