"""The runbook's routine as scheduled jobs: names, schedules, and what each one does.

Report jobs run a procedure and post it to ``SLACK_ALERT_CHANNEL``. The
backup check posts nothing while backups are fresh; when they are not it
raises a ``BackupStale`` alert of its own, which opens an incident thread
like any alert (routed to ``backup_freshness``, with the manual-backup
proposal), and resolves it once a fresh backup is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.alerts import Alert, AlertBatch
from bot.chat.base import ChatSurface
from bot.config import Settings
from bot.cron import cron_trigger, next_fire
from bot.deps import Deps
from bot.engine import Engine, Procedure
from bot.events import Command
from bot.messages import Conversation, Status
from bot.scheduler import JobAction, JobSpec
from handlers.alerts import AlertProcessor
from procedures.checks import judge_backups

__all__ = [
    "BACKUP_STALE_FINGERPRINT",
    "JOBS",
    "JobDef",
    "build_jobs",
    "job_procedure",
    "schedule_rows",
]

BACKUP_STALE_FINGERPRINT = "sms-bot/backup-stale"


@dataclass(frozen=True)
class JobDef:
    name: str
    title: str
    cron: Callable[[Settings], str]
    timezone: Callable[[Settings], str]
    procedure: str  # module:function of the report, "" for the backup check


JOBS: tuple[JobDef, ...] = (
    JobDef(
        "morning-summary",
        "Morning summary",
        lambda s: s.sms_morning_summary_cron,
        lambda s: s.sms_timezone,
        "procedures.morning_summary:morning_summary",
    ),
    JobDef(
        "backup-freshness",
        "Backup freshness",
        lambda s: s.sms_backup_check_cron,
        lambda s: "UTC",
        "procedures.backup_freshness:backup_freshness",
    ),
    JobDef(
        "weekly-checklist",
        "Monday checklist",
        lambda s: s.sms_weekly_checklist_cron,
        lambda s: s.sms_timezone,
        "procedures.weekly:weekly_checklist",
    ),
    JobDef(
        "weekly-report",
        "Friday performance report",
        lambda s: s.sms_weekly_report_cron,
        lambda s: s.sms_timezone,
        "procedures.weekly:weekly_report",
    ),
    JobDef(
        "monthly-maintenance",
        "Monthly maintenance",
        lambda s: s.sms_monthly_maintenance_cron,
        lambda s: s.sms_timezone,
        "procedures.monthly:monthly_maintenance",
    ),
)


def job_procedure(name: str) -> tuple[JobDef, Procedure]:
    """The job's definition and its report procedure (imported when first used)."""
    import importlib

    job = next(j for j in JOBS if j.name == name)
    module, _, function = job.procedure.partition(":")
    procedure: Procedure = getattr(importlib.import_module(module), function)
    return job, procedure


def schedule_rows(settings: Settings, now: datetime) -> list[tuple[str, str, str, str]]:
    """For ``/sms schedule``: job, schedule, time zone and next run."""
    rows = []
    for job in JOBS:
        tz = job.timezone(settings)
        when = next_fire(cron_trigger(job.cron(settings), tz), now)
        shown = when.strftime("%a %Y-%m-%d %H:%M %Z") if when else "never"
        rows.append((job.name, job.cron(settings), tz, shown))
    return rows


def build_jobs(
    *,
    deps: Deps,
    engine: Engine,
    surface: ChatSurface,
    channel: str,
    alerts: AlertProcessor,
) -> list[JobSpec]:
    settings = deps.settings

    def report(name: str) -> JobAction:
        async def action() -> Status:
            job, procedure = job_procedure(name)
            command = Command(
                text=f"scheduled {name}",
                user="sms-bot",
                source="scheduler",
                conversation=Conversation(surface.name, channel),
            )
            run = await engine.execute(
                procedure, name=name, title=job.title, command=command, surface=surface
            )
            return run.status

        return action

    async def backup_check() -> Status:
        outcome = judge_backups(await deps.backups.newest(5), deps)
        open_incident = await deps.store.incident_open_for(BACKUP_STALE_FINGERPRINT)
        if outcome.status is Status.OK:
            if open_incident is not None:
                await alerts.receive(_backup_alert("resolved", outcome.summary))
            return Status.OK
        if open_incident is None:
            await alerts.receive(_backup_alert("firing", outcome.summary))
        return outcome.status

    specs = []
    for job in JOBS:
        action = backup_check if job.name == "backup-freshness" else report(job.name)
        specs.append(
            JobSpec(job.name, job.title, job.cron(settings), job.timezone(settings), action)
        )
    return specs


def _backup_alert(status: str, summary: str) -> AlertBatch:
    alert = Alert(
        fingerprint=BACKUP_STALE_FINGERPRINT,
        status=status,
        labels={"alertname": "BackupStale", "severity": "critical", "source": "sms-bot"},
        annotations={
            "summary": f"Backup check: {summary}",
            "description": "The runbook expects a backup younger than 24 hours.",
        },
    )
    return AlertBatch(receiver="sms-bot", status=status, group_key="sms-bot", alerts=(alert,))
