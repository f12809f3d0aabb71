"""Daily Health Checks: the runbook's five-step Morning Checklist, run concurrently.

A slow or dead dependency holds only its own step: each has a timeout, so
the whole check takes about as long as its slowest step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.catalogue import (
    CommandSpec,
    ProcedureSpec,
    RunbookEntry,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status
from procedures.checks import (
    ACTIONS_IF_FAILED,
    check_backups,
    check_containers,
    check_database,
    check_health_endpoint,
    check_performance,
)

__all__ = ["CHECKS", "CHECK_WORK", "SPEC", "health"]

# (key, step name as the user reads it); the order of the runbook's checklist.
CHECKS = (
    ("containers", "Container health"),
    ("health", "System health endpoint"),
    ("performance", "Performance metrics"),
    ("database", "Database connectivity"),
    ("backups", "Backup verification"),
)
# key -> the check itself; the morning summary runs the same five.
CHECK_WORK: dict[str, Callable[[Deps], Awaitable[Outcome]]] = {
    "containers": check_containers,
    "health": check_health_endpoint,
    "performance": check_performance,
    "database": check_database,
    "backups": check_backups,
}


async def health(run: Run) -> None:
    await asyncio.gather(*(run.step(name, CHECK_WORK[key](run.deps)) for key, name in CHECKS))
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


SPEC = ProcedureSpec(
    name="health",
    summary="The runbook's five daily checks against the baseline table",
    commands=(
        CommandSpec(
            "health",
            usage="health",
            summary="The five morning checks, against the baseline",
            parse=without_args("health", "Health check", health),
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
