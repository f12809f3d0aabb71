"""Restore Procedure (RTO 15 minutes, RPO 24 hours): check, propose, two approvers, swap.

The runbook replays the dump over the live database. A plain dump cannot be
replayed over a live database (its ``CREATE TABLE``s collide, or without
``ON_ERROR_STOP`` its ``COPY``s append duplicate rows), so the bot loads it
into a fresh database beside the live one and swaps the names, keeping the
previous database until an operator drops it:

1. a safety dump of the live database (``pre_restore_YYYYMMDD_HHMMSS.sql``);
2. ``CREATE DATABASE`` + ``psql --single-transaction -v ON_ERROR_STOP=1``;
3. tables and row counts, restored against live;
4. stop the backend, end the sessions, rename live -> ``<name>_before_restore_<ts>``
   and restored -> live (one transaction);
5. start the backend and verify: running, ``/health`` healthy, ``SELECT COUNT(*) FROM users``.

Steps 1-3 change nothing the system uses; a failure there stops with
nothing changed. A failure after step 4 swaps the names back and starts the
backend on the old database. Everything before the proposal is a check:
the file (by name from ``backups`` only), its format, age and size, the
role's right to create databases, the client tools.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from bot.adapters.backups import SAFETY_DUMP_PREFIX, BackupFile, BackupKind
from bot.adapters.pgtools import PgTools
from bot.catalogue import (
    ActionSpec,
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    Role,
    RunbookEntry,
    no_more,
)
from bot.config import Settings
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UsageError, UserError
from bot.exclusive import exclusive
from bot.messages import Field, Status, Table
from procedures.checks import format_age, format_size
from procedures.restart import until_healthy

__all__ = [
    "RESTORE",
    "RESTORE_ACTION",
    "RPO_HOURS",
    "RTO_MINUTES",
    "SPEC",
    "BackupRefused",
    "CheckedBackup",
    "RestoreArgs",
    "check_backup",
    "format_rto",
    "pg_tools",
    "restore_action",
    "restore_proposal",
]

RESTORE_ACTION = "restore"
RTO_MINUTES = 15.0
RPO_HOURS = 24.0
BACKEND_SERVICE = "backend"
SAFETY_PREFIX = SAFETY_DUMP_PREFIX  # the adapter tells them from backups by it
_USAGE = "restore [BACKUP]"
_HEADER = b"-- PostgreSQL database dump"
_COMPLETE = b"-- PostgreSQL database dump complete"
_GZIP_MAGIC = b"\x1f\x8b"
_PGDMP_MAGIC = b"PGDMP"
_ZIP_MAGIC = b"PK\x03\x04"
_HEAD = 64 * 1024
_TAIL = 4096
_CHUNK = 1024 * 1024
_MAX_IDENT = 63  # PostgreSQL truncates longer names silently
# Bounds of the long steps, and the rough speeds of the estimate.
DUMP_TIMEOUT_S = 900.0
LOAD_TIMEOUT_S = 1800.0
CHECK_FILE_TIMEOUT_S = 300.0
_BYTES_PER_S_DUMP = 30e6
_BYTES_PER_S_LOAD = 10e6
_FIXED_S = 45.0
_POLL_S = 1.0
_SMALLER_THAN_USUAL = 0.5


class BackupRefused(UserError):
    """The chosen backup cannot be restored; the message says why and what to do."""


def pg_tools(settings: Settings) -> PgTools:
    """The client tools against ``SMS_DATABASE_URL`` (stateless: built where needed)."""
    return PgTools(settings.sms_database_url, bin_dir=settings.sms_pg_bin_dir)


def format_rto(seconds: float) -> str:
    """``6 m 12 s (RTO 15 min: met)``."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    took = f"{minutes} m {secs} s" if minutes else f"{secs} s"
    verdict = "met" if seconds <= RTO_MINUTES * 60 else "missed"
    return f"{took} (RTO {RTO_MINUTES:g} min: {verdict})"


# -- the backup file ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedBackup(Outcome):
    """A backup that may be restored, with what was found about it."""

    file: BackupFile | None = None
    compressed: bool = False
    warnings: tuple[str, ...] = ()


