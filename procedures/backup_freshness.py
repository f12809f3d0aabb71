"""Is there a fresh backup? If not, propose the runbook's Manual Backup.

Daily check 5's "Action if Failed" is "Trigger manual backup": this
procedure checks, and when the newest backup is too old or empty, proposes
exactly that in the backup container of the service map. It is also where a
``BackupStale`` alert is routed.
"""

from __future__ import annotations

from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status
from bot.store.base import Proposal
from procedures.backup import (
    BACKUP_ACTION,
    BACKUP_SERVICE,
    BACKUP_TIMEOUT_S,
    BACKUP_VERIFY_S,
    backup_command,
)
from procedures.checks import check_backups

__all__ = ["backup_freshness", "propose_manual_backup"]


async def _backup_container(deps: Deps) -> Outcome:
    container = deps.settings.sms_services.get(BACKUP_SERVICE)
    if container is None:
        known = ", ".join(sorted(deps.settings.sms_services)) or "none"
        return Outcome(
            Status.WARN,
            f"SMS_SERVICES has no {BACKUP_SERVICE!r} entry (it has: {known}), "
            "so the bot cannot run the manual backup",
        )
    return Outcome(Status.OK, f"{BACKUP_SERVICE} = {container}")


async def propose_manual_backup(run: Run, *, reason: str) -> Proposal | None:
    """Propose the Manual Backup in the configured backup container; say why not otherwise."""
    deps = run.deps
    found = await run.step("Find the backup container", _backup_container(deps))
    container = deps.settings.sms_services.get(BACKUP_SERVICE)
    if found is None or found.status is not Status.OK or container is None:
        run.text = (
            f"{reason}\nNo manual backup proposed: add {BACKUP_SERVICE}=CONTAINER to "
            f"SMS_SERVICES, or run the runbook's command by hand: "
            f"`{backup_command('sms-db-backup')}`."
        )
        return None
    command = backup_command(container)
    proposal = await run.propose(
        action=BACKUP_ACTION,
        args={"service": BACKUP_SERVICE, "container": container},
        summary=f"run the manual backup in {container}",
        confirm_label="Run manual backup",
        note=(
            f"On approval the bot runs `{command}` (runbook: Manual Backup; at most "
            f"{BACKUP_TIMEOUT_S:g} s), then checks that a new, non-empty backup appears in "
            f"{deps.backups.directory} (within {BACKUP_VERIFY_S:g} s)."
        ),
    )
    run.text = f"{reason}\nProposed: run the manual backup in {container}."
    return proposal


async def backup_freshness(run: Run) -> None:
    deps = run.deps
    max_age = deps.settings.sms_backup_max_age_hours
    checked = await run.step("Check the newest backup", check_backups(deps))
    if checked is None:
        run.text = (
            f"Could not check the backups: {run.steps[-1].summary}. "
            "Check SMS_BACKUP_DIR and that the bot can read it."
        )
        return
    if checked.status is Status.OK:
        run.text = f"Backups are fresh (limit {max_age:g} h): {checked.summary}."
        return
    await propose_manual_backup(
        run, reason=f"The newest backup is not usable (limit {max_age:g} h): {checked.summary}."
    )
