"""Daily Health Checks: the runbook's five-step Morning Checklist, run concurrently.

A slow or dead dependency holds only its own step: each has a timeout, so
the whole check takes about as long as its slowest step.
"""

from __future__ import annotations

import asyncio

from bot.catalogue import (
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    RunbookEntry,
    no_more,
)
from bot.engine import Run
from bot.messages import Status
from procedures.checks import (
    ACTIONS_IF_FAILED,
    check_backups,
    check_containers,
    check_database,
    check_health_endpoint,
    check_performance,
)

__all__ = ["CHECKS", "SPEC", "health"]

# (key, step name as the user reads it); the order of the runbook's checklist.
CHECKS = (
    ("containers", "Container health"),
    ("health", "System health endpoint"),
    ("performance", "Performance metrics"),
    ("database", "Database connectivity"),
    ("backups", "Backup verification"),
)


async def health(run: Run) -> None:
    deps = run.deps
    work = {
        "containers": check_containers(deps),
        "health": check_health_endpoint(deps),
        "performance": check_performance(deps),
        "database": check_database(deps),
        "backups": check_backups(deps),
    }
    await asyncio.gather(*(run.step(name, work[key]) for key, name in CHECKS))
    attention = [
        (key, step)
        for (key, _name), step in zip(CHECKS, run.steps, strict=True)
        if step.status is not Status.OK
    ]
    if not attention:
        run.text = f"All {len(CHECKS)} checks passed."
        return
    lines = [f"{len(attention)} of {len(CHECKS)} checks need attention."]
    for key, step in attention:
        if step.status in (Status.CRIT, Status.FAILED):
            lines.append(f"• {step.name}: {ACTIONS_IF_FAILED[key]}")
    run.text = "\n".join(lines)


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    no_more(args, "health")
    return Invocation(name="health", title="Health check", procedure=health)


SPEC = ProcedureSpec(
    name="health",
    summary="The runbook's five daily checks against the baseline table",
    commands=(
        CommandSpec(
            "health",
            usage="health",
            summary="The five morning checks, against the baseline",
            parse=_parse,
        ),
    ),
    runbook=(
        RunbookEntry(
            "Daily health check (Morning Checklist)",
            "every morning; on demand",
            "containers, /health endpoint, performance vs baseline, database, backups",
        ),
    ),
)
