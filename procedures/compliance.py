"""``compliance``: the runbook's monthly Compliance Checks, done rather than listed.

Audit review (the bot's own audit: who ran, requested and approved what, and
changes made outside a change window; the backend's ``audit.log`` admin
actions, read from its container, failed logins first), encryption key
rotation (``rotated KEY`` records one; each key's age against the monthly
rotation), GDPR data retention (rows older than the configured retention,
counted, never deleted) and backup integrity proven by a test restore into a
throwaway database, dropped afterwards.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from bot.adapters.docker import DockerError
from bot.adapters.restore_check import restore_and_count
from bot.catalogue import (
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    Role,
    RunbookEntry,
    Schedule,
    no_more,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UsageError
from bot.incidents import format_duration
from bot.messages import Status, Table
from bot.store.base import AuditEvent

__all__ = [
    "CHANGE_ENDED",
    "CHANGE_STARTED",
    "SPEC",
    "audit_review",
    "backend_audit",
    "backup_integrity",
    "change_windows",
    "compliance",
    "gdpr_retention",
    "key_rotation",
    "parse_backend_audit",
]

# The audit actions that open and close a change window (`change start|done|abort`).
CHANGE_STARTED = "change.start"
CHANGE_ENDED = ("change.done", "change.abort")
_MONTH = timedelta(days=31)
_NOT_CHANGES = frozenset({"command", "propose", "click", "proposal", CHANGE_STARTED, *CHANGE_ENDED})
# How much of the end of the backend's audit.log is read (a month is far less).
_TAIL_BYTES = 4 * 1024 * 1024
_FAILED = re.compile(r"fail|denied|invalid|error|refused", re.IGNORECASE)


# -- audit review: the bot ---------------------------------------------------------------


def change_windows(
    events: Sequence[AuditEvent], *, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The change windows in the audit: from each start to its done/abort (or ``until``)."""
    windows = []
    opened: datetime | None = None
    for e in sorted(events, key=lambda e: e.at):
        if e.action == CHANGE_STARTED and opened is None:
            opened = e.at
        elif e.action in CHANGE_ENDED and opened is not None:
            windows.append((opened, e.at))
            opened = None
    if opened is not None:
        windows.append((opened, until))
    return windows


def _is_change(event: AuditEvent) -> bool:
    """An action the bot performed on the system (an approved proposal's action)."""
    return event.action not in _NOT_CHANGES and "proposal_id" in event.detail


async def audit_review(deps: Deps) -> Outcome:
    now = deps.clock()
    events = await deps.store.audit_between(now - _MONTH, now, limit=1_000_000)
    ran: Counter[str] = Counter()
    requested: Counter[str] = Counter()
    approved: Counter[str] = Counter()
    for e in events:
        if e.action == "command":
            ran[e.actor] += 1
        elif e.action == "propose":
            requested[e.actor] += 1
        elif _is_change(e):
            approved[e.actor] += 1
    actors = sorted(set(ran) | set(requested) | set(approved))
    people = Table(
        title="The bot's audit, last 31 days: who ran, requested and approved what",
        columns=("user", "commands run", "changes requested", "changes approved"),
        rows=tuple((a, str(ran[a]), str(requested[a]), str(approved[a])) for a in actors),
    )
    windows = change_windows(events, until=now)
    changes = [e for e in events if _is_change(e)]
    outside = [e for e in changes if not any(a <= e.at <= b for a, b in windows)]
    details: list[Table] = [people]
    if outside:
        details.append(
            Table(
                title="Changes made outside a change window",
                columns=("when (UTC)", "action", "target", "approved by", "outcome"),
                rows=tuple(
                    (f"{e.at:%Y-%m-%d %H:%M}", e.action, e.target, e.actor, e.outcome)
                    for e in outside
                ),
            )
        )
    summary = (
        f"{len(events)} audit events by {len(actors)} user(s); {len(changes)} change(s), "
        f"{len(outside)} outside a change window"
    )
    return Outcome(Status.WARN if outside else Status.OK, summary, details=tuple(details))


# -- audit review: the backend's audit.log -----------------------------------------------


def _field(record: dict[str, object], *names: str) -> str:
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return str(value)
    return ""


