"""``change start|done|abort``: the runbook's Production Change Procedure as a thread.

``change start "DESCRIPTION" [--critical] [--silence ALERTNAME]`` announces
the change in SLACK_ALERT_CHANNEL and in Teams where configured (through the
fan-out surface incidents and reports use, whichever surface took the
command; a terminal's stays on the terminal): who, what, the kind and, for a
critical change, the runbook's extra steps. It records the state before it (the five
health checks, p95, error rate), may silence an alert the change will fire
(a real Alertmanager silence, expired when the change ends) and proposes the
pre-change backup. ``change done`` starts the watch in the change's thread:
the five checks every minute for 15 minutes (critical: 60), a degradation
reported at once with the rollback (the pre-change backup and the restore
command), a verdict against the state before at the end. ``change abort``
ends it. Every change gets a markdown record beside the incident records.
One change is open at a time (the store's rule).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bot.adapters.alertmanager import AlertmanagerError
from bot.adapters.backups import BackupError
from bot.baseline import baseline_metrics
from bot.catalogue import CommandContext, CommandSpec, Invocation, ProcedureSpec, Role
from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UsageError, UserError
from bot.events import Command
from bot.messages import Conversation, Message, Status
from bot.store.base import Change
from bot.threads import ThreadRef
from procedures.backup_freshness import propose_manual_backup
from procedures.checks import (
    check_backups,
    check_containers,
    check_database,
    check_health_endpoint,
    check_performance,
)
from procedures.compliance import CHANGE_STARTED
from procedures.health import CHECKS

__all__ = ["SPEC", "Snapshot", "degradations", "snapshot", "watch_minutes"]

_CHECK_WORK = {
    "containers": check_containers,
    "health": check_health_endpoint,
    "performance": check_performance,
    "database": check_database,
    "backups": check_backups,
}
_CRITICAL_STEPS = (
    "Schedule the maintenance window off-hours",
    "Notify users 24 hours in advance",
    "Create a full backup (proposed below; required before `change done`)",
    "Test in staging first",
    "Apply with the rollback plan ready",
    "Extended monitoring: 1 hour (`change done` starts it)",
    "Post-change review",
)
_SILENCE_HOURS = {False: 1, True: 4}
_USAGE = '/sms change start "DESCRIPTION" [--critical] [--silence ALERTNAME]'
_RANK = {Status.OK: 0, Status.WARN: 1, Status.CRIT: 2, Status.FAILED: 3}

Snapshot = dict[str, Any]  # {"checks": {name: status}, "p95_ms": x, "error_rate_pct": y}


def watch_minutes(deps: Deps, critical: bool) -> float:
    """15 minutes (critical: 60), or ``SMS_CHANGE_WATCH_MIN`` when set (tests shorten it)."""
    configured = deps.settings.sms_change_watch_min
    if configured:
        return configured
    return 60.0 if critical else 15.0


async def snapshot(deps: Deps) -> Snapshot:
    """The five checks' statuses, p95 and error rate now."""
    outcomes = await asyncio.gather(
        *(_CHECK_WORK[key](deps) for key, _name in CHECKS), return_exceptions=True
    )
    checks = {
        name: outcome.status.value if isinstance(outcome, Outcome) else Status.FAILED.value
        for (_key, name), outcome in zip(CHECKS, outcomes, strict=True)
    }
    metrics = {m.key: m for m in baseline_metrics(deps.settings)}
    figures: dict[str, float | None] = {}
    for key in ("p95_ms", "error_rate_pct"):
        try:
            figures[key] = await deps.prometheus.scalar(metrics[key].query)
        except Exception:  # a figure that cannot be read is "no data", not a crash of the watch
            figures[key] = None
    return {"checks": checks, **figures}


