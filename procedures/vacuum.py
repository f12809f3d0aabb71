"""``VACUUM ANALYZE`` on the SMS database, after an approval (runbook: Monthly Tasks).

The proposal names the database; the action refuses when the configured
database is no longer that one, so a click never vacuums something else
than what the approver read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from bot.catalogue import (
    ActionSpec,
    CommandSpec,
    ProcedureSpec,
    Role,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UserError
from bot.messages import Status
from bot.store.base import Proposal

__all__ = [
    "SPEC",
    "VACUUM",
    "VACUUM_ACTION",
    "VACUUM_TIMEOUT_S",
    "VacuumArgs",
    "database_name",
    "maintenance_action",
    "propose_vacuum",
    "vacuum_action",
    "vacuum_note",
]

VACUUM_ACTION = "vacuum"
# A plain VACUUM ANALYZE of a ~100 MB database takes seconds; a big one may take long.
VACUUM_TIMEOUT_S = 30 * 60.0


def database_name(dsn: str) -> str | None:
    """The database a ``postgresql://`` URL connects to, as libpq would pick it.

    The path, else a ``dbname`` parameter, else the user name (libpq's
    default); None when the URL is empty or names none of them.
    """
    if not dsn.strip():
        return None
    parts = urlsplit(dsn.strip())
    name = unquote(parts.path.lstrip("/"))
    if name:
        return name
    params = parse_qs(parts.query)
    if params.get("dbname"):
        return params["dbname"][0]
    return unquote(parts.username) if parts.username else None


def vacuum_note(database: str) -> str:
    return (
        f"On approval the bot runs `VACUUM ANALYZE;` on {database} (runbook: Monthly Tasks, "
        f"at most {VACUUM_TIMEOUT_S / 60:g} min). A plain VACUUM does not block reads or "
        "writes, but it adds I/O load: prefer a quiet hour."
    )


async def propose_vacuum(run: Run) -> Proposal | None:
    """Propose ``VACUUM ANALYZE`` on the configured SMS database (monthly, or ``/sms vacuum``).

    Raises ``UserError`` when ``SMS_DATABASE_URL`` names no database.
    """
    name = database_name(run.deps.settings.sms_database_url)
    if name is None:
        raise UserError("Not proposing VACUUM ANALYZE: SMS_DATABASE_URL names no database.")
    return await run.propose(
        action=VACUUM.name,
        args=VACUUM.encode(VacuumArgs(database=name)),
        summary=f"run VACUUM ANALYZE on {name}",
        confirm_label="Run VACUUM ANALYZE",
        note=vacuum_note(name),
    )


async def _timed(work: Awaitable[float]) -> Outcome:
    took = await work
    return Outcome(Status.OK, f"done in {took:.1f} s")


async def maintenance_action(
    run: Run,
    *,
    database: str,
    command: str,
    work: Callable[[Deps], Awaitable[float]],
    timeout_s: float,
    unset: str = "no database",
) -> None:
    """Run a database-wide ``command`` if ``database`` is still the configured one.

    The proposal named the database; a click must never run the command on
    another one because SMS_DATABASE_URL changed in between. ``work`` runs the
    command and returns how long it took; ``unset`` is how the refusal names
    an empty URL.
    """
    deps = run.deps
    configured = database_name(deps.settings.sms_database_url)
    if configured != database:
        raise UserError(
            f"Not running {command}: SMS_DATABASE_URL now points at "
            f"{configured or unset}, not {database}. Nothing was changed."
        )
    done = await run.step(
        command,
        _timed(work(deps)),
        timeout=timeout_s + deps.settings.sms_check_timeout_s,
    )
    if done is None:
        run.text = f"{command} on {database} failed: {run.steps[-1].summary}"
    else:
        run.text = f"{command} on {database} finished: {done.summary}."


async def vacuum_action(run: Run, *, database: str) -> None:
    """Run ``VACUUM ANALYZE`` if ``database`` is still the configured SMS database."""
    await maintenance_action(
        run,
        database=database,
        command="VACUUM ANALYZE",
        work=lambda deps: deps.db.vacuum_analyze(timeout_s=VACUUM_TIMEOUT_S),
        timeout_s=VACUUM_TIMEOUT_S,
    )


@dataclass(frozen=True)
class VacuumArgs:
    """A VACUUM proposal's arguments: the database it was proposed on."""

    database: str


async def _approved(run: Run, args: VacuumArgs) -> None:
    await vacuum_action(run, database=args.database)


VACUUM: ActionSpec[VacuumArgs] = ActionSpec(
    name=VACUUM_ACTION,
    args=VacuumArgs,
    run=_approved,
    title=lambda a: f"VACUUM ANALYZE on {a.database}",
    target=lambda a: a.database,
    confirm_label=lambda a: "Run VACUUM ANALYZE",
)


async def _propose(run: Run) -> None:
    await propose_vacuum(run)


SPEC = ProcedureSpec(
    name="vacuum",
    summary="VACUUM ANALYZE on the SMS database, after an approval",
    commands=(
        CommandSpec(
            "vacuum",
            usage="vacuum",
            summary="Offer to run VACUUM ANALYZE on the SMS database (an approver clicks)",
            parse=without_args("vacuum", "VACUUM ANALYZE?", _propose),
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    action=VACUUM,
)
