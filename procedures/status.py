"""``status``: every container with its state, health and uptime (runbook: docker ps)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.adapters.docker import ContainerInfo
from bot.catalogue import (
    CommandSpec,
    ProcedureSpec,
    RunbookEntry,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Status, Table
from procedures.diagnose import diagnosis_steps

__all__ = ["SPEC", "format_uptime", "status"]


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _row(info: ContainerInfo, deps: Deps) -> tuple[str, str, str, str, str]:
    uptime = info.uptime(deps.clock()) if info.state == "running" else None
    return (
        info.name,
        info.service or "",
        info.state,
        info.health or "-",
        format_uptime(uptime),
    )


@dataclass(frozen=True)
class _Listed(Outcome):
    broken: tuple[str, ...] = ()  # configured services exited, dead or restarting


async def _containers(deps: Deps) -> _Listed:
    overview = await deps.docker.overview()
    known = {info.name for info in overview.containers}
    rows = [_row(info, deps) for info in overview.containers]
    rows += [
        (info.name, info.service or "", "missing", "-", "-")
        for info in overview.missing
        if info.name not in known
    ]
    rows.sort(key=lambda r: (r[1] == "", r[0]))
    bad = [*overview.missing, *overview.not_running, *overview.unhealthy]
    status = Status.CRIT if bad else Status.OK
    summary = f"{overview.running} running of {overview.total} containers"
    if bad:
        names = sorted(
            {f"{i.service} {i.state if i.state != 'running' else 'unhealthy'}" for i in bad}
        )
        summary += "; " + ", ".join(names)
    table = Table(
        title="Containers",
        columns=("container", "service", "state", "health", "uptime"),
        rows=tuple(rows),
    )
    broken = tuple(
        sorted(
            i.service
            for i in overview.not_running
            if i.service and i.state in ("exited", "dead", "restarting")
        )
    )
    return _Listed(status, summary, details=(table,), broken=broken)


async def status(run: Run) -> None:
    listed = await run.step("List containers", _containers(run.deps))
    if not isinstance(listed, _Listed) or not listed.broken:
        return
    # Container Won't Start: the runbook's diagnosis, run at once for each broken service.
    lines = []
    for service in listed.broken:
        _facts, causes = await diagnosis_steps(run, service=service)
        cause = "; ".join(dict.fromkeys(causes)) or "no cause found"
        lines.append(f"{service}: {cause}. `/sms diagnose {service}` offers to start it.")
    run.text = "\n".join(lines)


SPEC = ProcedureSpec(
    name="status",
    summary="Every container with its state, health and uptime",
    commands=(
        CommandSpec(
            "status",
            usage="status",
            summary="Containers: state, health and uptime",
            parse=without_args("status", "Container status", status),
        ),
    ),
    runbook=(
        RunbookEntry(
            "Container overview", "on demand", "every container with state, health and uptime"
        ),
    ),
)