def _choose(files: list[BackupFile], name: str | None) -> BackupFile:
    if not files:
        raise BackupRefused("There is no backup file in SMS_BACKUP_DIR to restore from.")
    if name is None:
        # A safety dump of an earlier restore is not "the newest backup" to go back to.
        regular = [f for f in files if f.kind is BackupKind.SCHEDULED]
        return (regular or files)[0]
    for f in files:
        if f.name == name:
            return f
    known = ", ".join(f.name for f in files[:10])
    raise BackupRefused(
        f"{name!r} is not a backup in SMS_BACKUP_DIR (give a name from /sms backups, "
        f"never a path). Backups: {known}."
    )


def _inspect_sync(path: Path) -> bool:
    """Is ``path`` a complete plain pg_dump (gzip unpacked)? Returns ``compressed``."""
    name = path.name
    try:
        with path.open("rb") as stream:
            head = stream.read(_HEAD)
    except OSError as exc:
        raise BackupRefused(f"{name} cannot be read: {exc.strerror or exc}") from exc
    if not head:
        raise BackupRefused(f"{name} is empty: choose another backup from /sms backups.")
    if head.startswith(_PGDMP_MAGIC):
        raise BackupRefused(
            f"{name} is in pg_dump's custom format; the bot restores plain SQL dumps. "
            f"Convert it with `pg_restore -f {path.stem}.sql {name}` in SMS_BACKUP_DIR, "
            f"then /sms restore {path.stem}.sql."
        )
    if head.startswith(_ZIP_MAGIC):
        raise BackupRefused(f"{name} is a zip archive: unpack the .sql dump into SMS_BACKUP_DIR.")
    compressed = head.startswith(_GZIP_MAGIC)
    if compressed:
        try:
            tail = _gzip_tail(path)
            with gzip.open(path, "rb") as stream:
                head = stream.read(_HEAD)
        except (OSError, EOFError, zlib.error) as exc:
            raise BackupRefused(f"{name} is corrupt gzip data ({exc}).") from exc
    else:
        with path.open("rb") as stream:
            size = stream.seek(0, 2)
            stream.seek(max(0, size - _TAIL))
            tail = stream.read()
    if _HEADER not in head[:4096]:
        if b"\x00" in head or not _is_text(head):
            raise BackupRefused(
                f"{name} is encrypted or of an unknown format. If the backup service wrote "
                "it encrypted (AES-256, BACKUP_ENCRYPTION_KEY), decrypt it into a plain .sql "
                "file in SMS_BACKUP_DIR and run /sms restore with that name."
            )
        raise BackupRefused(
            f"{name} is not a plain pg_dump (no '-- PostgreSQL database dump' header)."
        )
    if _COMPLETE not in tail:
        raise BackupRefused(
            f"{name} is truncated: it does not end with '-- PostgreSQL database dump "
            "complete'. Choose another backup from /sms backups."
        )
    return compressed


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3
    return True


def _gzip_tail(path: Path) -> bytes:
    """Read the whole compressed dump (checks its CRC) and keep its end."""
    tail = b""
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            tail = (tail + chunk)[-_TAIL:]
    return tail


async def check_backup(deps: Deps, name: str | None) -> CheckedBackup:
    """Choose the backup and judge it: format, age against the RPO, size against the others."""
    # A safety dump may be restored by name (to undo a restore), never by default.
    files = await deps.backups.newest(10_000, safety_dumps=True)
    chosen = _choose(files, name)
    compressed = await asyncio.to_thread(_inspect_sync, chosen.path)
    now = deps.clock()
    age_h = chosen.age_hours(now)
    warnings: list[str] = []
    status = Status.OK
    if age_h > RPO_HOURS:
        status = Status.WARN
        warnings.append(
            f"older than the RPO of {RPO_HOURS:g} h: {format_age(age_h)} of data will be lost"
        )
    others = [f.size for f in files if f.name != chosen.name and f.size > 0]
    if others:
        median = statistics.median(others)
        if chosen.size < median * _SMALLER_THAN_USUAL:
            status = Status.WARN
            warnings.append(
                f"much smaller than the other backups ({format_size(chosen.size)} against a "
                f"median of {format_size(int(median))})"
            )
    kind = "gzip-compressed plain SQL dump" if compressed else "plain SQL dump"
    summary = f"{chosen.name}: {kind}, {format_size(chosen.size)}, {format_age(age_h)} old"
    if warnings:
        summary += "; " + "; ".join(warnings)
    fields = (
        Field("Backup", chosen.name),
        Field("Written", f"{chosen.modified:%Y-%m-%d %H:%M} UTC ({format_age(age_h)} ago)"),
        Field("Size", format_size(chosen.size)),
    )
    return CheckedBackup(
        status,
        summary,
        fields=fields,
        file=chosen,
        compressed=compressed,
        warnings=tuple(warnings),
    )


