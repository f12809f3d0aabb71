"""Slow Response Times (P1): which endpoints are slow, and is the database why.

The runbook's steps 2-5: p95 per endpoint from Prometheus, the active queries
in ``pg_stat_activity``, and those running longer than ``SMS_SLOW_QUERY_S``
("Slow Database Queries"). For each long query (at most five) the bot
proposes ``pg_terminate_backend``; the approved action is
``procedures.terminate.terminate_action``, which first checks the pid still
runs that same query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from bot.adapters.postgres import ActiveQuery
from bot.adapters.prometheus import DEFAULT_QUERIES, Sample
from bot.alerts import Alert
from bot.baseline import classify
from bot.catalogue import AlertSpec, ProcedureSpec, RunbookEntry
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Field, Link, Status, Table, worst
from bot.redact import redact
from procedures.dbperf import database_health_steps, explain_steps
from procedures.terminate import TERMINATE_ACTION, proposal_args

__all__ = [
    "ESCALATION_P1",
    "MAX_TERMINATE_PROPOSALS",
    "SPEC",
    "EndpointLatency",
    "LongQueries",
    "check_active_queries",
    "check_endpoint_p95",
    "check_long_queries",
    "slow_responses",
]

MAX_TERMINATE_PROPOSALS = 5
ESCALATION_P1 = (
    "Escalation (runbook, Slow Response Times): if p95 stays above 2000 ms for 15+ minutes, "
    "scale up resources."
)
_NO_HANDLER = "(no handler label)"
_SHORT_QUERY_CHARS = 60
_TABLE_QUERY_CHARS = 200


def _one_line(query: str, limit: int) -> str:
    text = " ".join(redact(query).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(value: float) -> str:
    if math.isinf(value):
        return "beyond the largest bucket"
    return f"{value:.0f} ms"


@dataclass(frozen=True)
class EndpointLatency(Outcome):
    """The p95 step's outcome, with the endpoints slowest first (no-data ones last)."""

    endpoints: tuple[tuple[str, float], ...] = ()


def _slowest_first(samples: list[Sample]) -> list[tuple[str, float]]:
    rows = [(s.labels.get("handler") or _NO_HANDLER, s.value) for s in samples]
    return sorted(rows, key=lambda r: (math.isnan(r[1]), -r[1] if not math.isnan(r[1]) else 0))


async def check_endpoint_p95(deps: Deps) -> EndpointLatency:
    """Step 2-3: ``histogram_quantile(0.95, ...)`` by handler, judged like the baseline p95."""
    threshold = deps.settings.sms_threshold_p95_ms
    samples = await deps.prometheus.query(DEFAULT_QUERIES["endpoint_p95_ms"])
    rows = _slowest_first(samples)
    dashboard = Field(
        "Application Performance dashboard",
        Link("Grafana", f"{deps.settings.sms_grafana_url.rstrip('/')}/d/app-performance"),
    )
    if not rows:
        return EndpointLatency(
            Status.WARN, "Prometheus has no per-endpoint latency data", fields=(dashboard,)
        )
    judged = [
        (handler, value, None if math.isnan(value) else classify(value, threshold))
        for handler, value in rows
    ]
    status = worst([s for _, _, s in judged if s is not None])
    table = Table(
        title=f"p95 per endpoint, slowest first ({threshold.describe()} ms)",
        columns=("endpoint", "p95", "status"),
        rows=tuple(
            (handler, "no requests" if s is None else _ms(value), s.value.upper() if s else "-")
            for handler, value, s in judged
        ),
    )
    over = [(h, v, s) for h, v, s in judged if s is not None and s is not Status.OK]
    handler, value, slowest_status = judged[0]
    if slowest_status is None:
        summary = f"no requests on any of {len(rows)} endpoints in the last 5 minutes"
    elif not over:
        summary = f"all {len(rows)} endpoints within {threshold.warn:g} ms; slowest {handler} "
        summary += _ms(value)
    else:
        summary = f"{len(over)} of {len(rows)} endpoints over {threshold.warn:g} ms; slowest "
        summary += f"{handler} {_ms(value)} ({slowest_status.value})"
    fields: tuple[Field, ...] = (dashboard,)
    if slowest_status is not None:
        fields = (Field("Slowest endpoint", f"{handler}: {_ms(value)}", slowest_status), dashboard)
    return EndpointLatency(status, summary, fields=fields, details=(table,), endpoints=tuple(rows))


def _queries_table(title: str, queries: list[ActiveQuery]) -> Table:
    return Table(
        title=title,
        columns=("pid", "user", "running", "query"),
        rows=tuple(
            (
                str(q.pid),
                q.user or "-",
                f"{q.duration_s:.1f} s",
                _one_line(q.query, _TABLE_QUERY_CHARS),
            )
            for q in queries
        ),
    )


