"""The runbook's retention applied to what the bot keeps, pruned daily.

Audit events are kept a year (runbook: "Audit Logs: 1 year"), runs, the
outbox and the alert inbox 30 days; each is a setting. The prune job posts
nothing: it logs what it deleted. Nothing pending is ever pruned (a run
still running or waiting for an approval, an undelivered message, an
unprocessed alert), whatever its age; the store's ``prune`` holds that rule.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from bot.catalogue import JobContext, ProcedureSpec, Schedule
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status
from bot.store.base import PruneCutoffs

__all__ = ["SPEC", "cutoffs", "prune", "prune_check"]

log = structlog.get_logger(__name__)


def cutoffs(deps: Deps) -> PruneCutoffs:
    settings = deps.settings
    now = deps.clock()
    return PruneCutoffs(
        audit=now - timedelta(days=settings.sms_retention_audit_days),
        runs=now - timedelta(days=settings.sms_retention_runs_days),
        outbox=now - timedelta(days=settings.sms_retention_outbox_days),
        alerts=now - timedelta(days=settings.sms_retention_alerts_days),
    )


async def _prune(deps: Deps) -> Outcome:
    counts = await deps.store.prune(cutoffs(deps))
    log.info("retention.pruned", **counts)
    parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return Outcome(Status.OK, f"deleted {parts} (nothing pending)")


async def prune(run: Run) -> None:
    """``sms-bot run prune``: the same, shown as a step."""
    done = await run.step("Prune the bot's own data past its retention", _prune(run.deps))
    run.text = done.summary if done else "Could not prune: see the step."


async def prune_check(context: JobContext) -> Status:
    """The scheduled job: prune, post nothing."""
    done = await _prune(context.deps)
    return done.status


SPEC = ProcedureSpec(
    name="retention",
    summary="Prunes the bot's own audit, runs, outbox and alert inbox past their retention",
    schedules=(
        Schedule(
            job="prune",
            title="Prune the bot's own data",
            cron_setting="sms_prune_cron",
            procedure=prune,
            check=prune_check,
            local_time=False,
        ),
    ),
)
