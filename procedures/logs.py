"""``logs SERVICE [N]``: the tail of a service's container log, secrets masked."""

from __future__ import annotations

from functools import partial

from bot.catalogue import (
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    RunbookEntry,
    count_arg,
    no_more,
    service_arg,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import CodeBlock, Status
from bot.redact import redact

__all__ = ["DEFAULT_LOG_LINES", "SPEC", "logs"]


async def _tail(deps: Deps, service: str, lines: int) -> Outcome:
    container = deps.docker.container_name(service)
    text = redact(await deps.docker.logs(service, tail=lines))
    got = text.splitlines()
    errors = sum(1 for line in got if "ERROR" in line or "CRITICAL" in line)
    summary = f"{len(got)} lines from {container}"
    if errors:
        summary += f", {errors} ERROR"
    block = CodeBlock(title=f"{container}: last {len(got)} lines", text=text or "(no output)")
    return Outcome(Status.OK, summary, details=(block,))


async def logs(run: Run, *, service: str, lines: int) -> None:
    await run.step(f"Tail {service} logs ({lines} lines)", _tail(run.deps, service, lines))


DEFAULT_LOG_LINES = 100
_USAGE = "logs SERVICE [N]"


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    service = service_arg(args, ctx.deps, _USAGE)
    lines = count_arg(args[1], _USAGE) if len(args) > 1 else DEFAULT_LOG_LINES
    no_more(args[2:], _USAGE)
    cap = ctx.deps.settings.sms_logs_max_lines
    title = f"Logs of {service}"
    if lines > cap:
        title += f" (capped at {cap} lines)"
        lines = cap
    return Invocation(
        name="logs", title=title, procedure=partial(logs, service=service, lines=lines)
    )


SPEC = ProcedureSpec(
    name="logs",
    summary="The tail of a service's container log, secrets masked",
    commands=(
        CommandSpec(
            "logs",
            usage=_USAGE,
            summary=(
                f"Last N lines of a service's log (default {DEFAULT_LOG_LINES}), secrets masked"
            ),
            parse=_parse,
        ),
    ),
    runbook=(
        RunbookEntry(
            "Logs of a service", "any failed check; incidents", "last N lines, secrets masked"
        ),
    ),
)
