"""Alert routing: alertname and severity to a procedure and a priority.

The defaults are the alerts the catalogue's procedures declare (passed in:
the core names no procedure); ``SMS_ALERT_ROUTES`` (JSON, a list of rules) is
tried before them. Anything unmatched still gets a thread, with a priority
from its ``priority`` or ``severity`` label.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only named in annotations: the settings read this module, and ``bot.alerts``
    # builds the webhook's pydantic models, which ``check-config`` does not need.
    from bot.alerts import Alert

__all__ = [
    "PRIORITIES",
    "Route",
    "RouteRule",
    "check_rules",
    "route_alert",
]

PRIORITIES = ("P0", "P1", "P2", "P3")


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


_SEVERITY_PRIORITY = {"critical": "P1", "page": "P1", "error": "P2", "warning": "P2"}


def route_alert(
    alert: Alert, rules: Sequence[RouteRule] = (), defaults: Sequence[RouteRule] = ()
) -> Route:
    """The configured rules first, then the runbook's defaults, then a generic thread."""
    for rule in (*rules, *defaults):
        if rule.matches(alert):
            return Route(rule.procedure, rule.priority, f"{rule.alertname}/{rule.severity or '*'}")
    label = alert.labels.get("priority", "").upper()
    priority = label if label in PRIORITIES else _SEVERITY_PRIORITY.get(alert.severity, "P3")
    return Route("", priority, "generic")


def check_rules(rules: Sequence[RouteRule], procedures: Collection[str]) -> None:
    """Refuse configured rules naming a procedure that answers no alert ("" is generic)."""
    for i, rule in enumerate(rules):
        if rule.procedure and rule.procedure not in procedures:
            known = ", ".join(procedures)
            raise ValueError(f"rule {i + 1}: unknown procedure {rule.procedure!r} (known: {known})")
