"""``backups``: the five newest backups with age and size (runbook: Backup Verification)."""

from __future__ import annotations

from bot.catalogue import (
    CommandSpec,
    ProcedureSpec,
    RunbookEntry,
    without_args,
)
from bot.engine import Run
from procedures.checks import check_backups

__all__ = ["SPEC", "backups"]


async def backups(run: Run) -> None:
    await run.step("List newest backups", check_backups(run.deps, safety_dumps=True))


SPEC = ProcedureSpec(
    name="backups",
    summary="The newest backups, with age and size",
    commands=(
        CommandSpec(
            "backups",
            usage="backups",
            summary="The five newest backups with age and size",
            parse=without_args("backups", "Backups", backups),
        ),
    ),
    runbook=(
        RunbookEntry(
            "Backup verification",
            "daily after the 02:00 UTC backup",
            "five newest backups, newest must be < 24 h old",
        ),
    ),
)
