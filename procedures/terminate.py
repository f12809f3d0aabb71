"""Terminate a long-running query, after an approval ("Slow Database Queries", solution 1).

The proposal pins the query by pid *and* ``query_start``: by the time someone
clicks, the query may have ended and PostgreSQL may have given its pid to
another connection. The action therefore looks first and refuses unless that
pid still runs the very query that was proposed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.adapters.postgres import ActiveQuery
from bot.catalogue import ActionSpec, ProcedureSpec
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UserError
from bot.messages import Status
from bot.redact import redact

__all__ = [
    "PROPOSED_QUERY_CHARS",
    "SPEC",
    "TERMINATE_ACTION",
    "QueryCheck",
    "TerminateArgs",
    "check_still_proposed",
    "proposal_args",
    "terminate_action",
]

TERMINATE_ACTION = "terminate"
PROPOSED_QUERY_CHARS = 200
_POLL_S = 0.2


def proposal_args(query: ActiveQuery) -> dict[str, Any]:
    """The stored arguments of a terminate proposal (JSON-safe)."""
    assert query.started_at is not None, "only a running query can be proposed"
    return {
        "pid": query.pid,
        "query_start": query.started_at.isoformat(),
        "query": " ".join(redact(query.query).split())[:PROPOSED_QUERY_CHARS],
    }


def _parse_start(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"Not terminating: the proposal's query start {text!r} is not a time."
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _hms(at: datetime) -> str:
    return f"{at.astimezone(UTC):%H:%M:%S} UTC"


def _same(current: ActiveQuery | None, started: datetime) -> bool:
    return current is not None and current.state == "active" and current.started_at == started


@dataclass(frozen=True)
class QueryCheck(Outcome):
    """Whether the pid still runs the proposed query; only then may it be terminated."""

    same: bool = False


async def check_still_proposed(deps: Deps, pid: int, started: datetime) -> QueryCheck:
    current = await deps.db.backend(pid)
    if current is None:
        return QueryCheck(Status.OK, f"pid {pid} is gone: the query has ended")
    if current.started_at != started:
        since = _hms(current.started_at) if current.started_at else "an unknown time"
        return QueryCheck(
            Status.WARN,
            f"pid {pid} now runs another query (started {since}, not {_hms(started)})",
        )
    if current.state != "active":
        return QueryCheck(Status.OK, f"pid {pid} is {current.state or 'idle'}: the query has ended")
    return QueryCheck(
        Status.OK,
        f"pid {pid} still runs it ({current.duration_s:.0f} s so far)",
        same=True,
    )


async def _terminate(deps: Deps, pid: int, started: datetime) -> Outcome:
    # One statement checks and terminates, so nothing can slip in between.
    if await deps.db.terminate(pid, query_start=started):
        return Outcome(Status.OK, f"pg_terminate_backend({pid}) signalled it")
    return Outcome(
        Status.WARN,
        f"pid {pid} no longer runs that query (it ended or was replaced): nothing terminated",
    )


async def _until_gone(deps: Deps, pid: int, started: datetime, wait_s: float) -> Outcome:
    deadline = time.monotonic() + wait_s
    while True:
        if not _same(await deps.db.backend(pid), started):
            return Outcome(Status.OK, f"pid {pid} no longer runs the query")
        if time.monotonic() >= deadline:
            return Outcome(Status.CRIT, f"pid {pid} still runs the query after {wait_s:g} s")
        await asyncio.sleep(_POLL_S)


async def terminate_action(run: Run, *, pid: int, query_start: str, query: str) -> None:
    """Terminate ``pid`` if, and only if, it still runs the query started at ``query_start``."""
    deps = run.deps
    pid = int(pid)
    started = _parse_start(query_start)
    what = f"pid {pid} (query started {_hms(started)}: {query[:60]})"
    check = await run.step(
        "Check the query is still the one proposed", check_still_proposed(deps, pid, started)
    )
    if check is None:
        run.text = f"Not terminating {what}: could not check that it still runs that query."
        return
    if not check.same:
        run.text = f"Not terminating {what}: {check.summary}. Nothing was changed."
        return
    done = await run.step(f"Terminate pid {pid}", _terminate(deps, pid, started))
    if done is None:
        run.text = f"The termination of {what} failed."
        return
    # pg_terminate_backend only signals; the backend exits moments later.
    wait_s = deps.settings.sms_check_timeout_s
    gone = await run.step(
        "Verify it is gone", _until_gone(deps, pid, started, wait_s), timeout=2 * wait_s
    )
    if gone is not None and gone.status is Status.OK:
        run.text = f"Terminated {what}."
    else:
        run.text = f"Asked PostgreSQL to terminate {what}, but could not confirm it is gone."


@dataclass(frozen=True)
class TerminateArgs:
    """A terminate proposal's arguments: the pid and the very query it ran."""

    pid: int
    query_start: str  # ISO time: the pid may run another query by the time of the click
    query: str


async def _approved(run: Run, args: TerminateArgs) -> None:
    await terminate_action(run, pid=args.pid, query_start=args.query_start, query=args.query)


SPEC = ProcedureSpec(
    name="terminate",
    summary="Terminate a long-running query, if its pid still runs it",
    action=ActionSpec(
        name=TERMINATE_ACTION,
        args=TerminateArgs,
        run=_approved,
        title=lambda a: f"Terminating query pid {a.pid}",
        target=lambda a: f"pid {a.pid}",
        confirm_label=lambda a: f"Terminate {a.pid}",
    ),
)
