"""Container Won't Start (runbook, Common Issues): diagnose, then propose starting it.

The runbook's diagnosis is ``docker logs <c> --tail 50`` and ``docker inspect <c>``,
then its solutions: port conflicts, volume permissions, environment variables,
rebuild. The bot reads the same facts (logs redacted, environment values
masked), names the likely cause, and offers to start the container; it never
rebuilds an image, it shows the ``docker compose build`` command instead.
``status`` runs this diagnosis by itself for a configured container that is
exited or restarting.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import time
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path

from bot.adapters.docker import ContainerDetails
from bot.alerts import Alert
from bot.catalogue import (
    ActionSpec,
    AlertSpec,
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    Role,
    RunbookEntry,
    no_more,
    service_arg,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UserError
from bot.messages import CodeBlock, Field, Status, Table
from bot.redact import redact

__all__ = [
    "SPEC",
    "START",
    "START_ACTION",
    "StartArgs",
    "diagnose",
    "diagnose_alert",
    "diagnosis_steps",
    "start_action",
]

START_ACTION = "start_container"
LOG_LINES = 50
_POLL_S = 1.0
_USAGE = "diagnose SERVICE"
# Log lines that point at a cause, as the runbook's solutions name them.
_LOG_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"address (already )?in use|EADDRINUSE", re.I), "a port is already in use"),
    (re.compile(r"permission denied|EACCES", re.I), "permission denied (volume permissions?)"),
    (re.compile(r"out of memory|OOM|Cannot allocate memory", re.I), "out of memory"),
    (
        re.compile(r"(environment variable|env var).*(not set|missing|required)|KeyError", re.I),
        "a missing environment variable",
    ),
    (re.compile(r"no such file or directory|ENOENT", re.I), "a missing file or directory"),
)


@dataclass(frozen=True)
class Facts(Outcome):
    """The inspect step's outcome, with the facts later steps read."""

    facts: ContainerDetails | None = None


@dataclass(frozen=True)
class Findings(Outcome):
    """A step's outcome with the causes it found (one line each)."""

    causes: tuple[str, ...] = ()


def _when(facts: ContainerDetails) -> str:
    started = f"{facts.started_at:%Y-%m-%d %H:%M:%S}" if facts.started_at else "never"
    finished = f"{facts.finished_at:%Y-%m-%d %H:%M:%S}" if facts.finished_at else "-"
    return f"started {started} UTC, finished {finished} UTC"


async def _inspect(deps: Deps, service: str) -> Facts:
    facts = await deps.docker.inspect(service)
    healthy = facts.state == "running" and facts.health != "unhealthy"
    status = Status.OK if healthy and not _restarting(facts, deps.clock()) else Status.CRIT
    fields = (
        Field("State", f"{facts.state}{f', {facts.health}' if facts.health else ''}", status),
        Field("Exit code", str(facts.exit_code)),
        Field("OOMKilled", "yes" if facts.oom_killed else "no"),
        Field("Restarts", f"{facts.restart_count} (policy {facts.restart_policy})"),
        Field("Started / finished", _when(facts)),
    )
    details: tuple[CodeBlock | Table, ...] = ()
    if facts.health_log:
        text = "\n".join(f"exit {p.exit_code}: {redact(p.output)[:300]}" for p in facts.health_log)
        details = (CodeBlock(f"{facts.name}: last health checks", text),)
    summary = f"{facts.name}: {facts.state}, exit code {facts.exit_code}, "
    summary += f"{facts.restart_count} restarts, OOMKilled {'yes' if facts.oom_killed else 'no'}"
    if facts.error:
        summary += f", error: {facts.error[:160]}"
    return Facts(status, summary, fields=fields, details=details, facts=facts)


async def _logs(deps: Deps, service: str) -> Findings:
    text = redact(await deps.docker.logs(service, tail=LOG_LINES))
    lines = text.splitlines()
    causes = tuple(
        dict.fromkeys(
            f"the log says {what}"
            for line in lines
            for pattern, what in _LOG_CAUSES
            if pattern.search(line)
        )
    )
    name = deps.docker.container_name(service)
    block = CodeBlock(f"{name}: last {LOG_LINES} log lines", text or "(no output)")
    summary = f"{len(lines)} lines" + (f"; {', '.join(causes)}" if causes else "")
    return Findings(Status.WARN if causes else Status.OK, summary, details=(block,), causes=causes)


def _bound_on_host(port: int) -> bool:
    """Can the bot see ``port`` taken? (Only on its own network namespace.)"""
    for host in ("0.0.0.0", "127.0.0.1"):  # noqa: S104 (a probe, closed at once)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


