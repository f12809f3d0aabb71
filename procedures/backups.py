"""``backups``: the five newest backups with age and size (runbook: Backup Verification)."""

from __future__ import annotations

from bot.engine import Run
from procedures.checks import check_backups

__all__ = ["backups"]


async def backups(run: Run) -> None:
    await run.step("List newest backups", check_backups(run.deps))