def degradations(before: Snapshot, now: Snapshot, deps: Deps) -> list[str]:
    """What is worse than before: a check's status, p95 or error rate past its alert line."""
    found = []
    for name, status in now["checks"].items():
        was = before.get("checks", {}).get(name, Status.OK.value)
        if _RANK.get(Status(status), 0) > _RANK.get(Status(was), 0):
            found.append(f"{name}: {was} → {status}")
    metrics = {m.key: m for m in baseline_metrics(deps.settings)}
    for key, label in (("p95_ms", "p95"), ("error_rate_pct", "error rate")):
        value, was = now.get(key), before.get(key)
        line = metrics[key].threshold.warn
        if value is not None and value > line and (was is None or value > was):
            unit = " ms" if key == "p95_ms" else " %"
            shown = "no data" if was is None else f"{was:.1f}{unit}"
            found.append(f"{label}: {shown} → {value:.1f}{unit}")
    return found


def _parse_start(args: list[str]) -> tuple[str, bool, tuple[str, ...]]:
    critical = False
    silences: list[str] = []
    words: list[str] = []
    rest = list(args)
    while rest:
        word = rest.pop(0)
        if word == "--critical":
            critical = True
        elif word == "--silence":
            if not rest:
                raise UsageError("--silence needs an alert name.", usage=_USAGE)
            silences.append(rest.pop(0))
        else:
            words.append(word)
    description = " ".join(words).strip().strip("\"'“”").strip()
    if not description:
        raise UsageError("What is the change? Describe it in quotes.", usage=_USAGE)
    if len(description) > 200:
        raise UsageError("The description is longer than 200 characters.", usage=_USAGE)
    for name in silences:
        if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", name):
            raise UsageError(f"{name!r} is not an alert name.", usage=_USAGE)
    return description, critical, tuple(silences)


# Commands typed in these announce in the team's alert channel; a terminal's
# (``sms-bot run``, ``shell``) stays where it is watched.
_CHAT_SURFACES = frozenset({"slack", "teams"})


def _alert_place(
    dispatcher: Any, cmd: Command, surface: ChatSurface
) -> tuple[ChatSurface, Conversation]:
    """Where ``change start`` announces: SLACK_ALERT_CHANNEL and Teams, where configured.

    The dispatcher's alert channel is the fan-out surface incidents and
    reports use, so the announcement (and the change thread, which is its
    thread) is on Slack and Teams whichever of them took the command.
    """
    team = dispatcher.alert_channel
    if team is not None and surface.name in _CHAT_SURFACES:
        return team.surface, team.conversation
    settings = dispatcher.deps.settings
    channel = {"slack": settings.slack_alert_channel, "teams": settings.teams_alert_channel}.get(
        surface.name, ""
    )
    if not channel:
        return surface, cmd.conversation
    return surface, Conversation(cmd.conversation.surface, channel)


def _kind(critical: bool) -> str:
    return (
        "critical (more than 5 minutes of downtime)"
        if critical
        else ("non-critical (under 5 minutes of downtime)")
    )


async def _audit(deps: Deps, run: Run, action: str, change: Change, outcome: str) -> None:
    await deps.audit.record(
        at=deps.clock(),
        actor=run.command.user,
        source=run.command.source,
        action=action,
        target=change.description,
        outcome=outcome,
        conversation=run.command.conversation.channel,
        detail={"change_id": change.id, "critical": change.critical},
    )


# -- change start ------------------------------------------------------------------------


