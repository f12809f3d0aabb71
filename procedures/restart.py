"""Restart a service's container: propose after a look, act after an approval.

``restart_proposal`` is the runbook's P0 steps 1-2 (container status, last
log lines) followed by a proposal; ``restart_action`` is steps 4-5: the
restart, then waiting until the container runs and ``/health`` is healthy
again. When it does not recover the thread shows the runbook's escalation.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from bot.adapters.docker import ContainerInfo
from bot.adapters.http_health import HealthCheckError
from bot.catalogue import (
    ActionSpec,
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    Role,
    no_more,
    service_arg,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UserError
from bot.messages import CodeBlock, Status
from bot.redact import redact
from bot.store.base import Proposal

__all__ = [
    "ESCALATION",
    "RESTART",
    "RESTART_ACTION",
    "SPEC",
    "RestartArgs",
    "propose_restart",
    "recent_restarts",
    "restart_action",
    "restart_proposal",
    "until_healthy",
]

RESTART_ACTION = "restart"
ESCALATION = (
    "Escalation (runbook, Backend Down): if the restart does not resolve it, "
    "a full system rollback is next."
)
_POLL_S = 1.0


async def recent_restarts(deps: Deps, container: str) -> int:
    """Restarts the bot did on ``container`` within ``SMS_RESTART_WINDOW_MIN``."""
    since = deps.clock() - timedelta(minutes=deps.settings.sms_restart_window_min)
    return await deps.store.count_audit(
        action=RESTART_ACTION, target=container, since=since, outcomes=("ok", "failed")
    )


async def _look(deps: Deps, service: str) -> Outcome:
    info = await deps.docker.status(service)
    health = f", {info.health}" if info.health else ""
    status = Status.OK if info.running and info.health != "unhealthy" else Status.CRIT
    return Outcome(status, f"{info.name}: {info.state}{health} ({info.status_text})")


async def _tail(deps: Deps, service: str) -> Outcome:
    text = redact(await deps.docker.logs(service, tail=20))
    lines = text.splitlines()
    return Outcome(
        Status.OK,
        f"{len(lines)} lines",
        details=(CodeBlock(f"{deps.docker.container_name(service)}: last lines", text),),
    )


async def _limit(deps: Deps, container: str) -> Outcome:
    done = await recent_restarts(deps, container)
    limit = deps.settings.sms_restart_limit
    window = deps.settings.sms_restart_window_min
    summary = f"{done} of {limit} restarts used in the last {window:g} minutes"
    return Outcome(Status.OK if done < limit else Status.WARN, summary)


async def restart_proposal(run: Run, *, service: str) -> None:
    deps = run.deps
    deps.docker.container_name(service)  # an unknown service is a usage error, before any step
    await run.step("Check container status", _look(deps, service))
    await run.step("Tail the last log lines", _tail(deps, service))
    await propose_restart(run, service=service)


async def propose_restart(run: Run, *, service: str) -> Proposal | None:
    """Check the restart limit, then propose restarting ``service``'s container.

    Sets ``run.text`` to what happened: proposed, or not (limit reached or
    not checkable) with the runbook's escalation. Shared by ``restart`` and
    the Backend Down procedure, so both obey the same limit.
    """
    deps = run.deps
    container = deps.docker.container_name(service)
    allowed = await run.step("Check the restart limit", _limit(deps, container))
    if not isinstance(allowed, Outcome) or allowed.status is not Status.OK:
        run.text = (
            f"Not proposing a restart of {container}: restarting it again is unlikely to "
            f"help.\n{ESCALATION}"
        )
        return None
    proposal = await run.propose(
        action=RESTART.name,
        args=RESTART.encode(RestartArgs(container=container, service=service)),
        summary=f"restart container {container} (service {service})",
        confirm_label=f"Restart {container}",
        note=(
            f"On approval the bot runs `docker restart {container}`, then waits until it "
            f"is running and {deps.settings.sms_health_url} reports healthy "
            f"(at most {deps.settings.sms_recovery_timeout_s:g} s)."
        ),
    )
    run.text = f"Proposed: restart {container}. Waiting for an approver's click."
    return proposal


async def _restart(deps: Deps, service: str) -> Outcome:
    info = await deps.docker.restart(service)
    return Outcome(Status.OK, f"{info.name} restarted ({info.state})")


async def _until_running(deps: Deps, service: str, deadline: float) -> Outcome:
    info: ContainerInfo | None = None
    while time.monotonic() < deadline:
        info = await deps.docker.status(service)
        if info.running and info.health != "unhealthy" and info.state != "restarting":
            return Outcome(Status.OK, f"{info.name} running{_health(info)}")
        await asyncio.sleep(_POLL_S)
    state = f"{info.state}{_health(info)}" if info else "unknown"
    return Outcome(Status.CRIT, f"still {state} when the wait ended")


def _health(info: ContainerInfo) -> str:
    return f", {info.health}" if info.health else ""


async def until_healthy(deps: Deps, deadline: float, *, name_failing: bool = True) -> Outcome:
    """Poll /health until it says healthy or ``deadline`` (monotonic) passes.

    Shared by the restart and the restore, which both bring the backend back
    and must see it healthy; ``name_failing`` adds the failing checks to the
    last answer shown when the wait ends.
    """
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            report = await deps.health.fetch()
        except HealthCheckError as exc:
            last = str(exc)
        else:
            if report.healthy:
                return Outcome(Status.OK, f"{report.status} ({report.latency_ms:.0f} ms)")
            last = f"status {report.status!r}"
            if name_failing:
                failing = ", ".join(c.name for c in report.failing) or report.status
                last += f", failing: {failing}"
        await asyncio.sleep(_POLL_S)
    return Outcome(Status.CRIT, f"not healthy when the wait ended: {last}")


async def restart_action(run: Run, *, service: str, container: str) -> None:
    """Restart exactly ``container``, as the approved proposal said.

    A proposal that names only the container (``service`` empty) restarts it
    when the service map still has it.
    """
    deps = run.deps
    if not service:
        services = deps.settings.sms_services
        service = next((name for name, c in services.items() if c == container), "")
    if deps.settings.sms_services.get(service) != container:
        raise UserError(
            f"Not restarting: the configuration no longer maps {service} to {container}. "
            "Run /sms restart again."
        )
    t0 = time.monotonic()
    timeout = deps.settings.sms_recovery_timeout_s
    restarted = await run.step(f"Restart {container}", _restart(deps, service), timeout=60)
    if restarted is None:
        run.text = f"The restart of {container} failed.\n{ESCALATION}"
        run.mentions = deps.settings.escalation_mentions
        return
    deadline = time.monotonic() + timeout
    running = await run.step(
        "Wait until the container runs",
        _until_running(deps, service, deadline),
        timeout=timeout + 5,
    )
    healthy = await run.step(
        "Wait until /health is healthy", until_healthy(deps, deadline), timeout=timeout + 5
    )
    recovered = (
        isinstance(running, Outcome)
        and running.status is Status.OK
        and isinstance(healthy, Outcome)
        and healthy.status is Status.OK
    )
    elapsed = time.monotonic() - t0
    if recovered:
        run.text = f"{container} recovered: healthy {elapsed:.1f} s after the restart."
    else:
        run.text = f"{container} did not recover within {timeout:g} s.\n{ESCALATION}"
        run.mentions = deps.settings.escalation_mentions


@dataclass(frozen=True)
class RestartArgs:
    """A restart proposal's arguments: the container, and its service in the map."""

    container: str
    service: str = ""  # absent in a proposal that names only the container


async def _approved(run: Run, args: RestartArgs) -> None:
    await restart_action(run, service=args.service, container=args.container)


RESTART: ActionSpec[RestartArgs] = ActionSpec(
    name=RESTART_ACTION,
    args=RestartArgs,
    run=_approved,
    title=lambda a: f"Restarting {a.container}",
    target=lambda a: a.container,
    confirm_label=lambda a: f"Restart {a.container}",
)

_USAGE = "restart SERVICE"


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    service = service_arg(args, ctx.deps, _USAGE)
    no_more(args[1:], _USAGE)
    return Invocation(
        name="restart",
        title=f"Restart {service}?",
        procedure=partial(restart_proposal, service=service),
    )


SPEC = ProcedureSpec(
    name="restart",
    summary="Restart a service's container after a look and an approval",
    commands=(
        CommandSpec(
            "restart",
            usage=_USAGE,
            summary="Check a service, then offer to restart its container (an approver clicks)",
            parse=_parse,
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    action=RESTART,
)
