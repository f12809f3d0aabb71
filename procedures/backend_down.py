"""Backend Down (P0): the runbook's incident steps 1-4, ending in a restart proposal.

Container status, the backend's last 100 log lines, the database (its
container's last 50 log lines and the daily ``SELECT COUNT(*) FROM users``),
then a proposal to restart the backend unless the bot has already restarted
it as often as ``SMS_RESTART_LIMIT`` allows. Steps 5-6 (verify recovery,
record the incident) belong to the restart action and to the alert's
resolution.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

from bot.adapters.docker import ContainerInfo, ContainerNotFound, DockerError
from bot.adapters.postgres import DatabaseError
from bot.alerts import Alert
from bot.catalogue import AlertSpec, ProcedureSpec, RunbookEntry
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import CodeBlock, Status, worst
from bot.redact import redact
from procedures.diagnose import diagnosis_steps
from procedures.restart import ESCALATION, propose_restart

__all__ = [
    "BACKEND_LOG_LINES",
    "DATABASE_LOG_LINES",
    "SPEC",
    "BackendLogs",
    "ContainerCheck",
    "backend_down",
    "check_backend_container",
    "check_database_logs_and_connectivity",
    "tail_backend_logs",
]

BACKEND = "backend"
POSTGRES = "postgres"
BACKEND_LOG_LINES = 100
DATABASE_LOG_LINES = 50
# What PostgreSQL writes when something is wrong (LOG and WARNING lines are routine).
_PG_PROBLEMS = ("ERROR", "FATAL", "PANIC")


@dataclass(frozen=True)
class ContainerCheck(Outcome):
    """The container step's outcome, with what Docker said (None when it could not say)."""

    info: ContainerInfo | None = None


@dataclass(frozen=True)
class BackendLogs(Outcome):
    errors: int = 0


def _describe(info: ContainerInfo) -> str:
    health = f", {info.health}" if info.health else ""
    text = f" ({info.status_text})" if info.status_text else ""
    restarts = f", restarted {info.restart_count}x by Docker" if info.restart_count else ""
    return f"{info.name}: {info.state}{health}{text}{restarts}"


async def check_backend_container(deps: Deps, service: str = BACKEND) -> ContainerCheck:
    """Step 1, ``docker ps | grep backend``: running, and not unhealthy."""
    try:
        info = await deps.docker.status(service)
    except ContainerNotFound as exc:
        return ContainerCheck(Status.CRIT, str(exc))
    bad = not info.running or info.health == "unhealthy"
    return ContainerCheck(Status.CRIT if bad else Status.OK, _describe(info), info=info)


def _error_lines(text: str, words: tuple[str, ...]) -> int:
    return sum(1 for line in text.splitlines() if any(w in line for w in words))


async def tail_backend_logs(
    deps: Deps, service: str = BACKEND, *, lines: int = BACKEND_LOG_LINES
) -> BackendLogs:
    """Step 2, ``docker logs docker-backend-1 --tail 100``, secrets masked."""
    container = deps.docker.container_name(service)
    text = redact(await deps.docker.logs(service, tail=lines))
    got = text.splitlines()
    errors = _error_lines(text, ("ERROR",))
    summary = f"{len(got)} lines from {container}, {errors} ERROR"
    block = CodeBlock(f"{container}: last {len(got)} lines", text or "(no output)")
    return BackendLogs(
        Status.WARN if errors else Status.OK, summary, details=(block,), errors=errors
    )


async def _query(deps: Deps) -> tuple[Status, str]:
    try:
        users = await deps.db.count_users()
    except DatabaseError as exc:
        return Status.CRIT, f"query failed: {exc}"
    return Status.OK, f"connected, {users.count} users ({users.latency_ms:.0f} ms)"


