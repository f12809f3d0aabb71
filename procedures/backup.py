"""The runbook's Manual Backup, run after an approval.

``docker exec sms-db-backup python -m backend.services.backup_service --backup``
becomes ``backup_action``: the same command in the container the service map
names, its output (redacted) in the thread, then a check that a new,
non-empty backup file really appeared in ``SMS_BACKUP_DIR``.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.adapters.backups import BackupFile
from bot.catalogue import ActionSpec, ProcedureSpec
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UserError
from bot.messages import CodeBlock, Status
from bot.redact import redact
from procedures.checks import format_age, format_size

__all__ = [
    "BACKUP",
    "BACKUP_ACTION",
    "BACKUP_ARGV",
    "BACKUP_SERVICE",
    "BACKUP_TIMEOUT_S",
    "BACKUP_VERIFY_S",
    "SPEC",
    "BackupArgs",
    "backup_action",
    "backup_command",
]

BACKUP_ACTION = "backup"
# The service-map entry of the backup container (default sms-db-backup).
BACKUP_SERVICE = "backup"
# The runbook's Manual Backup command, as an argument vector: no shell parses it.
BACKUP_ARGV: tuple[str, ...] = ("python", "-m", "backend.services.backup_service", "--backup")
# How long the backup command may run, and how long its file may take to appear after it.
BACKUP_TIMEOUT_S = 600.0
BACKUP_VERIFY_S = 60.0
# File modification times come from a coarse kernel clock, a few ms behind the bot's.
_MTIME_SLACK = timedelta(seconds=2)
_OUTPUT_LINES = 30
_POLL_S = 1.0


def backup_command(container: str, argv: Sequence[str] = BACKUP_ARGV) -> str:
    """The command as the runbook writes it, for notes and messages."""
    return shlex.join(["docker", "exec", container, *argv])


async def _run_backup(
    deps: Deps, service: str, container: str, argv: Sequence[str], timeout_s: float
) -> Outcome:
    result = await deps.docker.exec(service, argv, timeout_s=timeout_s)
    lines = redact(result.output).rstrip().splitlines()
    tail = "\n".join(lines[-_OUTPUT_LINES:]) or "(no output)"
    shown = shlex.join(argv)
    details = (CodeBlock(f"{container}: {shown} (last {_OUTPUT_LINES} lines)", tail),)
    if result.exit_code != 0:
        last = lines[-1].strip() if lines else "no output"
        return Outcome(
            Status.CRIT, f"exited with code {result.exit_code}: {last[:120]}", details=details
        )
    return Outcome(Status.OK, f"exited with code 0, {len(lines)} lines of output", details=details)


def _describe(f: BackupFile, now: datetime) -> str:
    return f"{f.name}, {format_size(f.size)}, written {format_age(f.age_hours(now))} ago"


async def _until_new_backup(deps: Deps, started: datetime, wait_s: float) -> Outcome:
    deadline = time.monotonic() + wait_s
    newest: BackupFile | None = None
    while True:
        files = await deps.backups.newest(1)
        newest = files[0] if files else None
        if newest is not None and newest.modified >= started - _MTIME_SLACK and newest.size > 0:
            return Outcome(Status.OK, _describe(newest, deps.clock()))
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL_S)
    seen = "no backup files at all"
    if newest is not None:
        seen = f"newest is {_describe(newest, deps.clock())}"
        if newest.modified >= started - _MTIME_SLACK:
            seen = f"newest is {newest.name}, which is empty"
    return Outcome(
        Status.CRIT,
        f"no new non-empty backup in {deps.backups.directory} within {wait_s:g} s ({seen})",
    )


async def backup_action(
    run: Run,
    *,
    service: str,
    container: str,
    argv: Sequence[str] = BACKUP_ARGV,
    timeout_s: float = BACKUP_TIMEOUT_S,
    verify_s: float = BACKUP_VERIFY_S,
) -> None:
    """Run the manual backup in exactly ``container``, as the approved proposal said.

    ``argv`` is code's choice, never the proposal's: the click handler binds
    only ``service`` and ``container``; tests pass another command for a
    container that has no backup service.
    """
    deps = run.deps
    if deps.settings.sms_services.get(service) != container:
        raise UserError(
            f"Not running the backup: the configuration no longer maps {service} to "
            f"{container}. Check the backups again (/sms backups) for a new proposal."
        )
    started = deps.clock()
    t0 = time.monotonic()
    ran = await run.step(
        f"Run the manual backup in {container}",
        _run_backup(deps, service, container, argv, timeout_s),
        timeout=timeout_s + deps.settings.sms_check_timeout_s,
    )
    if ran is None:
        step = run.steps[-1]
        run.text = f"The manual backup in {container} could not be run: {step.summary}"
        return
    if ran.status is not Status.OK:
        run.text = (
            f"The manual backup in {container} failed ({ran.summary}). "
            "Its output is in the thread; no new backup was checked for."
        )
        return
    verified = await run.step(
        "Verify a new backup appeared",
        _until_new_backup(deps, started, verify_s),
        timeout=verify_s + deps.settings.sms_check_timeout_s,
    )
    elapsed = time.monotonic() - t0
    if verified is not None and verified.status is Status.OK:
        run.text = f"Manual backup done in {elapsed:.1f} s: {verified.summary}."
    else:
        run.text = (
            f"The backup command in {container} ended without error, but no new backup "
            f"could be confirmed in {deps.backups.directory}."
        )


@dataclass(frozen=True)
class BackupArgs:
    """A manual-backup proposal's arguments: which container, never what runs in it.

    The backup command itself is the constant ``BACKUP_ARGV``.
    """

    container: str
    service: str = BACKUP_SERVICE


async def _approved(run: Run, args: BackupArgs) -> None:
    await backup_action(run, service=args.service, container=args.container)


BACKUP: ActionSpec[BackupArgs] = ActionSpec(
    name=BACKUP_ACTION,
    args=BackupArgs,
    run=_approved,
    title=lambda a: f"Manual backup in {a.container}",
    target=lambda a: a.container,
    confirm_label=lambda a: "Run manual backup",
)

SPEC = ProcedureSpec(
    name="backup",
    summary="The runbook's Manual Backup, run in the backup container after an approval",
    action=BACKUP,
)