async def _start(run: Run, *, description: str, critical: bool, silences: tuple[str, ...]) -> None:
    deps = run.deps
    now = deps.clock()
    change = Change(
        id=uuid.uuid4().hex,
        description=description,
        critical=critical,
        started_by=run.command.user,
        started_at=now,
    )

    async def record() -> Outcome:
        opened = await deps.store.change_start(change)
        if opened.id != change.id:
            raise UserError(
                f"A change is already open: {opened.description!r} by {opened.started_by} "
                f"since {opened.started_at:%Y-%m-%d %H:%M} UTC. End it first with "
                "`/sms change done` or `/sms change abort`."
            )
        return Outcome(Status.OK, f"change {change.id[:8]} opened")

    opened = await run.step("Open the change window", record())
    if opened is None:
        run.error = run.steps[-1].summary
        return
    await _audit(deps, run, CHANGE_STARTED, change, "open")
    if run.ref is not None:
        await deps.store.change_update(change.id, conversation=ThreadRef.of(run.ref).encode())

    async def before() -> Outcome:
        state = await snapshot(deps)
        await deps.store.change_update(change.id, before=json.dumps(state))
        bad = [name for name, s in state["checks"].items() if s != Status.OK.value]
        summary = "all 5 checks pass" if not bad else f"needing attention already: {', '.join(bad)}"
        p95, err = state.get("p95_ms"), state.get("error_rate_pct")
        summary += f"; p95 {'no data' if p95 is None else f'{p95:.0f} ms'}"
        summary += f", error rate {'no data' if err is None else f'{err:.2f} %'}"
        return Outcome(Status.OK, summary, details=())

    await run.step("Record the state before the change", before())
    silenced: list[str] = []
    silence_ids: list[str] = []
    for name in silences:

        async def silence(alertname: str = name) -> Outcome:
            ends = deps.clock() + timedelta(hours=_SILENCE_HOURS[critical])
            silence_id = await deps.alertmanager.create_silence(
                matchers={"alertname": alertname},
                starts_at=deps.clock(),
                ends_at=ends,
                created_by=f"sms-bot for {run.command.user}",
                comment=f"change: {description}",
            )
            # Every silence is kept (comma-separated): each is expired when the change ends.
            silence_ids.append(silence_id)
            await deps.store.change_update(change.id, silence_id=",".join(silence_ids))
            return Outcome(Status.OK, f"silenced until {ends:%H:%M} UTC or the change's end")

        if await run.step(f"Silence {name} during the change", silence()) is not None:
            silenced.append(name)
    lines = [
        f"Change by {run.command.user}: {description}",
        f"Kind: {_kind(critical)}. Watch after `/sms change done`: "
        f"{watch_minutes(deps, critical):g} minutes.",
    ]
    if critical:
        lines.append("Runbook, critical changes:")
        lines.extend(f"  {i}. {step}" for i, step in enumerate(_CRITICAL_STEPS, start=1))
    if silenced:
        lines.append(f"Silenced while it lasts: {', '.join(silenced)}.")
    lines.append(
        "A pre-change backup is proposed below"
        + (" and must have run before `change done`." if critical else ".")
    )
    run.text = "\n".join(lines)
    await propose_manual_backup(run, reason="\n".join(lines))
    run.text = "\n".join(lines)


# -- change done: the watch --------------------------------------------------------------


async def _newest_backup_since(deps: Deps, since: datetime) -> str | None:
    """The backup taken since the change started, if any.

    A backup folder that is missing or unreadable means no pre-change backup:
    the change can still be watched (a critical one is refused for it) or
    aborted, rather than left open by a failed run.
    """
    try:
        files = await deps.backups.newest(1)
    except BackupError:
        return None
    if files and files[0].modified >= since:
        return files[0].name
    return None


async def _end(
    run: Run, change: Change, *, status: str, verdict: str, rounds: list[str], backup: str | None
) -> None:
    deps = run.deps
    ended = await deps.store.change_end(change.id, status=status, at=deps.clock())
    if ended is None:
        raise UserError("The change was ended already (by someone else).")
    for silence_id in filter(None, (change.silence_id or "").split(",")):
        try:
            await deps.alertmanager.expire_silence(silence_id)
        except AlertmanagerError as exc:
            await run.reply(
                Message(
                    title=f"Could not expire the change's silence {silence_id}: {exc}",
                    status=Status.WARN,
                )
            )
    await _audit(deps, run, f"change.{'done' if status == 'done' else 'abort'}", change, status)
    path = await asyncio.to_thread(_write_record, deps, ended, verdict, rounds, backup)
    run.fields.clear()
    run.text = f"{verdict}\nRecord: {path}"


