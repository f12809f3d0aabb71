"""High Memory Usage (runbook, Common Issues): ``memory`` and the HighMemoryUsage alert.

The runbook's diagnosis is ``docker stats --no-stream``; its solutions are to
restart the memory-intensive container, look for leaks in the application
log, raise limits, and review the database connection pool. The bot shows
every container's memory sorted, OOM kills, the backend log's memory errors
and PostgreSQL's connections against ``max_connections``, then proposes
restarting the top consumer among ``SMS_SERVICES`` (restart limits apply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from bot.adapters.docker import ContainerNotFound, ContainerStats
from bot.alerts import Alert
from bot.catalogue import (
    AlertSpec,
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    Role,
    RunbookEntry,
    no_more,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import CodeBlock, Status, Table
from bot.redact import redact
from procedures.checks import format_size
from procedures.restart import propose_restart

__all__ = ["SPEC", "memory"]

BACKEND_SERVICE = "backend"
_LOG_LINES = 500
_MEMORY_ERRORS = re.compile(
    r"MemoryError|out of memory|OOM|Cannot allocate memory|memory leak|heap", re.I
)
_CONNECTIONS_WARN = 0.8


@dataclass(frozen=True)
class Consumers(Outcome):
    stats: tuple[ContainerStats, ...] = ()


async def _stats(deps: Deps) -> Consumers:
    stats = await deps.docker.stats()
    threshold = deps.settings.sms_threshold_memory_pct
    if not stats:
        return Consumers(Status.WARN, "no running container")
    table = Table(
        title="docker stats --no-stream: memory, biggest first",
        columns=("container", "usage", "limit", "percent", "service"),
        rows=tuple(
            (
                s.name,
                format_size(s.memory_bytes),
                format_size(s.limit_bytes) if s.limit_bytes else "-",
                f"{s.percent:.1f} %",
                s.service or "-",
            )
            for s in stats
        ),
    )
    over = [s for s in stats if s.percent >= threshold.warn]
    status = Status.OK
    if over:
        status = Status.CRIT if any(s.percent >= threshold.crit for s in over) else Status.WARN
    top = stats[0]
    summary = (
        f"{len(stats)} containers; most: {top.name} {format_size(top.memory_bytes)} "
        f"({top.percent:.1f} % of its limit)"
    )
    if over:
        summary += f"; {len(over)} over {threshold.warn:g} %"
    return Consumers(status, summary, details=(table,), stats=tuple(stats))


async def _oom(deps: Deps) -> Outcome:
    killed: list[str] = []
    for service in deps.settings.sms_services:
        try:
            facts = await deps.docker.inspect(service)
        except ContainerNotFound:
            continue  # a missing container is status's finding, not a memory one
        if facts.oom_killed:
            killed.append(f"{facts.name} (exit code {facts.exit_code})")
    if killed:
        return Outcome(Status.CRIT, f"OOM-killed: {', '.join(killed)}")
    return Outcome(Status.OK, f"none of {len(deps.settings.sms_services)} services OOM-killed")


async def _log_errors(deps: Deps) -> Outcome:
    text = redact(await deps.docker.logs(BACKEND_SERVICE, tail=_LOG_LINES))
    hits = [line for line in text.splitlines() if _MEMORY_ERRORS.search(line)]
    if not hits:
        return Outcome(Status.OK, f"no memory error in the last {_LOG_LINES} lines")
    name = deps.docker.container_name(BACKEND_SERVICE)
    return Outcome(
        Status.WARN,
        f"{len(hits)} memory errors in the last {_LOG_LINES} lines",
        details=(CodeBlock(f"{name}: memory errors", "\n".join(hits[-30:])),),
    )


async def _connections(deps: Deps) -> Outcome:
    info = await deps.db.check()
    share = info.connections / info.max_connections if info.max_connections else 0.0
    status = Status.WARN if share >= _CONNECTIONS_WARN else Status.OK
    return Outcome(
        status,
        f"{info.connections} of max_connections {info.max_connections} ({share:.0%}): "
        "each PostgreSQL connection holds its own memory",
    )


async def memory(run: Run, *, alert: Alert | None = None) -> None:
    deps = run.deps
    consumers = await run.step("Memory per container (docker stats --no-stream)", _stats(deps))
    await run.step("OOM kills (docker inspect)", _oom(deps))
    if BACKEND_SERVICE in deps.settings.sms_services:
        await run.step("Backend log: memory errors", _log_errors(deps))
    await run.step("PostgreSQL connections", _connections(deps))
    ours = [s for s in (consumers.stats if consumers else ()) if s.service]
    if not ours:
        run.text = "No container of SMS_SERVICES is running; nothing to propose."
        return
    top = ours[0]
    assert top.service is not None
    lines = [
        f"Top consumer among the SMS services: {top.name} ({format_size(top.memory_bytes)}, "
        f"{top.percent:.1f} % of its limit).",
        "Runbook (High Memory Usage): restart memory-intensive containers, check the logs for "
        "leaks, raise limits in docker-compose.yml, review the connection pool size.",
    ]
    await propose_restart(run, service=top.service)
    run.text = "\n".join([*lines, run.text])


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    no_more(args, "memory")
    return Invocation(name="memory", title="Memory usage", procedure=memory)


SPEC = ProcedureSpec(
    name="memory",
    summary="High Memory Usage: docker stats, OOM kills, memory errors; restart the top one",
    commands=(
        CommandSpec(
            "memory",
            usage="memory",
            summary="Memory per container, OOM kills; offer to restart the top consumer",
            parse=_parse,
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    alert=AlertSpec(
        alertnames=("HighMemoryUsage", "HighMemory"),
        priority="P1",
        title="P1 High memory usage: diagnosis",
        bind=lambda alert: partial(memory, alert=alert),
    ),
    runbook=(
        RunbookEntry(
            "High memory usage (> 85 %)",
            "HighMemoryUsage alert, or on demand",
            "docker stats sorted, OOM kills, memory errors, connections; restart the top one",
        ),
    ),
)