async def check_active_queries(deps: Deps) -> Outcome:
    """Step 4: ``SELECT * FROM pg_stat_activity WHERE state = 'active'``."""
    queries = await deps.db.active_queries(min_age_s=0)
    if not queries:
        return Outcome(Status.OK, "no active query")
    longest = max(q.duration_s for q in queries)
    noun = "query" if len(queries) == 1 else "queries"
    return Outcome(
        Status.OK,
        f"{len(queries)} active {noun}, longest running {longest:.1f} s",
        details=(_queries_table("Active queries (oldest first)", queries),),
    )


@dataclass(frozen=True)
class LongQueries(Outcome):
    """The long-query step's outcome, with the queries themselves (oldest first)."""

    queries: tuple[ActiveQuery, ...] = ()


async def check_long_queries(deps: Deps) -> LongQueries:
    """Step 5, the runbook's "Slow Database Queries" diagnosis."""
    min_age = deps.settings.sms_slow_query_s
    queries = await deps.db.active_queries(min_age_s=min_age)
    if not queries:
        return LongQueries(Status.OK, f"none running longer than {min_age:g} s")
    noun = "query" if len(queries) == 1 else "queries"
    return LongQueries(
        Status.WARN,
        f"{len(queries)} {noun} running longer than {min_age:g} s, "
        f"longest {max(q.duration_s for q in queries):.0f} s",
        details=(_queries_table(f"Queries running longer than {min_age:g} s", queries),),
        queries=tuple(queries),
    )


async def _propose_terminate(run: Run, query: ActiveQuery) -> bool:
    if query.started_at is None:  # not running a query after all; nothing to pin it to
        return False
    seconds = f"{query.duration_s:.0f}s"
    short = _one_line(query.query, _SHORT_QUERY_CHARS)
    proposal = await run.propose(
        action=TERMINATE_ACTION,
        args=proposal_args(query),
        summary=f"terminate query pid {query.pid} ({seconds}): {short}",
        confirm_label=f"Terminate {query.pid}",
        note=(
            f"On approval the bot checks that pid {query.pid} still runs the query started "
            f"at {query.started_at:%H:%M:%S} UTC, then runs "
            f"`SELECT pg_terminate_backend({query.pid})`. Its client gets an error and an "
            "open transaction is rolled back."
        ),
    )
    return proposal is not None


def _conclusion(
    latency: EndpointLatency | None,
    long: LongQueries | None,
    *,
    min_age: float,
    proposed: list[int],
    more: int,
) -> str:
    lines: list[str] = []
    if latency is None:
        lines.append("The p95 per endpoint could not be read.")
    elif latency.endpoints and not math.isnan(latency.endpoints[0][1]):
        handler, value = latency.endpoints[0]
        lines.append(f"Slowest endpoint {handler}: p95 {_ms(value)} ({latency.status.value}).")
    if long is None:
        lines.append("The long-running queries could not be read.")
    elif not long.queries:
        lines.append(f"No database query runs longer than {min_age:g} s.")
    else:
        noun = "query runs" if len(long.queries) == 1 else "queries run"
        pids = ", ".join(str(p) for p in proposed) or "none (see the log)"
        lines.append(
            f"{len(long.queries)} database {noun} longer than {min_age:g} s; "
            f"proposed terminating pid {pids}."
        )
        if more:
            lines.append(
                f"{more} more not proposed (at most {MAX_TERMINATE_PROPOSALS} at a time): "
                "see the table, or terminate one with `/sms db kill PID`."
            )
    if latency is None or latency.status is not Status.OK:
        lines.append(ESCALATION_P1)
    return "\n".join(lines)


async def slow_responses(run: Run, *, alert: Alert | None = None) -> None:
    """P1: p95 per endpoint, the database's active and long queries, terminate proposals.

    ``alert`` is the Alertmanager alert that started the run, None when run by hand.
    """
    deps = run.deps
    latency = await run.step("p95 per endpoint", check_endpoint_p95(deps))
    await run.step("Active queries", check_active_queries(deps))
    long = await run.step(
        f"Queries running longer than {deps.settings.sms_slow_query_s:g} s",
        check_long_queries(deps),
    )
    # The runbook's degradation actions (pool, cache, locks, statements, EXPLAIN).
    await database_health_steps(run)
    await explain_steps(run, long.queries if long is not None else ())
    proposed: list[int] = []
    queries = long.queries if long is not None else ()
    for query in queries[:MAX_TERMINATE_PROPOSALS]:
        if await _propose_terminate(run, query):
            proposed.append(query.pid)
    more = max(0, len(queries) - MAX_TERMINATE_PROPOSALS)
    run.text = _conclusion(
        latency, long, min_age=deps.settings.sms_slow_query_s, proposed=proposed, more=more
    )


SPEC = ProcedureSpec(
    name="slow_responses",
    summary="P1: p95 per endpoint and long queries; propose terminating the longest",
    alert=AlertSpec(
        alertnames=("SlowResponses", "HighLatency"),
        priority="P1",
        title="P1 Slow responses: diagnosis",
        bind=lambda alert: partial(slow_responses, alert=alert),
    ),
    runbook=(
        RunbookEntry(
            "P1 Slow responses (p95 > 1000 ms)",
            "alert; respond in 5-15 min",
            "p95 per endpoint, active and long-running queries, terminate long queries",
        ),
    ),
)
