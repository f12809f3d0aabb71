"""First Monday of the month: the runbook's Monthly Tasks.

What the bot can look at, it checks (old backups to archive, the database's
size and connections for capacity planning); ``VACUUM ANALYZE`` is proposed
with a button; the rest is listed as reminders to do by hand.
"""

from __future__ import annotations

from bot.adapters.backups import BackupFile
from bot.catalogue import ProcedureSpec, Schedule
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status
from procedures.checks import backups_table, format_size
from procedures.vacuum import database_name, propose_vacuum

__all__ = [
    "BY_HAND",
    "RETENTION_DAYS",
    "SPEC",
    "monthly_maintenance",
    "old_backups",
]

# The runbook's backup retention ("Retention: 30 days").
RETENTION_DAYS = 30
# More files than any backup folder holds; the listing is sorted newest first.
_ALL_FILES = 100_000
_LISTED = 20
# Connections above this share of max_connections deserve a look at capacity.
_CONNECTIONS_WARN = 0.8

BY_HAND = (
    "Full system health audit: `/sms health`, `/sms metrics`, `/sms status`.",
    "Review and rotate encryption keys (BACKUP_ENCRYPTION_KEY, admin passwords, API keys).",
    "Performance baseline update: compare `/sms metrics` with the runbook's baseline table "
    "and update SMS_THRESHOLD_* if the baseline moved.",
    "Capacity planning review: database size and connections above, disk in `/sms metrics`.",
)


async def old_backups(deps: Deps) -> Outcome:
    """Backup files older than the runbook's 30-day retention: to archive."""
    now = deps.clock()
    # Safety dumps of restores are kept under the same retention.
    files = await deps.backups.newest(_ALL_FILES, safety_dumps=True)
    old: list[BackupFile] = [f for f in files if f.age_hours(now) > RETENTION_DAYS * 24]
    if not old:
        return Outcome(
            Status.OK,
            f"none of {len(files)} backup files is older than {RETENTION_DAYS} days",
        )
    old.sort(key=lambda f: f.modified)
    size = sum(f.size for f in old)
    table = backups_table(
        old[:_LISTED], deps, title=f"Backups older than {RETENTION_DAYS} days (oldest first)"
    )
    more = f" (first {_LISTED} listed)" if len(old) > _LISTED else ""
    return Outcome(
        Status.WARN,
        f"{len(old)} of {len(files)} backup files ({format_size(size)}) are older than "
        f"{RETENTION_DAYS} days: archive them{more}",
        details=(table,),
    )


async def _database(deps: Deps) -> Outcome:
    check = await deps.db.check()
    share = check.connections / check.max_connections if check.max_connections else 0.0
    status = Status.WARN if share > _CONNECTIONS_WARN else Status.OK
    return Outcome(
        status,
        f"{check.database}: {format_size(check.size_bytes)}, "
        f"{check.connections}/{check.max_connections} connections, "
        f"PostgreSQL {check.server_version}",
    )


async def monthly_maintenance(run: Run) -> None:
    deps = run.deps
    archive = await run.step("Count backups past the 30-day retention", old_backups(deps))
    database = await run.step("Check database size and connections", _database(deps))
    lines = ["Monthly tasks (runbook: First Monday of Month).", "Checked by the bot:"]
    lines.append(f"• Backup rotation: {archive.summary if archive else 'could not be checked'}")
    lines.append(f"• Database: {database.summary if database else 'could not be checked'}")
    name = database_name(deps.settings.sms_database_url)
    if name is None:
        lines.append("• VACUUM ANALYZE: not proposed, SMS_DATABASE_URL names no database.")
    else:
        lines.append(f"• VACUUM ANALYZE on {name}: proposed below, needs an approver's click.")
    lines.append("To do by hand:")
    lines.extend(f"• {item}" for item in BY_HAND)
    run.text = "\n".join(lines)
    if name is not None:
        await propose_vacuum(run)


SPEC = ProcedureSpec(
    name="monthly",
    summary="The runbook's monthly tasks: old backups, database size, VACUUM ANALYZE",
    schedules=(
        Schedule(
            job="monthly-maintenance",
            title="Monthly maintenance",
            cron_setting="sms_monthly_maintenance_cron",
            procedure=monthly_maintenance,
        ),
    ),
)