async def _ports(deps: Deps, facts: ContainerDetails) -> Findings:
    if not facts.ports:
        return Findings(Status.OK, "the container publishes no host port")
    uses = await deps.docker.port_users()
    causes: list[str] = []
    for port in facts.ports:
        others = sorted({u.container for u in uses if u.port == port and u.container != facts.name})
        if others:
            causes.append(f"port {port} is taken by another container: {', '.join(others)}")
        elif facts.state != "running" and await asyncio.to_thread(_bound_on_host, port):
            causes.append(
                f"port {port} is already bound on the host (netstat -ano | findstr :{port})"
            )
    ports = ", ".join(str(p) for p in facts.ports)
    if not causes:
        return Findings(Status.OK, f"no conflict on port {ports}")
    return Findings(Status.CRIT, "; ".join(causes), causes=tuple(causes))


def _missing_sources(facts: ContainerDetails) -> list[str]:
    return [m.source for m in facts.mounts if m.type == "bind" and not Path(m.source).exists()]


async def _mounts(facts: ContainerDetails) -> Findings:
    if not facts.mounts:
        return Findings(Status.OK, "no mounts")
    missing = await asyncio.to_thread(_missing_sources, facts)
    table = Table(
        title=f"{facts.name}: mounts",
        columns=("type", "source", "destination", "source exists"),
        rows=tuple(
            (m.type, m.source, m.destination, "no" if m.source in missing else "yes")
            for m in facts.mounts
        ),
    )
    if missing:
        causes = tuple(f"mount source {src} is missing" for src in missing)
        return Findings(Status.CRIT, "; ".join(causes), details=(table,), causes=causes)
    return Findings(Status.OK, f"{len(facts.mounts)} mounts, every source there", details=(table,))


async def _env(facts: ContainerDetails) -> Outcome:
    names = sorted(set(facts.env_names))
    text = "\n".join(f"{name}=****" for name in names) or "(none)"
    return Outcome(
        Status.OK,
        f"{len(names)} variables (values masked)",
        details=(CodeBlock(f"{facts.name}: environment, values masked", text),),
    )


def build_command(facts: ContainerDetails, service: str) -> str:
    compose_service = facts.labels.get("com.docker.compose.service", service)
    return f"docker compose build {compose_service}"


async def diagnosis_steps(run: Run, *, service: str) -> tuple[ContainerDetails | None, list[str]]:
    """The diagnosis as steps; returns the facts and the causes found."""
    deps = run.deps
    inspected = await run.step(
        f"Inspect {deps.docker.container_name(service)} (docker inspect)", _inspect(deps, service)
    )
    logs = await run.step(f"Last {LOG_LINES} log lines", _logs(deps, service))
    facts = inspected.facts if isinstance(inspected, Facts) else None
    causes: list[str] = []
    if isinstance(inspected, Facts):
        causes += _inspect_causes(inspected, deps.clock())
    if facts is not None:
        ports = await run.step("Port conflicts", _ports(deps, facts))
        mounts = await run.step("Mounts with a missing source", _mounts(facts))
        await run.step("Environment variables (names only)", _env(facts))
        for found in (ports, mounts):
            if isinstance(found, Findings):
                causes += found.causes
    if isinstance(logs, Findings):
        causes += logs.causes
    return facts, causes


# A restart loop is seen "running" for a moment between two restarts: a container
# restarted by its policy that started this recently counts as restarting.
_RECENT_START_S = 60.0


def _restarting(facts: ContainerDetails, now: datetime) -> bool:
    if facts.state == "restarting":
        return True
    if not facts.restart_count:
        return False
    if facts.state != "running" or facts.started_at is None:
        return True
    return (now - facts.started_at).total_seconds() < _RECENT_START_S


def _inspect_causes(inspected: Facts, now: datetime) -> list[str]:
    facts = inspected.facts
    if facts is None:
        return []
    causes: list[str] = []
    if facts.oom_killed:
        causes.append("killed for lack of memory (OOMKilled)")
    if _restarting(facts, now):
        causes.append(
            f"keeps restarting ({facts.restart_count} restarts), last exit code {facts.exit_code}"
        )
    elif facts.state in ("exited", "dead"):
        causes.append(f"exited with code {facts.exit_code}")
    if facts.error:
        causes.append(f"the engine says: {facts.error}")
    return causes


_RUNBOOK = (
    "Runbook (Container Won't Start): 1. check port conflicts, 2. check volume permissions, "
    "3. verify environment variables, 4. rebuild the image."
)


