"""The bot's own Prometheus metrics, served at ``GET /metrics``.

One registry per application (not the library's global one), so tests and
several apps in one process do not collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["BotMetrics"]


def _registry() -> CollectorRegistry:
    return CollectorRegistry()


@dataclass
class BotMetrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        self.commands = Counter(
            "smsbot_commands_total",
            "Commands received, by command name and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.runs = Counter(
            "smsbot_runs_total",
            "Procedure runs finished, by procedure and final status.",
            ["procedure", "status"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "smsbot_step_duration_seconds",
            "Duration of procedure steps.",
            ["procedure", "status"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