# -- checks before the proposal ---------------------------------------------------------


async def _check_rights(tools: PgTools) -> Outcome:
    rights = await tools.rights()
    database = tools.target.database
    if not rights.enough:
        raise UserError(
            f"role {rights.role} cannot create and rename databases (CREATEDB: "
            f"{'yes' if rights.can_create else 'no'}, owner of {database}: {rights.owner}). "
            f"A superuser can fix it: ALTER ROLE {rights.role} CREATEDB; "
            f"ALTER DATABASE {database} OWNER TO {rights.role};"
        )
    how = "superuser" if rights.superuser else f"CREATEDB, owner of {database}"
    return Outcome(Status.OK, f"role {rights.role}: {how}")


def _major(version: str) -> int | None:
    match = re.search(r"(\d+)(?:\.\d+)?", version)
    return int(match.group(1)) if match else None


async def _check_tools(deps: Deps, tools: PgTools) -> Outcome:
    """Both tools there, and pg_dump not older than the server (it refuses newer servers)."""
    dump = await tools.version("pg_dump")
    psql = await tools.version("psql")
    server = (await deps.db.check()).server_version
    ours, theirs = _major(dump.rsplit(" ", 1)[-1]), _major(server)
    if ours is not None and theirs is not None and ours < theirs:
        raise UserError(
            f"{dump} is older than the server (PostgreSQL {server}) and cannot dump it: "
            f"install the PostgreSQL {theirs} client and point SMS_PG_BIN_DIR at it"
        )
    return Outcome(Status.OK, f"{dump}; {psql}; server {server}")


def _names(live: str, stamp: str) -> tuple[str, str, str]:
    """The restored, kept and failed database names, or a refusal when too long."""
    names = (
        f"{live}_restore_{stamp}",
        f"{live}_before_restore_{stamp}",
        f"{live}_failed_restore_{stamp}",
    )
    if any(len(n.encode()) > _MAX_IDENT for n in names):
        raise UserError(
            f"the database name {live!r} is too long to add _before_restore_{stamp} "
            f"(PostgreSQL names are at most {_MAX_IDENT} bytes)"
        )
    return names


def _estimate_s(backup: BackupFile, db_size: int) -> float:
    return _FIXED_S + db_size / _BYTES_PER_S_DUMP + backup.size / _BYTES_PER_S_LOAD * 2


