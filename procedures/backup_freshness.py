"""Is there a fresh backup? If not, propose the runbook's Manual Backup.

Daily check 5's "Action if Failed" is "Trigger manual backup": this
procedure checks, and when the newest backup is too old or empty, proposes
exactly that in the backup container of the service map. It is also where a
``BackupStale`` alert is routed, and that alert is raised by the scheduled
``backup-freshness`` check: it posts nothing while backups are fresh, raises
the alert (an incident thread like any alert) when they are not, and resolves
it once a fresh backup is there.
"""

from __future__ import annotations

from bot.alerts import Alert as AlertModel
from bot.alerts import AlertBatch
from bot.catalogue import (
    AlertSpec,
    CommandSpec,
    JobContext,
    ProcedureSpec,
    Role,
    Schedule,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status
from bot.store.base import Proposal
from procedures.backup import (
    BACKUP,
    BACKUP_SERVICE,
    BACKUP_TIMEOUT_S,
    BACKUP_VERIFY_S,
    BackupArgs,
    backup_command,
)
from procedures.checks import check_backups, judge_backups

__all__ = [
    "BACKUP_STALE_FINGERPRINT",
    "SPEC",
    "backup_check",
    "backup_freshness",
    "propose_manual_backup",
]


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
        action=BACKUP.name,
        args=BACKUP.encode(BackupArgs(container=container, service=BACKUP_SERVICE)),
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


BACKUP_STALE_FINGERPRINT = "sms-bot/backup-stale"


def _backup_alert(status: str, summary: str) -> AlertBatch:
    alert = AlertModel(
        fingerprint=BACKUP_STALE_FINGERPRINT,
        status=status,
        labels={"alertname": "BackupStale", "severity": "critical", "source": "sms-bot"},
        annotations={
            "summary": f"Backup check: {summary}",
            "description": "The runbook expects a backup younger than 24 hours.",
        },
    )
    return AlertBatch(receiver="sms-bot", status=status, group_key="sms-bot", alerts=(alert,))


async def backup_check(ctx: JobContext) -> Status:
    """The scheduled check: raise ``BackupStale`` when backups are stale, resolve it after."""
    deps = ctx.deps
    outcome = judge_backups(await deps.backups.newest(5), deps)
    open_incident = await deps.store.incident_open_for(BACKUP_STALE_FINGERPRINT)
    if outcome.status is Status.OK:
        if open_incident is not None:
            await ctx.receive_alerts(_backup_alert("resolved", outcome.summary))
        return Status.OK
    if open_incident is None:
        await ctx.receive_alerts(_backup_alert("firing", outcome.summary))
    return outcome.status


async def _propose_on_request(run: Run) -> None:
    await propose_manual_backup(run, reason="requested with /sms backup")


SPEC = ProcedureSpec(
    name="backup_freshness",
    summary="Is there a fresh backup? If not, propose the runbook's Manual Backup",
    commands=(
        CommandSpec(
            "backup",
            usage="backup",
            summary="Offer to run the runbook's manual backup now (an approver clicks)",
            parse=without_args("backup", "Manual backup?", _propose_on_request),
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    alert=AlertSpec(
        alertnames=("BackupStale",),
        priority="P1",
        title="Backup freshness: manual backup",
        bind=lambda alert: backup_freshness,
    ),
    schedules=(
        Schedule(
            job="backup-freshness",
            title="Backup freshness",
            cron_setting="sms_backup_check_cron",
            procedure=backup_freshness,
            local_time=False,  # half an hour after the runbook's 02:00 UTC backup
            check=backup_check,
        ),
    ),
)
