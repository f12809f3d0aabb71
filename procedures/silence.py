"""``silence ALERTNAME DURATION``: a real silence in Alertmanager, its id in the thread."""

from __future__ import annotations

from datetime import timedelta

from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Field, Link, Status

__all__ = ["silence"]


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
