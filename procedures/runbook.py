"""``runbook``: the runbook's procedures, what triggers them and how to run them here."""

from __future__ import annotations

from dataclasses import dataclass

from bot.messages import Message, Status, Table

__all__ = ["RUNBOOK", "RunbookEntry", "runbook_message"]


@dataclass(frozen=True)
class RunbookEntry:
    procedure: str
    trigger: str
    command: str  # how to run it from chat, or "" when not automated yet
    steps: str


RUNBOOK: tuple[RunbookEntry, ...] = (
    RunbookEntry(
        "Daily health check (Morning Checklist)",
        "every morning; on demand",
        "/sms health",
        "containers, /health endpoint, performance vs baseline, database, backups",
    ),
    RunbookEntry(
        "Container overview",
        "on demand",
        "/sms status",
        "every container with state, health and uptime",
    ),
    RunbookEntry(
        "Logs of a service",
        "any failed check; incidents",
        "/sms logs SERVICE [N]",
        "last N lines, secrets masked",
    ),
    RunbookEntry(
        "Database connectivity",
        "failed database check",
        "/sms db check",
        "SELECT COUNT(*) FROM users, server status, connections",
    ),
    RunbookEntry(
        "Slow database queries",
        "p95 > 1000 ms; database CPU high",
        "/sms db slow",
        "active queries older than 5 s from pg_stat_activity",
    ),
    RunbookEntry(
        "Performance baselines",
        "p95 > 500 ms; throughput < 20 req/s",
        "/sms metrics",
        "baseline table with current values from Prometheus",
    ),
    RunbookEntry(
        "Backup verification",
        "daily after the 02:00 UTC backup",
        "/sms backups",
        "five newest backups, newest must be < 24 h old",
    ),
    RunbookEntry(
        "P0 Backend down (HTTP 500s)",
        "alert BackendDown; respond in 0-5 min",
        "",
        "container status, backend logs, database, restart, verify /health, incident record",
    ),
    RunbookEntry(
        "P1 Slow responses (p95 > 1000 ms)",
        "alert; respond in 5-15 min",
        "",
        "p95 per endpoint, active and long-running queries, terminate long queries",
    ),
    RunbookEntry(
        "P2 High error rate (> 5%)",
        "alert; respond in 15-30 min",
        "",
        "ERROR lines by pattern, errors by status code, Loki logs",
    ),
    RunbookEntry(
        "Weekly and monthly maintenance",
        "Mondays, Fridays, first Monday of the month",
        "",
        "dashboards, disk, alert history, backup integrity, VACUUM ANALYZE",
    ),
    RunbookEntry(
        "Restore from backup",
        "data loss; failed deployment",
        "",
        "stop backend, restore database, start backend, verify",
    ),
)


def runbook_message() -> Message:
    table = Table(
        title="Runbook procedures",
        columns=("procedure", "trigger", "run it with", "what it does"),
        rows=tuple(
            (e.procedure, e.trigger, e.command or "not automated yet: see runbook.md", e.steps)
            for e in RUNBOOK
        ),
    )
    return Message(
        title="SMS operations runbook",
        status=Status.OK,
        text="The runbook's procedures and how to run them from chat.",
        details=(table,),
    )