async def restore_proposal(run: Run, *, backup: str | None) -> None:
    """Check everything a restore needs, then propose it to two different approvers."""
    deps = run.deps
    settings = deps.settings
    backend = deps.docker.container_name(BACKEND_SERVICE)  # unknown service: a usage error
    tools = pg_tools(settings)
    checked = await run.step(
        "Check the backup file", check_backup(deps, backup), timeout=CHECK_FILE_TIMEOUT_S
    )
    if checked is None or checked.file is None:
        run.text = f"Not proposing a restore: {run.steps[-1].summary}"
        return
    rights = await run.step("Check the role may create databases", _check_rights(tools))
    if rights is None:
        run.text = f"Not proposing a restore: {run.steps[-1].summary}"
        return
    found = await run.step("Check pg_dump and psql", _check_tools(deps, tools))
    if found is None:
        run.text = f"Not proposing a restore: {run.steps[-1].summary}"
        return
    info = await run.step("Size of the live database", deps.db.check())
    live = tools.target.database
    _names(live, "00000000_000000")  # a name too long is refused now, not after approval
    stamp = "YYYYMMDD_HHMMSS"
    file = checked.file
    estimate = _estimate_s(file, info.size_bytes if info else file.size)
    needed = settings.sms_restore_approvals
    approvals = (
        f"Needs {needed} different approvers: the first click records 1 of {needed}, "
        "the same person cannot approve twice."
        if needed > 1
        else "SMS_RESTORE_APPROVALS=1: one approver's click starts it (a one-person team)."
    )
    warnings = "".join(f"\nWarning: {w}." for w in checked.warnings)
    note = (
        f"Restore database {live} from {file.name} ({format_size(file.size)}, "
        f"written {format_age(file.age_hours(deps.clock()))} ago), estimated "
        f"{format_rto(estimate).split(' (')[0]} (RTO {RTO_MINUTES:g} min).{warnings}\n"
        f"1. Safety dump of {live} to {SAFETY_PREFIX}{stamp}.sql in SMS_BACKUP_DIR.\n"
        f"2. Load {file.name} into a new database {live}_restore_{stamp} "
        "(psql --single-transaction -v ON_ERROR_STOP=1); on error it is dropped, nothing changed.\n"
        "3. Compare tables and row counts with the live database.\n"
        f"4. Stop {backend}, end the sessions on {live}, rename it to "
        f"{live}_before_restore_{stamp} and the restored database to {live}.\n"
        f"5. Start {backend}; verify it runs, /health is healthy and users can be counted. "
        "Any failure after step 4 swaps the names back and starts the backend on the old "
        "database.\n"
        f"{approvals}"
    )
    args = RestoreArgs(backup=file.name, database=live, approvals=needed)
    await run.propose(
        action=RESTORE.name,
        args=RESTORE.encode(args),
        summary=f"restore database {live} from {file.name}",
        confirm_label=f"Restore {file.name}",
        note=note,
        needed=needed,
    )
    run.text = (
        f"Proposed: restore {live} from {file.name}. Waiting for {needed} approver"
        f"{'s' if needed > 1 else ''}."
    )


# -- the restore ------------------------------------------------------------------------


@dataclass
class _Journal:
    """What the incident-style record says: who, which file, each step and its time."""

    lines: list[str] = field(default_factory=list)

    def add(self, run: Run) -> None:
        step = run.steps[-1]
        took = f"{step.duration_s:.1f} s" if step.duration_s is not None else "-"
        self.lines.append(f"| {step.name} | {step.status.value} | {took} | {step.summary} |")


async def _safety_dump(tools: PgTools, path: Path) -> Outcome:
    await tools.dump(path, timeout_s=DUMP_TIMEOUT_S)
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    return Outcome(Status.OK, f"{path.name}, {format_size(size)}")


