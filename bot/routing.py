"""Alert routing: alertname and severity to a procedure and a priority.

Defaults come from the runbook's three incident classes; ``SMS_ALERT_ROUTES``
(JSON, a list of rules) is tried before them. Anything unmatched still gets
a thread, with a priority from its ``priority`` or ``severity`` label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.alerts import Alert

__all__ = [
    "DEFAULT_ROUTES",
    "PRIORITIES",
    "PROCEDURES",
    "Route",
    "RouteRule",
    "route_alert",
]

PRIORITIES = ("P0", "P1", "P2", "P3")
# The procedures alerts may be routed to ("" is the generic thread).
PROCEDURES = ("backend_down", "slow_responses", "high_error_rate", "backup_freshness", "")


@dataclass(frozen=True)
class RouteRule:
    alertname: str  # exact name, or "*" for any
    procedure: str
    priority: str
    severity: str = ""  # "" matches any severity

    def matches(self, alert: Alert) -> bool:
        if self.alertname not in ("*", alert.name):
            return False
        return not self.severity or self.severity == alert.severity


@dataclass(frozen=True)
class Route:
    procedure: str  # "" for a generic thread
    priority: str
    rule: str  # which rule matched, for the thread and the logs


DEFAULT_ROUTES: tuple[RouteRule, ...] = (
    RouteRule("BackendDown", "backend_down", "P0"),
    RouteRule("BackendHTTP500", "backend_down", "P0"),
    RouteRule("SlowResponses", "slow_responses", "P1"),
    RouteRule("HighLatency", "slow_responses", "P1"),
    RouteRule("HighErrorRate", "high_error_rate", "P2"),
    RouteRule("BackupStale", "backup_freshness", "P1"),
)

_SEVERITY_PRIORITY = {"critical": "P1", "page": "P1", "error": "P2", "warning": "P2"}


def route_alert(alert: Alert, rules: Sequence[RouteRule] = ()) -> Route:
    """The configured rules first, then the runbook's defaults, then a generic thread."""
    for rule in (*rules, *DEFAULT_ROUTES):
        if rule.matches(alert):
            return Route(rule.procedure, rule.priority, f"{rule.alertname}/{rule.severity or '*'}")
    label = alert.labels.get("priority", "").upper()
    priority = label if label in PRIORITIES else _SEVERITY_PRIORITY.get(alert.severity, "P3")
    return Route("", priority, "generic")
