"""Performance Degradation Actions (runbook): ``perf``, alerts SlowResponses and LowThroughput.

The runbook's actions as steps: p95 and throughput against the baseline, the
connection pool (``pg_stat_activity`` by state against ``max_connections``),
the cache hit ratio (``pg_stat_database``), locks (who waits for whom, from
``pg_locks``), the most frequent and slowest statements
(``pg_stat_statements``, when the extension is there), and ``EXPLAIN`` (never
``EXPLAIN ANALYZE``, which would run it) of each long-running query. Then the
proposals: terminate a long query, ``ANALYZE``, ``VACUUM ANALYZE``.
``db slow`` runs the database part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from bot.adapters.postgres import ActiveQuery
from bot.adapters.prometheus import DEFAULT_QUERIES
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
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.errors import UserError
from bot.messages import Status
from procedures.dbperf import database_health_steps, explain_steps, short_query
from procedures.slow_responses import LongQueries, check_long_queries
from procedures.terminate import TERMINATE_ACTION, proposal_args
from procedures.vacuum import database_name, maintenance_action, propose_vacuum

__all__ = [
    "ANALYZE",
    "ANALYZE_ACTION",
    "SPEC",
    "AnalyzeArgs",
    "database_steps",
    "perf",
]

ANALYZE_ACTION = "analyze"
ANALYZE_TIMEOUT_S = 600.0
_MAX_TERMINATE = 3


async def _latest(deps: Deps, key: str) -> float:
    """The baseline query's current value; NaN when Prometheus has no sample."""
    samples = await deps.prometheus.query(DEFAULT_QUERIES[key])
    return samples[0].value if samples else math.nan


def _graded(*, warn: bool, crit: bool) -> Status:
    """CRIT over WARN over OK; each caller says which side of its thresholds is bad."""
    return Status.CRIT if crit else Status.WARN if warn else Status.OK


async def _throughput(deps: Deps) -> Outcome:
    value = await _latest(deps, "throughput_rps")
    threshold = deps.settings.sms_threshold_throughput_rps
    if math.isnan(value):
        return Outcome(Status.WARN, "Prometheus has no request rate")
    # Low throughput is the bad side: the thresholds are floors.
    status = _graded(warn=value < threshold.warn, crit=value < threshold.crit)
    return Outcome(status, f"{value:.1f} req/s (alert below {threshold.warn:g})")


async def _p95(deps: Deps) -> Outcome:
    value = await _latest(deps, "p95_ms")
    threshold = deps.settings.sms_threshold_p95_ms
    if math.isnan(value):
        return Outcome(Status.WARN, "Prometheus has no latency data")
    status = _graded(warn=value >= threshold.warn, crit=value >= threshold.crit)
    return Outcome(status, f"p95 {value:.0f} ms (alert at {threshold.warn:g} ms)")


async def database_steps(run: Run) -> LongQueries | None:
    """The database half of the degradation actions; returns the long queries."""
    await database_health_steps(run)
    long = await run.step(
        f"Queries running longer than {run.deps.settings.sms_slow_query_s:g} s",
        check_long_queries(run.deps),
    )
    await explain_steps(run, long.queries if long else ())
    return long


async def _propose_terminate(run: Run, query: ActiveQuery) -> None:
    if query.started_at is None:
        return
    await run.propose(
        action=TERMINATE_ACTION,
        args=proposal_args(query),
        summary=(
            f"terminate query pid {query.pid} ({query.duration_s:.0f}s): "
            f"{short_query(query.query, 60)}"
        ),
        confirm_label=f"Terminate {query.pid}",
        note=(
            f"On approval the bot checks that pid {query.pid} still runs the query started at "
            f"{query.started_at:%H:%M:%S} UTC, then runs `SELECT pg_terminate_backend"
            f"({query.pid})`."
        ),
    )


async def propose_analyze(run: Run) -> None:
    name = database_name(run.deps.settings.sms_database_url)
    if name is None:
        raise UserError("Not proposing ANALYZE: SMS_DATABASE_URL names no database.")
    await run.propose(
        action=ANALYZE.name,
        args=ANALYZE.encode(AnalyzeArgs(database=name)),
        summary=f"run ANALYZE on {name} (update statistics)",
        confirm_label="Run ANALYZE",
        note=(
            f"On approval the bot runs `ANALYZE;` on {name}: it samples every table to "
            "update the planner's statistics; it blocks nothing but adds some read load."
        ),
    )


async def perf(run: Run, *, alert: Alert | None = None) -> None:
    """Performance degradation: the baseline figures, the database, then the proposals."""
    deps = run.deps
    await run.step("p95 response time (Prometheus)", _p95(deps))
    await run.step("Throughput (Prometheus)", _throughput(deps))
    long = await database_steps(run)
    queries = long.queries if long else ()
    for query in queries[:_MAX_TERMINATE]:
        await _propose_terminate(run, query)
    await propose_analyze(run)
    await propose_vacuum(run)
    worst = [s for s in run.steps if s.status in (Status.WARN, Status.CRIT, Status.FAILED)]
    found = "; ".join(f"{s.name}: {s.summary}" for s in worst) or "nothing out of the baseline"
    run.text = (
        f"{found}.\nProposed: "
        + (f"terminate {len(queries[:_MAX_TERMINATE])} long queries, " if queries else "")
        + "ANALYZE and VACUUM ANALYZE (an approver picks)."
    )


async def analyze_action(run: Run, *, database: str) -> None:
    """Run ``ANALYZE`` if ``database`` is still the configured SMS database."""
    await maintenance_action(
        run,
        database=database,
        command="ANALYZE",
        work=lambda deps: deps.db.analyze(timeout_s=ANALYZE_TIMEOUT_S),
        timeout_s=ANALYZE_TIMEOUT_S,
        unset="nothing",
    )


@dataclass(frozen=True)
class AnalyzeArgs:
    database: str


async def _approved(run: Run, args: AnalyzeArgs) -> None:
    await analyze_action(run, database=args.database)


ANALYZE: ActionSpec[AnalyzeArgs] = ActionSpec(
    name=ANALYZE_ACTION,
    args=AnalyzeArgs,
    run=_approved,
    title=lambda a: f"ANALYZE on {a.database}",
    target=lambda a: a.database,
    confirm_label=lambda a: "Run ANALYZE",
)


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    no_more(args, "perf")
    return Invocation(name="perf", title="Performance degradation", procedure=perf)


SPEC = ProcedureSpec(
    name="perf",
    summary="Performance degradation: baseline, pool, cache, locks, statements, EXPLAIN",
    commands=(
        CommandSpec(
            "perf",
            usage="perf",
            summary="The runbook's degradation actions; offers ANALYZE, VACUUM, terminate",
            parse=_parse,
            role=Role.OPERATOR,
            changes=True,
        ),
    ),
    alert=AlertSpec(
        alertnames=("LowThroughput",),
        priority="P1",
        title="P1 Low throughput: degradation actions",
        bind=lambda alert: partial(perf, alert=alert),
    ),
    action=ANALYZE,
    runbook=(
        RunbookEntry(
            "Performance degradation (p95 > 500 ms, throughput < 20 req/s)",
            "LowThroughput alert, or on demand",
            "pool, cache hit ratio, locks, pg_stat_statements, EXPLAIN; ANALYZE, VACUUM",
        ),
    ),
)
