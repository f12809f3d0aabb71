"""The chat commands of this version: parse the words, bind them to a procedure.

Every command here is read-only. A wrong word, an unknown service or a bad
number raises ``UsageError`` with the command's usage, never a stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.errors import UsageError
from bot.events import Command
from bot.messages import Message, Status, Table
from handlers.registry import REGISTRY, Invocation, Role, command
from procedures.backups import backups
from procedures.db import db_check, db_slow
from procedures.health import health
from procedures.logs import logs
from procedures.metrics import metrics
from procedures.restart import restart_proposal
from procedures.runbook import runbook_message
from procedures.silence import silence
from procedures.status import status

__all__ = ["DEFAULT_LOG_LINES", "help_message", "parse_duration"]

DEFAULT_LOG_LINES = 100


def _no_more(args: list[str], usage: str) -> None:
    if args:
        raise UsageError(f"Unexpected argument {' '.join(args)!r}.", usage=f"/sms {usage}")


def _service(args: list[str], deps: Deps, usage: str) -> str:
    known = sorted(deps.settings.sms_services)
    if not args:
        raise UsageError(
            f"Which service? Known services: {', '.join(known)}.", usage=f"/sms {usage}"
        )
    name = args[0].lower()
    if name not in deps.settings.sms_services:
        raise UsageError(
            f"Unknown service {args[0]!r}. Known services: {', '.join(known)}.",
            usage=f"/sms {usage}",
        )
    return name


def _count(raw: str, usage: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{raw!r} is not a number of lines.", usage=f"/sms {usage}") from None
    if value < 1:
        raise UsageError("The number of lines must be at least 1.", usage=f"/sms {usage}")
    return value


@command("help", usage="help", summary="Every command with one line each")
def _help(args: list[str], deps: Deps) -> Invocation:
    return Invocation(name="help", message=help_message(deps))


@command("health", usage="health", summary="The five morning checks, against the baseline")
def _health(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "health")
    return Invocation(name="health", title="Health check", procedure=health)


@command("status", usage="status", summary="Containers: state, health and uptime")
def _status(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "status")
    return Invocation(name="status", title="Container status", procedure=status)


@command(
    "logs",
    usage="logs SERVICE [N]",
    summary=f"Last N lines of a service's log (default {DEFAULT_LOG_LINES}), secrets masked",
)
def _logs(args: list[str], deps: Deps) -> Invocation:
    usage = "logs SERVICE [N]"
    service = _service(args, deps, usage)
    lines = _count(args[1], usage) if len(args) > 1 else DEFAULT_LOG_LINES
    _no_more(args[2:], usage)
    cap = deps.settings.sms_logs_max_lines
    title = f"Logs of {service}"
    if lines > cap:
        title += f" (capped at {cap} lines)"
        lines = cap
    return Invocation(
        name="logs", title=title, procedure=partial(logs, service=service, lines=lines)
    )


@command("db check", usage="db check", summary="Database connectivity and server status")
def _db_check(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "db check")
    return Invocation(name="db check", title="Database check", procedure=db_check)


@command("db slow", usage="db slow", summary="Active queries running longer than 5 s")
def _db_slow(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "db slow")
    return Invocation(name="db slow", title="Slow queries", procedure=db_slow)


@command("metrics", usage="metrics", summary="The baseline table with current values")
def _metrics(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "metrics")
    return Invocation(name="metrics", title="Performance metrics", procedure=metrics)


@command("backups", usage="backups", summary="The five newest backups with age and size")
def _backups(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "backups")
    return Invocation(name="backups", title="Backups", procedure=backups)


@command(
    "restart",
    usage="restart SERVICE",
    summary="Check a service, then offer to restart its container (an approver clicks)",
    role=Role.OPERATOR,
    changes=True,
)
def _restart(args: list[str], deps: Deps) -> Invocation:
    usage = "restart SERVICE"
    service = _service(args, deps, usage)
    _no_more(args[1:], usage)
    return Invocation(
        name="restart",
        title=f"Restart {service}?",
        procedure=partial(restart_proposal, service=service),
    )


@command(
    "incident",
    usage="incident TITLE",
    summary="Open an incident thread by hand (acknowledge, resolve, record)",
    role=Role.OPERATOR,
)
def _incident(args: list[str], deps: Deps) -> Invocation:
    title = " ".join(args).strip()
    if not title:
        raise UsageError("What is the incident? Give it a title.", usage="/sms incident TITLE")
    if len(title) > 200:
        raise UsageError("The title is longer than 200 characters.", usage="/sms incident TITLE")
    return Invocation(name="incident", direct=partial(_open_incident, title=title))


async def _open_incident(
    dispatcher: Any, cmd: Command, surface: ChatSurface, *, title: str
) -> None:
    alerts = dispatcher.alerts
    if alerts is None:
        raise UsageError("Incidents are not handled by this bot process.")
    await alerts.open_manual(title=title, by=cmd.user, where=cmd.conversation, surface=surface)


_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 24 * 60}
MAX_SILENCE = timedelta(days=7)


def parse_duration(raw: str, usage: str) -> timedelta:
    found = _DURATION.match(raw.strip().lower())
    if not found:
        raise UsageError(f"{raw!r} is not a duration like 30m, 4h or 1d.", usage=f"/sms {usage}")
    value = timedelta(minutes=int(found.group(1)) * _UNIT_MINUTES[found.group(2)])
    if value <= timedelta(0) or value > MAX_SILENCE:
        raise UsageError("A silence lasts from 1 minute to 7 days.", usage=f"/sms {usage}")
    return value


@command(
    "silence",
    usage="silence ALERTNAME DURATION",
    summary="Silence an alert in Alertmanager, e.g. silence HighCPU 4h",
    role=Role.OPERATOR,
    changes=True,
)
def _silence(args: list[str], deps: Deps) -> Invocation:
    usage = "silence ALERTNAME DURATION"
    if len(args) != 2:
        raise UsageError("Give the alert's name and a duration.", usage=f"/sms {usage}")
    name = args[0]
    if not re.match(r"^[A-Za-z_:][A-Za-z0-9_:]*$", name):
        raise UsageError(f"{name!r} is not an alert name.", usage=f"/sms {usage}")
    duration = parse_duration(args[1], usage)
    return Invocation(
        name="silence",
        title=f"Silence {name}",
        procedure=partial(silence, alertname=name, duration=duration),
    )


@command(
    "backup",
    usage="backup",
    summary="Offer to run the runbook's manual backup now (an approver clicks)",
    role=Role.OPERATOR,
    changes=True,
)
def _backup(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "backup")
    from procedures.backup_freshness import propose_manual_backup

    return Invocation(
        name="backup",
        title="Manual backup?",
        procedure=_discard(partial(propose_manual_backup, reason="requested with /sms backup")),
    )


@command(
    "vacuum",
    usage="vacuum",
    summary="Offer to run VACUUM ANALYZE on the SMS database (an approver clicks)",
    role=Role.OPERATOR,
    changes=True,
)
def _vacuum(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "vacuum")
    from procedures.vacuum import propose_vacuum

    return Invocation(name="vacuum", title="VACUUM ANALYZE?", procedure=_discard(propose_vacuum))


def _discard(propose: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[None]]:
    async def procedure(run: Any) -> None:
        await propose(run)

    return procedure


@command("schedule", usage="schedule", summary="The scheduled jobs and their next run")
def _schedule(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "schedule")
    from handlers.jobs import schedule_rows

    table = Table(
        title="Scheduled jobs (they run in sms-bot serve)",
        columns=("job", "cron", "time zone", "next run"),
        rows=tuple(schedule_rows(deps.settings, deps.clock())),
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


@command("runbook", usage="runbook", summary="The runbook's procedures and what triggers them")
def _runbook(args: list[str], deps: Deps) -> Invocation:
    _no_more(args, "runbook")
    return Invocation(name="runbook", message=runbook_message())


def help_message(deps: Deps) -> Message:
    table = Table(
        title="Commands (type them after /sms in chat, or as they are in the shell)",
        columns=("command", "what it does"),
        rows=tuple((spec.usage, spec.summary) for spec in REGISTRY.all()),
    )
    services = ", ".join(
        f"{name} ({container})" for name, container in sorted(deps.settings.sms_services.items())
    )
    return Message(
        title="sms-bot commands",
        status=Status.OK,
        text=f"Services: {services}.",
        details=(table,),
    )