def _write_record(
    deps: Deps, change: Change, verdict: str, rounds: list[str], backup: str | None
) -> str:
    folder = Path(deps.settings.sms_incidents_dir)
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", change.description.lower()).strip("-")[:40] or "change"
    path = folder / f"change-{change.started_at:%Y%m%d-%H%M}-{slug}.md"
    ended = change.ended_at
    text = "\n".join(
        [
            f"# Change: {change.description}",
            "",
            f"- Kind: {_kind(change.critical)}",
            f"- Who: {change.started_by}",
            f"- Started: {change.started_at:%Y-%m-%d %H:%M:%S} UTC",
            f"- Ended: {ended:%Y-%m-%d %H:%M:%S} UTC ({change.status})" if ended else "- Ended: -",
            f"- Pre-change backup: {backup or 'none recorded'}",
            f"- Silence: {change.silence_id or 'none'}",
            f"- State before: `{change.before}`",
            "",
            "## Watch",
            "",
            *(f"- {line}" for line in rounds),
            *([] if rounds else ["- (no watch)"]),
            "",
            "## Verdict",
            "",
            verdict,
            "",
        ]
    )
    path.write_text(text)
    return str(path)


async def _watch(run: Run, change: Change) -> None:
    deps = run.deps
    backup = await _newest_backup_since(deps, change.started_at)
    if change.critical and backup is None:
        raise UserError(
            "A critical change needs its pre-change backup before `change done`: approve the "
            "proposed backup in the change thread (or run `/sms backup`), then try again."
        )
    before: Snapshot = json.loads(change.before or "{}")
    minutes = watch_minutes(deps, change.critical)
    interval = min(deps.settings.sms_change_watch_interval_s, minutes * 60)
    rounds_total = max(1, round(minutes * 60 / interval))
    rollback = (
        f"Rollback: restore the pre-change backup {backup} (`/sms restore {backup}`)."
        if backup
        else "Rollback: no pre-change backup was taken; restore the newest (`/sms restore`)."
    )
    rounds: list[str] = []
    reported: set[str] = set()
    worst_seen: list[str] = []
    for n in range(1, rounds_total + 1):
        worse: list[str] = []
        outcome = await run.step(
            f"Watch {n}/{rounds_total}",
            _round(deps, before, worse),
            timeout=2 * deps.settings.sms_check_timeout_s,
        )
        stamp = f"{deps.clock():%H:%M:%S}"
        if outcome is None:
            rounds.append(f"{stamp} round {n}: could not check ({run.steps[-1].summary})")
        else:
            rounds.append(f"{stamp} round {n}: {outcome.summary}")
            new = [w for w in worse if w.split(":")[0] not in reported]
            if new:
                reported.update(w.split(":")[0] for w in new)
                worst_seen.extend(new)
                await run.reply(
                    Message(
                        title="Degradation during the change watch",
                        status=Status.CRIT,
                        text=f"{'; '.join(new)}\n{rollback}",
                    )
                )
        if n < rounds_total:
            await asyncio.sleep(interval)
    if worst_seen:
        verdict = (
            f"Degraded after the change ({len(worst_seen)} finding(s): {'; '.join(worst_seen)}). "
            f"{rollback}"
        )
    else:
        verdict = f"No degradation in {minutes:g} minutes: health, p95 and error rate as before."
    await _end(run, change, status="done", verdict=verdict, rounds=rounds, backup=backup)