async def _postgres_log(deps: Deps, lines: int) -> tuple[Status, str, CodeBlock | None]:
    if POSTGRES not in deps.docker.services:
        return Status.OK, "no postgres service in SMS_SERVICES, no log to read", None
    container = deps.docker.container_name(POSTGRES)
    try:
        text = redact(await deps.docker.logs(POSTGRES, tail=lines))
    except DockerError as exc:
        return Status.WARN, f"{container} log unavailable: {exc}", None
    got = len(text.splitlines())
    problems = _error_lines(text, _PG_PROBLEMS)
    block = CodeBlock(f"{container}: last {got} lines", text or "(no output)")
    summary = f"{container}: {got} log lines, {problems} ERROR/FATAL/PANIC"
    return (Status.WARN if problems else Status.OK), summary, block


async def check_database_logs_and_connectivity(
    deps: Deps, *, lines: int = DATABASE_LOG_LINES
) -> Outcome:
    """Step 3: the postgres container's last lines and a real query, side by side.

    The runbook only reads the container's log; the query says whether the
    database answers now. Either half may fail without hiding the other.
    """
    (query_status, query_said), (log_status, log_said, block) = await asyncio.gather(
        _query(deps), _postgres_log(deps, lines)
    )
    return Outcome(
        worst([query_status, log_status]),
        f"{query_said}; {log_said}",
        details=(block,) if block else (),
    )


def _findings(
    container: str,
    look: ContainerCheck | None,
    logs: BackendLogs | None,
    database: Outcome | None,
) -> str:
    said: list[str] = []
    if look is None:
        said.append(f"the state of {container} is unknown (Docker did not answer)")
    elif look.info is None:
        said.append(f"{container} does not exist")
    elif look.status is Status.OK:
        said.append(f"{container} is running{' and healthy' if look.info.health else ''}")
    else:
        info = look.info
        said.append(f"{container} is {info.health if info.running else info.state}")
    if logs is not None:
        said.append(f"{logs.errors} ERROR line{'s' if logs.errors != 1 else ''} in its last log")
    if database is None:
        said.append("the database could not be checked")
    elif database.status is Status.CRIT:
        said.append("the database query failed")
    else:
        said.append("the database answers")
    return "; ".join(said) + "."


async def backend_down(run: Run, *, alert: Alert | None = None) -> None:
    """P0: look at the backend, its logs and the database; propose a restart.

    ``alert`` is the Alertmanager alert that started the run, None when run by hand.
    """
    deps = run.deps
    container = deps.docker.container_name(BACKEND)
    look = await run.step("Check container status", check_backend_container(deps))
    logs = await run.step("Tail backend logs", tail_backend_logs(deps))
    database = await run.step("Check database", check_database_logs_and_connectivity(deps))
    findings = _findings(container, look, logs, database)
    if look is not None and look.info is not None and look.info.state in ("exited", "restarting"):
        # Container Won't Start: the runbook's diagnosis before restarting blindly.
        _facts, causes = await diagnosis_steps(run, service=BACKEND)
        if causes:
            findings += f"\nWhy it does not run: {'; '.join(dict.fromkeys(causes))}."
    if look is not None and look.info is None:
        run.text = (
            f"{findings}\nNot proposing a restart: there is no {container} to restart; "
            f"it must be created again (docker compose up).\n{ESCALATION}"
        )
        return
    await propose_restart(run, service=BACKEND)
    run.text = f"{findings}\n{run.text}"


SPEC = ProcedureSpec(
    name="backend_down",
    summary="P0: look at the backend, its logs and the database; propose a restart",
    alert=AlertSpec(
        alertnames=("BackendDown", "BackendHTTP500"),
        priority="P0",
        title="P0 Backend down: first response",
        bind=lambda alert: partial(backend_down, alert=alert),
    ),
    runbook=(
        RunbookEntry(
            "P0 Backend down (HTTP 500s)",
            "alert BackendDown; respond in 0-5 min",
            "container status, backend logs, database, restart, verify /health, incident record",
        ),
    ),
)