def parse_backend_audit(text: str) -> tuple[Counter[tuple[str, str, bool]], int]:
    """Admin actions counted by (user, action, failed), and the lines that were not JSON."""
    counts: Counter[tuple[str, str, bool]] = Counter()
    unparsed = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            unparsed += 1
            continue
        if not isinstance(record, dict):
            unparsed += 1
            continue
        user = _field(record, "user", "username", "actor", "email") or "(unknown)"
        action = _field(record, "action", "event", "type") or "(unknown)"
        outcome = record.get("success")
        if isinstance(outcome, bool):
            failed = not outcome
        else:
            failed = bool(_FAILED.search(_field(record, "status", "outcome", "result") + action))
        counts[(user, action, failed)] += 1
    return counts, unparsed


async def backend_audit(deps: Deps) -> Outcome:
    """The backend's admin audit, read from its container (no tool needed inside it)."""
    path = deps.settings.sms_backend_audit_log
    try:
        text = await deps.docker.read_tail("backend", path, max_bytes=_TAIL_BYTES, timeout_s=30)
    except DockerError as exc:
        return Outcome(Status.WARN, f"cannot read {path} in the backend container: {exc}")
    counts, unparsed = parse_backend_audit(text)
    ordered = sorted(counts.items(), key=lambda kv: (not kv[0][2], -kv[1], kv[0][0], kv[0][1]))
    table = Table(
        title=f"Backend admin actions ({path}, up to its last 4 MiB), failures first",
        columns=("user", "action", "outcome", "count"),
        rows=tuple(
            (user, action, "FAILED" if failed else "ok", str(n))
            for (user, action, failed), n in ordered
        ),
    )
    failed_logins = sum(
        n for (_u, action, failed), n in counts.items() if failed and "login" in action.lower()
    )
    total = sum(counts.values())
    summary = f"{total} admin action(s), {failed_logins} failed login(s)"
    if unparsed:
        summary += f", {unparsed} line(s) not JSON"
    status = Status.WARN if failed_logins else Status.OK
    return Outcome(status, summary, details=(table,) if counts else ())


# -- key rotation ------------------------------------------------------------------------


async def key_rotation(deps: Deps) -> Outcome:
    now = deps.clock()
    limit = timedelta(days=deps.settings.sms_key_rotation_days)
    last = {r.key: r for r in await deps.store.key_rotations_last()}
    rows = []
    due = []
    for key in deps.settings.sms_keys:
        record = last.get(key)
        if record is None:
            rows.append((key, "never recorded", "-", "DUE"))
            due.append(key)
            continue
        age = now - record.rotated_at
        state = "DUE" if age > limit else "ok"
        if age > limit:
            due.append(key)
        rows.append((key, f"{record.rotated_at:%Y-%m-%d}", f"{age.days} days", state))
    table = Table(
        title=f"Key rotation (every {limit.days} days; record one with `rotated KEY`)",
        columns=("key", "last rotated", "age", "state"),
        rows=tuple(rows),
    )
    if not due:
        return Outcome(
            Status.OK, f"all {len(rows)} keys rotated within {limit.days} days", details=(table,)
        )
    return Outcome(Status.WARN, f"due: {', '.join(due)}", details=(table,))


# -- GDPR retention ----------------------------------------------------------------------


async def gdpr_retention(deps: Deps) -> Outcome:
    rules = deps.settings.sms_gdpr_retention
    if not rules:
        return Outcome(Status.WARN, "no retention configured (SMS_GDPR_RETENTION)")
    now = deps.clock()
    rows = []
    over = 0
    for target, days in rules.items():
        table, column = target.rsplit(".", 1)
        count = await deps.db.count_older(table, column, now - timedelta(days=days))
        if count is None:
            rows.append((table, column, f"{days:g} days", "no such table"))
            continue
        over += count
        rows.append((table, column, f"{days:g} days", str(count)))
    details = Table(
        title="Rows older than their retention (counted, never deleted by the bot)",
        columns=("table", "column", "retention", "rows older"),
        rows=tuple(rows),
    )
    if over:
        return Outcome(Status.WARN, f"{over} row(s) past their retention", details=(details,))
    return Outcome(Status.OK, "no row past its retention", details=(details,))


# -- backup integrity --------------------------------------------------------------------


