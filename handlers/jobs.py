"""The runbook's routine as scheduled jobs, read from the catalogue's schedules.

A job posts its procedure's run to ``SLACK_ALERT_CHANNEL`` once it has
finished (nobody watches a scheduled report run; the notification should
show its verdict), unless the schedule asks for ``live`` progress or its
schedule declares a ``check`` of its own (the backup check raises a
``BackupStale`` alert instead, which opens an incident thread like any
alert). ``sms-bot run JOB`` runs the job's procedure on the terminal.
"""

from __future__ import annotations

from datetime import datetime

from bot.catalogue import Catalogue, JobContext, Schedule
from bot.chat.base import ChatSurface
from bot.config import Settings
from bot.deps import Deps
from bot.engine import Engine, Procedure
from bot.events import Command
from bot.messages import Conversation, Status
from bot.scheduler import JobAction, JobSpec
from handlers.alerts import AlertProcessor
from procedures import schedule
from procedures.catalogue import CATALOGUE

__all__ = ["JOB_NAMES", "build_jobs", "job_procedure", "schedule_rows"]

JOB_NAMES = frozenset(job.job for job in CATALOGUE.schedules())


def job_procedure(name: str, catalogue: Catalogue = CATALOGUE) -> tuple[Schedule, Procedure]:
    """The job's schedule and the procedure ``sms-bot run JOB`` runs."""
    job = catalogue.schedule(name)
    if job is None:
        raise KeyError(name)
    return job, job.procedure


def schedule_rows(
    settings: Settings, now: datetime, catalogue: Catalogue = CATALOGUE
) -> list[tuple[str, str, str, str]]:
    """For ``/sms schedule``: job, schedule, time zone and next run."""
    return schedule.schedule_rows(catalogue, settings, now)


def build_jobs(
    *,
    deps: Deps,
    engine: Engine,
    surface: ChatSurface,
    channel: str,
    alerts: AlertProcessor,
    catalogue: Catalogue = CATALOGUE,
) -> list[JobSpec]:
    settings = deps.settings
    context = JobContext(deps=deps, receive_alerts=alerts.receive)

    def report(job: Schedule) -> JobAction:
        async def action() -> Status:
            command = Command(
                text=f"scheduled {job.job}",
                user="sms-bot",
                source="scheduler",
                conversation=Conversation(surface.name, channel),
            )
            run = await engine.execute(
                job.procedure,
                name=job.job,
                title=job.title,
                command=command,
                surface=surface,
                deferred=not job.live,
            )
            return run.status

        return action

    def check(job: Schedule) -> JobAction:
        assert job.check is not None
        job_check = job.check

        async def action() -> Status:
            return await job_check(context)

        return action

    return [
        JobSpec(
            job.job,
            job.title,
            job.cron(settings),
            job.timezone(settings),
            check(job) if job.check is not None else report(job),
        )
        for job in catalogue.schedules()
    ]