async def diagnose(run: Run, *, service: str, propose: bool = True) -> None:
    deps = run.deps
    container = deps.docker.container_name(service)
    facts, causes = await diagnosis_steps(run, service=service)
    lines: list[str] = []
    if causes:
        lines.append(f"{container}: " + "; ".join(dict.fromkeys(causes)) + ".")
    elif facts is not None and facts.state == "running":
        lines.append(f"{container} is running; nothing points at a start problem.")
    if facts is not None and facts.state == "running" and _restarting(facts, deps.clock()):
        facts = replace(facts, state="restarting")  # between two restarts: do not propose
    else:
        lines.append(f"{container}: no cause found in its logs and inspect facts.")
    lines.append(_RUNBOOK)
    if facts is not None:
        lines.append(
            f"The bot never rebuilds images; to rebuild, run `{build_command(facts, service)}` "
            "where the compose file is."
        )
    run.text = "\n".join(lines)
    if not propose or facts is None or facts.state == "running":
        return
    if facts.state == "restarting":
        run.text += (
            "\nNot proposing a start: it is already being restarted by its policy; fix the "
            "cause first."
        )
        return
    await run.propose(
        action=START.name,
        args=START.encode(StartArgs(container=container, service=service)),
        summary=f"start container {container} (service {service})",
        confirm_label=f"Start {container}",
        note=(
            f"On approval the bot runs `docker start {container}` and waits until it runs "
            f"(at most {deps.settings.sms_recovery_timeout_s:g} s). Fix the cause above first, "
            "or it will stop again."
        ),
    )
    run.text += f"\nProposed: start {container}. Waiting for an approver's click."


async def _until_running(deps: Deps, service: str, deadline: float) -> Outcome:
    last = "unknown"
    while time.monotonic() < deadline:
        facts = await deps.docker.inspect(service)
        last = f"{facts.state}, exit code {facts.exit_code}"
        if facts.state == "running":
            return Outcome(Status.OK, f"{facts.name} running")
        if facts.state in ("exited", "dead"):
            return Outcome(Status.CRIT, f"{facts.name} stopped again: {last}")
        await asyncio.sleep(_POLL_S)
    return Outcome(Status.CRIT, f"still {last} when the wait ended")


async def start_action(run: Run, *, service: str, container: str) -> None:
    deps = run.deps
    if deps.settings.sms_services.get(service) != container:
        raise UserError(
            f"Not starting: the configuration no longer maps {service} to {container}. "
            f"Run /sms diagnose {service} again."
        )
    started = await run.step(f"Start {container}", deps.docker.start(service), timeout=60)
    if started is None:
        run.text = f"{container} could not be started: {run.steps[-1].summary}"
        return
    timeout = deps.settings.sms_recovery_timeout_s
    running = await run.step(
        "Wait until it runs",
        _until_running(deps, service, time.monotonic() + timeout),
        timeout=timeout + 5,
    )
    if running is not None and running.status is Status.OK:
        run.text = f"{container} is running."
    else:
        run.text = f"{container} did not stay up; run /sms diagnose {service} for the cause."


@dataclass(frozen=True)
class StartArgs:
    container: str
    service: str


async def _approved(run: Run, args: StartArgs) -> None:
    await start_action(run, service=args.service, container=args.container)


START: ActionSpec[StartArgs] = ActionSpec(
    name=START_ACTION,
    args=StartArgs,
    run=_approved,
    title=lambda a: f"Starting {a.container}",
    target=lambda a: a.container,
    confirm_label=lambda a: f"Start {a.container}",
)


async def diagnose_alert(run: Run, *, alert: Alert | None = None) -> None:
    """ContainerRestarting: diagnose the container the alert names, or every broken one."""
    labels = alert.labels if alert is not None else {}
    by_container = {c: s for s, c in run.deps.settings.sms_services.items()}
    for key in ("service", "name", "container", "container_name"):
        value = labels.get(key, "")
        service = value if value in run.deps.settings.sms_services else by_container.get(value)
        if service:
            await diagnose(run, service=service)
            return
    overview = await run.deps.docker.overview()
    broken = [
        i.service
        for i in overview.not_running
        if i.service and i.state in ("exited", "dead", "restarting")
    ]
    if not broken:
        run.text = "The alert names no configured container, and none is exited or restarting."
        return
    for service in broken:
        await diagnose(run, service=service)


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    service = service_arg(args, ctx.deps, _USAGE)
    no_more(args[1:], _USAGE)
    return Invocation(
        name="diagnose",
        title=f"Why won't {service} start?",
        procedure=partial(diagnose, service=service),
    )


SPEC = ProcedureSpec(
    name="diagnose",
    summary="Container Won't Start: logs, inspect facts, ports, mounts, env; propose a start",
    commands=(
        CommandSpec(
            "diagnose",
            usage=_USAGE,
            summary="Why a container is exited or restarting; offer to start it",
            parse=_parse,
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    alert=AlertSpec(
        alertnames=("ContainerRestarting",),
        priority="P1",
        title="P1 Container restarting: diagnosis",
        bind=lambda alert: partial(diagnose_alert, alert=alert),
    ),
    action=START,
    runbook=(
        RunbookEntry(
            "Container won't start",
            "status shows a container missing, exited or restarting",
            "last 50 log lines, inspect facts, port conflicts, mounts, env names; start",
        ),
    ),
)
