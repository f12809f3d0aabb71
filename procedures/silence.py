"""``silence ALERTNAME DURATION``: a real silence in Alertmanager, its id in the thread."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import partial

from bot.catalogue import CommandContext, CommandSpec, Invocation, ProcedureSpec, Role
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UsageError
from bot.messages import Field, Link, Status

__all__ = [
    "MAX_SILENCE",
    "SPEC",
    "parse_duration",
    "silence",
]


async def _create(deps: Deps, alertname: str, duration: timedelta, user: str) -> Outcome:
    now = deps.clock()
    ends = now + duration
    silence_id = await deps.alertmanager.create_silence(
        matchers={"alertname": alertname},
        starts_at=now,
        ends_at=ends,
        created_by=f"sms-bot for {user}",
        comment=f"Silenced from sms-bot by {user}",
    )
    return Outcome(
        Status.OK,
        f"silence {silence_id} for {alertname} until {ends:%Y-%m-%d %H:%M} UTC",
        fields=(
            Field("Silence", silence_id),
            Field("Link", Link("Alertmanager", deps.alertmanager.silence_url(silence_id))),
        ),
    )


async def silence(run: Run, *, alertname: str, duration: timedelta) -> None:
    await run.step(
        "Create the silence in Alertmanager",
        _create(run.deps, alertname, duration, run.command.user),
    )
    await run.deps.audit.record(
        at=run.deps.clock(),
        actor=run.command.user,
        source=run.command.source,
        action="silence",
        target=alertname,
        outcome=run.steps[-1].status.value,
        conversation=run.command.conversation.channel,
        detail={"minutes": duration.total_seconds() / 60, "run_id": run.id},
    )


_USAGE = "silence ALERTNAME DURATION"
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


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    if len(args) != 2:
        raise UsageError("Give the alert's name and a duration.", usage=f"/sms {_USAGE}")
    name = args[0]
    if not re.match(r"^[A-Za-z_:][A-Za-z0-9_:]*$", name):
        raise UsageError(f"{name!r} is not an alert name.", usage=f"/sms {_USAGE}")
    duration = parse_duration(args[1], _USAGE)
    return Invocation(
        name="silence",
        title=f"Silence {name}",
        procedure=partial(silence, alertname=name, duration=duration),
    )


SPEC = ProcedureSpec(
    name="silence",
    summary="A silence in Alertmanager, its id in the thread",
    commands=(
        CommandSpec(
            "silence",
            usage=_USAGE,
            summary="Silence an alert in Alertmanager, e.g. silence HighCPU 4h",
            parse=_parse,
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
)
