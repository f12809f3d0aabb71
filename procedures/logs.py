"""``logs SERVICE [N]``: the tail of a service's container log, secrets masked."""

from __future__ import annotations

from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import CodeBlock, Status
from bot.redact import redact

__all__ = ["logs"]


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
