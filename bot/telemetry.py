"""The bot's own Prometheus metrics, served at ``GET /metrics``.

One registry per application (not the library's global one), so tests and
several apps in one process do not collide.

What an operator alerts on (``deploy/prometheus/sms-bot.rules.yml``) is read
from the store at scrape time (``refresh``), not kept in one replica's
memory: every replica then reports the same backlog and the same last run of
each job, whichever one Prometheus scrapes, and a replica that just started
knows them too. The read is bounded by a timeout; when the store does not
answer in time, ``smsbot_store_scrape_success`` is 0 and the gauges keep
their previous values.

Counted only where they are served: a terminal command (``run``, ``shell``,
``replay``) exposes no ``/metrics``, so it is handed ``UNCOUNTED``, which
records nothing and does not load ``prometheus_client`` (a fiftieth of
``sms-bot run health``'s start-up). ``Metrics`` is what the engine, the
dispatcher, the scheduler and the outbox record through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bot.store import Store

__all__ = ["PLATFORMS", "TOKEN_REFUSED_REASONS", "UNCOUNTED", "BotMetrics", "Metrics"]

log = structlog.get_logger(__name__)

PLATFORMS = ("slack", "teams")
# Delivery failure reasons that mean the platform refused the bot's credentials: Slack's
# error codes, and Teams' 401 after a renewed token or a token endpoint refusing the app.
TOKEN_REFUSED_REASONS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "unauthorized",
        "token_refused",
    }
)


class Metrics(Protocol):
    """What the bot counts while it works: ``BotMetrics`` served, ``UNCOUNTED`` not."""

    def command_done(self, command: str, outcome: str) -> None: ...

    def run_finished(self, procedure: str, status: str) -> None: ...

    def step_finished(self, procedure: str, status: str, seconds: float) -> None: ...

    def job_lost(self, job: str) -> None: ...

    def delivery_failed(self, platform: str, reason: str) -> None: ...


class _Uncounted:
    """``Metrics`` for a process that serves none: each count is dropped."""

    def command_done(self, command: str, outcome: str) -> None:
        pass

    def run_finished(self, procedure: str, status: str) -> None:
        pass

    def step_finished(self, procedure: str, status: str, seconds: float) -> None:
        pass

    def job_lost(self, job: str) -> None:
        pass

    def delivery_failed(self, platform: str, reason: str) -> None:
        pass


UNCOUNTED: Metrics = _Uncounted()


def _registry() -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


@dataclass
class BotMetrics:
    """The served metrics, in a registry of their own (``prometheus_client`` loads here)."""

    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

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
        self.delivery_failures = Counter(
            "smsbot_delivery_failures_total",
            "Chat deliveries that failed, by platform and reason (Slack's error code, HTTP...).",
            ["platform", "reason"],
            registry=self.registry,
        )
        self.token_refused = Counter(
            "smsbot_token_refused_total",
            "Deliveries refused because the platform did not accept the bot's token.",
            ["platform"],
            registry=self.registry,
        )
        for platform in PLATFORMS:
            # Present from the start at 0, so the first refusal is an increase.
            self.token_refused.labels(platform)
        self.jobs_lost = Counter(
            "smsbot_scheduled_jobs_lost_total",
            "Scheduled slots found running past their lease (their replica stopped).",
            ["job_name"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "smsbot_outbox_backlog",
            "Chat operations waiting for delivery (read from the store at scrape time).",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "smsbot_outbox_oldest_pending_age_seconds",
            "Age of the oldest chat operation waiting for delivery; 0 when none waits.",
            registry=self.registry,
        )
        self.alert_inbox_backlog = Gauge(
            "smsbot_alert_inbox_backlog",
            "Alerts received and not yet processed (read from the store at scrape time).",
            registry=self.registry,
        )
        self.job_last_success = Gauge(
            "smsbot_scheduled_job_last_success_timestamp_seconds",
            "When a run of the job last finished (ok, warn or crit), as a Unix time.",
            ["job_name"],
            registry=self.registry,
        )
        self.job_last_success_slot = Gauge(
            "smsbot_scheduled_job_last_success_slot_timestamp_seconds",
            "The newest scheduled slot of the job that finished, as a Unix time.",
            ["job_name"],
            registry=self.registry,
        )
        self.job_last_due_slot = Gauge(
            "smsbot_scheduled_job_last_due_slot_timestamp_seconds",
            "The job's latest scheduled slot up to now (from its cron), as a Unix time.",
            ["job_name"],
            registry=self.registry,
        )
        self.store_scrape_success = Gauge(
            "smsbot_store_scrape_success",
            "1 when the store answered the scrape's reads in time, else 0.",
            registry=self.registry,
        )

    def command_done(self, command: str, outcome: str) -> None:
        self.commands.labels(command, outcome).inc()

    def run_finished(self, procedure: str, status: str) -> None:
        self.runs.labels(procedure, status).inc()

    def step_finished(self, procedure: str, status: str, seconds: float) -> None:
        self.step_seconds.labels(procedure, status).observe(seconds)

    def job_lost(self, job: str) -> None:
        self.jobs_lost.labels(job).inc()

    def delivery_failed(self, platform: str, reason: str) -> None:
        """Count one failed delivery; a refused token is counted on its own as well."""
        self.delivery_failures.labels(platform, reason).inc()
        if reason in TOKEN_REFUSED_REASONS:
            self.token_refused.labels(platform).inc()

    async def refresh(
        self,
        store: Store,
        *,
        now: datetime,
        due: Mapping[str, datetime | None],
        timeout_s: float = 2.0,
    ) -> None:
        """Read the backlogs and the jobs' last runs from the store, within ``timeout_s``.

        ``due`` is each scheduled job's latest slot up to ``now`` (None when it
        has none yet).
        """
        try:
            async with asyncio.timeout(timeout_s):
                pending, oldest = await store.outbox_backlog()
                inbox = await store.alert_events_pending()
                last = await store.job_last_success()
        except Exception as exc:  # a scrape must answer: the gauges stay, this says why
            self.store_scrape_success.set(0)
            log.warning("metrics.store_read_failed", error=repr(exc))
            return
        self.store_scrape_success.set(1)
        self.outbox_backlog.set(pending)
        self.outbox_oldest_age.set(
            0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        )
        self.alert_inbox_backlog.set(inbox)
        for job, slot in due.items():
            if slot is not None:
                self.job_last_due_slot.labels(job).set(slot.timestamp())
        for job, (slot, at) in last.items():
            self.job_last_success_slot.labels(job).set(slot.timestamp())
            self.job_last_success.labels(job).set(at.timestamp())