async def _round(deps: Deps, before: Snapshot, worse: list[str]) -> Outcome:
    """One round of the watch; what is worse than before is added to ``worse``."""
    state = await snapshot(deps)
    worse.extend(degradations(before, state, deps))
    checks_ok = sum(1 for s in state["checks"].values() if s == Status.OK.value)
    p95, err = state.get("p95_ms"), state.get("error_rate_pct")
    figures = (
        f"{checks_ok}/5 checks ok, p95 {'no data' if p95 is None else f'{p95:.0f} ms'}, "
        f"error rate {'no data' if err is None else f'{err:.2f} %'}"
    )
    summary = figures if not worse else f"DEGRADED: {'; '.join(worse)} ({figures})"
    return Outcome(Status.CRIT if worse else Status.OK, summary)


async def _abort(run: Run, change: Change) -> None:
    backup = await _newest_backup_since(run.deps, change.started_at)
    await _end(
        run,
        change,
        status="aborted",
        verdict=f"Change aborted by {run.command.user}.",
        rounds=[],
        backup=backup,
    )


# -- commands ----------------------------------------------------------------------------


async def _no_change(run: Run) -> None:
    raise UserError('No change is open: start one with `/sms change start "DESCRIPTION"`.')


async def _in_alert_channel(
    dispatcher: Any, cmd: Command, surface: ChatSurface, *, args: list[str]
) -> None:
    description, critical, silences = _parse_start(args)
    announce, where = _alert_place(dispatcher, cmd, surface)
    await dispatcher.engine.execute(
        partial(_start, description=description, critical=critical, silences=silences),
        name="change",
        title=f"Change: {description}",
        command=replace(cmd, conversation=where),
        surface=announce,
    )


async def _in_change_thread(
    dispatcher: Any, cmd: Command, surface: ChatSurface, *, abort: bool
) -> None:
    deps = dispatcher.deps
    change = await deps.store.change_current()
    if change is None:
        await dispatcher.engine.execute(
            _no_change, name="change", title="Change", command=cmd, surface=surface
        )
        return
    parent = None
    command = cmd
    if change.conversation:
        # The thread is on this surface, or on the team's alert channel (Slack and Teams).
        thread = ThreadRef.decode(change.conversation)
        team = dispatcher.alert_channel
        places = {cmd.conversation.surface: surface}
        if team is not None and surface.name in _CHAT_SURFACES:
            places[team.surface.name] = team.surface
        if thread.conversation.surface in places:
            surface = places[thread.conversation.surface]
            parent = thread.root
            command = replace(cmd, conversation=thread.conversation)
    title = "Change aborted" if abort else f"Change watch: {change.description}"
    await dispatcher.engine.execute(
        partial(_abort if abort else _watch, change=change),
        name="change",
        title=title,
        command=command,
        surface=surface,
        parent=parent,
    )


def _parse(args: list[str], ctx: CommandContext, *, verb: str) -> Invocation:
    if verb == "start":
        _parse_start(args)  # usage errors now, before anything runs
        return Invocation(name="change", direct=partial(_in_alert_channel, args=list(args)))
    if args:
        raise UsageError(f"Unexpected argument {' '.join(args)!r}.", usage=f"/sms change {verb}")
    return Invocation(name="change", direct=partial(_in_change_thread, abort=verb == "abort"))


# The three verbs of ``/sms change``: one command each, all parsed by ``_parse``.
_VERBS: tuple[tuple[str, str, str], ...] = (
    (
        "start",
        'change start "DESCRIPTION" [--critical] [--silence ALERTNAME]',
        "Announce a change, record the state before it, propose the backup",
    ),
    (
        "done",
        "change done",
        "Watch the five checks after the change (15 min, critical 60), then record",
    ),
    ("abort", "change abort", "End the open change without a watch, and record it"),
)

SPEC = ProcedureSpec(
    name="change_window",
    summary="The runbook's production change procedure: announce, back up, watch, record",
    commands=tuple(
        CommandSpec(
            f"change {verb}",
            usage=usage,
            summary=summary,
            parse=partial(_parse, verb=verb),
            role=Role.OPERATOR,
        )
        for verb, usage, summary in _VERBS
    ),
)