def _gunzip_sync(source: Path, target: Path) -> None:
    with gzip.open(source, "rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


async def _load(tools: PgTools, database: str, checked: CheckedBackup) -> Outcome:
    assert checked.file is not None
    await tools.create_database(database)
    if not checked.compressed:
        await tools.load(database, checked.file.path, timeout_s=LOAD_TIMEOUT_S)
        return Outcome(Status.OK, f"{checked.file.name} loaded into {database}")
    with tempfile.TemporaryDirectory(prefix="sms-bot-restore-") as tmp:
        plain = Path(tmp) / "dump.sql"
        await asyncio.to_thread(_gunzip_sync, checked.file.path, plain)
        await tools.load(database, plain, timeout_s=LOAD_TIMEOUT_S)
    return Outcome(Status.OK, f"{checked.file.name} unpacked and loaded into {database}")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


async def _compare(tools: PgTools, live: str, restored: str) -> Outcome:
    before = await tools.table_counts(live)
    after = await tools.table_counts(restored)
    if not after:
        raise UserError(f"the restored database {restored} has no tables")
    rows = tuple(
        (name, str(before.get(name, "-")), str(after.get(name, "-")))
        for name in sorted(set(before) | set(after))
    )
    table = Table(
        title=f"Tables and rows: live {live} against restored",
        columns=("table", "live now", "restored"),
        rows=rows,
    )
    summary = (
        f"{_n(len(after), 'table')}, {_n(sum(after.values()), 'row')} restored; "
        f"live has {_n(len(before), 'table')}, {_n(sum(before.values()), 'row')}"
    )
    missing = sorted(set(before) - set(after))
    status = Status.WARN if missing else Status.OK
    if missing:
        summary += f"; not in the backup: {', '.join(missing[:5])}"
    return Outcome(status, summary, details=(table,))


async def _stop(deps: Deps) -> Outcome:
    info = await deps.docker.stop(BACKEND_SERVICE)
    return Outcome(Status.OK, f"{info.name} {info.state}")


async def _start(deps: Deps) -> Outcome:
    info = await deps.docker.start(BACKEND_SERVICE)
    return Outcome(Status.OK, f"{info.name} {info.state}")


async def _until_running(deps: Deps, deadline: float) -> Outcome:
    last = "unknown"
    while time.monotonic() < deadline:
        info = await deps.docker.status(BACKEND_SERVICE)
        last = info.state
        if info.running:
            return Outcome(Status.OK, f"{info.name} running")
        await asyncio.sleep(_POLL_S)
    return Outcome(Status.CRIT, f"still {last} when the wait ended")


async def _count_users(deps: Deps) -> Outcome:
    users = await deps.db.count_users()
    return Outcome(Status.OK, f"{users.count} users ({users.latency_ms:.0f} ms)")


def _ok(result: Outcome | None) -> bool:
    return result is not None and result.status in (Status.OK, Status.WARN)


async def _start_and_verify(run: Run, backend: str, *, label: str = "") -> bool:
    deps = run.deps
    deadline = time.monotonic() + deps.settings.sms_recovery_timeout_s
    limit = deps.settings.sms_recovery_timeout_s + 5
    started = await run.step(f"Start {backend}{label}", _start(deps))
    if started is None:
        return False
    running = await run.step(
        f"Wait until {backend} runs{label}", _until_running(deps, deadline), timeout=limit
    )
    healthy = await run.step(
        f"Wait until /health is healthy{label}",
        until_healthy(deps, deadline, name_failing=False),
        timeout=limit,
    )
    users = await run.step(f"Count users{label}", _count_users(deps))
    return _ok(running) and _ok(healthy) and _ok(users)


async def _write_record(deps: Deps, name: str, text: str) -> Path:
    directory = Path(deps.settings.sms_incidents_dir)

    def write() -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_text(text, encoding="utf-8")
        return path

    return await asyncio.to_thread(write)


async def restore_action(run: Run, args: RestoreArgs) -> None:
    """The approved restore: safety dump, load beside, compare, swap, verify (or swap back)."""
    deps = run.deps
    tools = pg_tools(deps.settings)
    live = tools.target.database
    if live != args.database:
        raise UserError(
            f"Not restoring: SMS_DATABASE_URL now names {live}, the proposal was for "
            f"{args.database}. Run /sms restore again."
        )
    backend = deps.docker.container_name(BACKEND_SERVICE)
    approved_at = await _approved_at(run)
    stamp = approved_at.strftime("%Y%m%d_%H%M%S")
    restored, kept, failed = _names(live, stamp)
    journal = _Journal()
    state = "unchanged"

    async def step(
        name: str, work: Awaitable[object], *, timeout: float | None = None
    ) -> Outcome | None:
        result = await run.step(name, work, timeout=timeout)
        journal.add(run)
        if result is None or isinstance(result, Outcome):
            return result
        return Outcome(Status.OK, "")

    def since_approval() -> float:
        return (deps.clock() - approved_at).total_seconds()

    async def finish(outcome: str) -> None:
        elapsed = since_approval()
        run.text = outcome
        await _record(run, args, journal, approved_at=approved_at, elapsed=elapsed, state=state)

    checked = await step(
        "Check the backup file again", check_backup(deps, args.backup), timeout=CHECK_FILE_TIMEOUT_S
    )
    if not isinstance(checked, CheckedBackup) or checked.file is None:
        await finish(f"Stopped before any change: {run.steps[-1].summary}")
        return
    # 1. safety dump
    safety = Path(deps.settings.sms_backup_dir) / f"{SAFETY_PREFIX}{stamp}.sql"
    dumped = await step(
        f"1. Safety dump of {live} (pg_dump)",
        _safety_dump(tools, safety),
        timeout=DUMP_TIMEOUT_S + 10,
    )
    if dumped is None:
        # A partial dump must not pass for a backup later.
        await asyncio.to_thread(safety.unlink, missing_ok=True)
        await finish(f"Stopped: the safety dump failed; nothing was changed. {live} is as it was.")
        return
    # 2. load beside the live database
    loaded = await step(
        f"2. Load {args.backup} into {restored} (one transaction)",
        _load(tools, restored, checked),
        timeout=LOAD_TIMEOUT_S + 60,
    )
    if loaded is None:
        reason = run.steps[-1].summary
        await step(f"Drop {restored}", tools.drop_database(restored), timeout=60)
        await finish(
            f"Stopped: loading {args.backup} failed ({reason[-300:]}). {restored} was dropped; "
            f"the live database {live} was not touched and {backend} kept running."
        )
        return
    # 3. compare
    compared = await step(
        f"3. Compare tables and rows with {live}", _compare(tools, live, restored)
    )
    if compared is None:
        await step(f"Drop {restored}", tools.drop_database(restored), timeout=60)
        await finish(f"Stopped: the restored database could not be checked; {live} untouched.")
        return
    # 4. stop, end sessions, swap
    stopped = await step(f"4. Stop {backend}", _stop(deps), timeout=60)
    if stopped is None:
        await step(f"Start {backend} again", _start(deps), timeout=60)
        await step(f"Drop {restored}", tools.drop_database(restored), timeout=60)
        await finish(f"Stopped: {backend} could not be stopped; {live} untouched.")
        return
    await step(
        f"End remaining sessions on {live} (the bot holds no pooled connection to it)",
        _ended(tools, live),
    )
    swapped = await step(
        f"Rename {live} -> {kept}, {restored} -> {live}",
        _renamed(tools, [(live, kept), (restored, live)]),
        timeout=60,
    )
    if swapped is None:
        # One transaction: nothing was renamed.
        back = await _start_and_verify(run, backend, label=" (old database)")
        journal.lines.append("| swap failed, backend restarted on the old database | | | |")
        await step(f"Drop {restored}", tools.drop_database(restored), timeout=60)
        state = "old database live" if back else "old database live, backend NOT healthy"
        await finish(
            f"Stopped: the databases could not be renamed; {live} is the old database. "
            f"{backend} {'runs healthy' if back else 'did NOT recover'}.\n" + _escalation(run, back)
        )
        return
    state = "restored database live"
    # 5. start and verify
    if await _start_and_verify(run, backend):
        elapsed = since_approval()
        await finish(
            f"Restored {live} from {args.backup} in {format_rto(elapsed)}.\n"
            f"{backend} runs on the restored database, /health is healthy.\n"
            f"The previous database is kept as {kept}; the safety dump is {safety.name}. "
            f"When you no longer need it: `DROP DATABASE {kept};`"
        )
        return
    # Anything failing after the swap: swap back and start on the old database.
    await step(f"Stop {backend} (rolling back)", _stop(deps), timeout=60)
    back_swapped = await step(
        f"Rename {live} -> {failed}, {kept} -> {live} (rolling back)",
        _renamed(tools, [(live, failed), (kept, live)]),
        timeout=60,
    )
    if back_swapped is None:
        state = "restored database live, backend NOT healthy, swap back FAILED"
        await finish(
            f"The restored database did not verify and swapping back failed: {live} is the "
            f"restored database, {kept} the previous one. {backend} is stopped.\n"
            + _escalation(run, False)
        )
        return
    back = await _start_and_verify(run, backend, label=" (old database)")
    state = "old database live" if back else "old database live, backend NOT healthy"
    await finish(
        f"The restore did not verify; rolled back: {live} is the old database again and "
        f"{backend} {'runs healthy' if back else 'did NOT recover'}. The restored database "
        f"is kept as {failed} for a look (`DROP DATABASE {failed};` when done).\n"
        + _escalation(run, back)
    )


async def _approved_at(run: Run) -> datetime:
    """When the RTO clock started: the click that claimed the proposal, as the store has it.

    Not when this run started: the action may start later than the approval (a
    busy replica, a retry), and the RTO counts from the decision.
    """
    if run.command.proposal_id:
        proposal = await run.deps.store.proposal_get(run.command.proposal_id)
        if proposal is not None and proposal.decided_at is not None:
            return proposal.decided_at
    return run.started_at or run.deps.clock()


def _escalation(run: Run, healthy: bool) -> str:
    """The sentence a failed restore ends with; the run calls the escalation mentions."""
    run.mentions = run.deps.settings.escalation_mentions
    if healthy:
        return "The restore did not happen; the system runs as before it."
    return "Escalate now: the backend is not healthy (runbook: full system rollback)."


async def _ended(tools: PgTools, database: str) -> Outcome:
    ended = await tools.terminate_sessions(database)
    return Outcome(Status.OK, f"{ended} session{'s' if ended != 1 else ''} ended")


async def _renamed(tools: PgTools, renames: list[tuple[str, str]]) -> Outcome:
    await tools.rename_pair(renames)
    return Outcome(Status.OK, ", ".join(f"{a} -> {b}" for a, b in renames))


async def _record(
    run: Run,
    args: RestoreArgs,
    journal: _Journal,
    *,
    approved_at: datetime,
    elapsed: float,
    state: str,
) -> None:
    """Audit the restore and write its incident-style record."""
    deps = run.deps
    approvers: tuple[str, ...] = (run.command.user,)
    requested_by = "-"
    if run.command.proposal_id:
        approvers = await deps.store.proposal_approvals(run.command.proposal_id) or approvers
        proposal = await deps.store.proposal_get(run.command.proposal_id)
        requested_by = proposal.requested_by if proposal else "-"
    stamp = approved_at.strftime("%Y%m%d_%H%M%S")
    text = "\n".join(
        [
            f"# Restore of {args.database} from {args.backup}",
            "",
            f"- Requested by: {requested_by}",
            f"- Approved by: {', '.join(approvers)}",
            f"- Approved at: {approved_at:%Y-%m-%d %H:%M:%S} UTC (the RTO clock starts here)",
            f"- Backup file: {args.backup}",
            f"- Took: {format_rto(elapsed)}",
            f"- State at the end: {state}",
            "",
            "| step | status | took | result |",
            "| --- | --- | --- | --- |",
            *journal.lines,
            "",
            run.text,
            "",
        ]
    )
    try:
        path = await _write_record(deps, f"restore_{stamp}.md", text)
        record = str(path)
    except OSError as exc:
        record = f"not written: {exc}"
    await deps.audit.record(
        at=deps.clock(),
        actor=run.command.user,
        source=run.command.source,
        action="restore.record",
        target=args.database,
        outcome=state,
        conversation=run.command.conversation.channel,
        detail={
            "backup": args.backup,
            "approvers": list(approvers),
            "requested_by": requested_by,
            "seconds": round(elapsed, 1),
            "record": record,
        },
    )
    run.fields.append(Field("Record", record))


@dataclass(frozen=True)
class RestoreArgs:
    """A restore proposal's arguments: a backup's name (never a path) and the database."""

    backup: str
    database: str
    approvals: int = 2


async def _approved(run: Run, args: RestoreArgs) -> None:
    # One restore at a time, whichever replica each approval landed on.
    slot = await _approved_at(run)
    async with exclusive(run.deps, RESTORE_ACTION, slot=slot, what="restore"):
        await restore_action(run, args)


RESTORE: ActionSpec[RestoreArgs] = ActionSpec(
    name=RESTORE_ACTION,
    args=RestoreArgs,
    run=_approved,
    title=lambda a: f"Restoring {a.database} from {a.backup}",
    target=lambda a: a.database,
    confirm_label=lambda a: f"Restore {a.backup}",
    approvals=lambda a: a.approvals,
)


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    name = args[0] if args else None
    no_more(args[1:], _USAGE)
    if name is not None and ("/" in name or "\\" in name or name.startswith(".")):
        raise UsageError(
            f"{name!r} looks like a path: give a backup's name from /sms backups.",
            usage=f"/sms {_USAGE}",
        )
    what = name or "the newest backup"
    return Invocation(
        name="restore",
        title=f"Restore from {what}?",
        procedure=partial(restore_proposal, backup=name),
    )


SPEC = ProcedureSpec(
    name="restore",
    summary="Restore the SMS database from a backup, after checks and two approvals",
    commands=(
        CommandSpec(
            "restore",
            usage=_USAGE,
            summary="Check a backup, then offer to restore it (two approvers click)",
            parse=_parse,
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    action=RESTORE,
    runbook=(
        RunbookEntry(
            "Restore Procedure (RTO 15 min, RPO 24 h)",
            "data loss or corruption; operators ask, two approvers click",
            "check the backup, safety dump, load beside the live database, compare, "
            "stop backend, swap, start and verify (or swap back)",
        ),
    ),
)