async def backup_integrity(deps: Deps) -> Outcome:
    files = await deps.backups.newest(1)
    if not files:
        return Outcome(Status.CRIT, f"no backup in {deps.backups.directory} to restore")
    newest = files[0]
    check = await restore_and_count(
        deps.settings.sms_database_url,
        Path(newest.path),
        bin_dir=deps.settings.sms_pg_bin_dir,
        timeout_s=deps.settings.sms_restore_check_timeout_s,
    )
    rows = []
    missing = 0
    for name, restored in check.restored.items():
        live = check.live.get(name)
        if live is None:
            missing += 1
        note = "not in the live database" if live is None else f"{live - restored:+d} since"
        rows.append((name, str(restored), "-" if live is None else str(live), note))
    table = Table(
        title=f"Test restore of {newest.name}: rows restored and live",
        columns=("table", "restored", "live", "difference"),
        rows=tuple(rows),
    )
    if not check.restored:
        return Outcome(Status.CRIT, f"{newest.name} restored no table", details=(table,))
    summary = (
        f"{newest.name} restored into {check.database} in "
        f"{format_duration(check.duration_s)} ({check.duration_s:.1f} s): "
        f"{len(check.restored)} tables, {sum(check.restored.values())} rows; dropped again"
    )
    if missing:
        summary += f"; {missing} table(s) not in the live database"
    return Outcome(Status.WARN if missing else Status.OK, summary, details=(table,))


# -- the report --------------------------------------------------------------------------

_CHECKS = (
    ("Audit review: the bot", audit_review),
    ("Audit review: backend audit.log", backend_audit),
    ("Encryption key rotation", key_rotation),
    ("GDPR data retention", gdpr_retention),
    ("Backup integrity (test restore)", backup_integrity),
)


async def compliance(run: Run) -> None:
    deps = run.deps
    for name, check in _CHECKS:
        timeout = deps.settings.sms_restore_check_timeout_s + 30 if "restore" in name else None
        await run.step(name, check(deps), timeout=timeout)
    statuses = [s.status for s in run.steps]
    bad = sum(1 for s in statuses if s is not Status.OK)
    verdict = (
        f"All {len(statuses)} compliance checks passed"
        if not bad
        else f"{bad} of {len(statuses)} compliance checks need attention"
    )
    lines = [verdict, *(f"{s.status.icon} {s.name}: {s.summary}" for s in run.steps)]
    run.text = "\n".join(lines)


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    no_more(args, "compliance")
    return Invocation(name="compliance", title="Compliance checks", procedure=compliance)


# -- rotated KEY -------------------------------------------------------------------------


def _parse_rotated(args: list[str], ctx: CommandContext) -> Invocation:
    keys = ctx.deps.settings.sms_keys
    usage = "/sms rotated KEY"
    if not args:
        raise UsageError(f"Which key? Known keys: {', '.join(keys)}.", usage=usage)
    key = args[0].upper()
    no_more(args[1:], "rotated KEY")
    if key not in keys:
        raise UsageError(
            f"Unknown key {args[0]!r}. Known keys (SMS_KEYS): {', '.join(keys)}.", usage=usage
        )

    async def procedure(run: Run) -> None:
        async def record() -> Outcome:
            await run.deps.store.key_rotation_add(key, at=run.deps.clock(), by=run.command.user)
            return Outcome(Status.OK, f"{key} rotated, recorded")

        await run.step(f"Record the rotation of {key}", record())
        days = run.deps.settings.sms_key_rotation_days
        run.text = f"Rotation of {key} recorded; next due in {days:g} days."

    return Invocation(name="rotated", title=f"Key rotated: {key}", procedure=procedure)


SPEC = ProcedureSpec(
    name="compliance",
    summary="The runbook's monthly compliance checks, and key rotations",
    commands=(
        CommandSpec(
            "compliance",
            usage="compliance",
            summary="Audit review, key rotation, GDPR retention, a test restore of the backup",
            parse=_parse,
        ),
        CommandSpec(
            "rotated",
            usage="rotated KEY",
            summary="Record that an encryption key or password was rotated (operators)",
            parse=_parse_rotated,
            role=Role.OPERATOR,
        ),
    ),
    schedules=(
        Schedule(
            job="compliance",
            title="Compliance checks",
            cron_setting="sms_compliance_cron",
            procedure=compliance,
        ),
    ),
    runbook=(
        RunbookEntry(
            "Audit & compliance",
            "monthly (first Monday)",
            "audit review, key rotation, GDPR retention, backup integrity by a test restore",
        ),
    ),
)
