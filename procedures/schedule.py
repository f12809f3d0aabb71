"""``schedule``: the catalogue's scheduled jobs, their cron, time zone and next run."""

from __future__ import annotations

from datetime import datetime

from bot.catalogue import Catalogue, CommandContext, CommandSpec, Invocation, ProcedureSpec, no_more
from bot.config import Settings
from bot.cron import cron_trigger, next_fire
from bot.messages import Message, Status, Table

__all__ = ["SPEC", "schedule_rows"]


def schedule_rows(
    catalogue: Catalogue, settings: Settings, now: datetime
) -> list[tuple[str, str, str, str]]:
    """Job, schedule, time zone and next run, for every scheduled job."""
    rows = []
    for job in catalogue.schedules():
        tz = job.timezone(settings)
        when = next_fire(cron_trigger(job.cron(settings), tz), now)
        shown = when.strftime("%a %Y-%m-%d %H:%M %Z") if when else "never"
        rows.append((job.job, job.cron(settings), tz, shown))
    return rows


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    no_more(args, "schedule")
    deps = ctx.deps
    table = Table(
        title="Scheduled jobs (they run in sms-bot serve)",
        columns=("job", "cron", "time zone", "next run"),
        rows=tuple(schedule_rows(ctx.catalogue, deps.settings, deps.clock())),
    )
    return Invocation(
        name="schedule",
        message=Message(
            title="Schedule",
            status=Status.OK,
            text="Run one now with `sms-bot run JOB` (add --post to post it to the channel).",
            details=(table,),
        ),
    )


SPEC = ProcedureSpec(
    name="schedule",
    summary="The scheduled jobs and their next run",
    commands=(
        CommandSpec(
            "schedule",
            usage="schedule",
            summary="The scheduled jobs and their next run",
            parse=_parse,
        ),
    ),
)
