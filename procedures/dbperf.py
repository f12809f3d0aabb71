"""The database half of the runbook's Performance Degradation Actions, as steps.

Shared by ``perf``, ``db slow`` and the Slow Responses procedure: the
connection pool against ``max_connections``, the cache hit ratio, lock waits
(who waits for whom), ``pg_stat_statements`` when installed, and ``EXPLAIN``
(never ``ANALYZE``) of long-running queries.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.adapters.postgres import ActiveQuery
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import CodeBlock, Status, Table
from bot.redact import redact

__all__ = ["database_health_steps", "explain_steps", "short_query"]

_CONNECTIONS_WARN = 0.8
_CACHE_WARN = 0.99  # the usual rule of thumb for an OLTP database
_MAX_EXPLAINED = 3
_QUERY_CHARS = 200


def short_query(query: str, limit: int = _QUERY_CHARS) -> str:
    """A query as one redacted line, cut to ``limit`` characters, for a chat line."""
    text = " ".join(redact(query).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _pool(deps: Deps) -> Outcome:
    pool = await deps.db.pool()
    share = pool.total / pool.max_connections if pool.max_connections else 0.0
    states = ", ".join(f"{n} {state}" for state, n in pool.by_state) or "none"
    status = Status.WARN if share >= _CONNECTIONS_WARN else Status.OK
    return Outcome(
        status,
        f"{pool.total} of max_connections {pool.max_connections} ({share:.0%}): {states}",
    )


async def _cache(deps: Deps) -> Outcome:
    hit = await deps.db.cache_hit()
    ratio = hit.ratio
    if ratio is None:
        return Outcome(Status.OK, "no block reads yet")
    status = Status.OK if ratio >= _CACHE_WARN else Status.WARN
    return Outcome(
        status, f"{ratio:.2%} of {hit.hits + hit.reads} block reads from cache (heap and index)"
    )


async def _locks(deps: Deps) -> Outcome:
    waits = await deps.db.lock_waits()
    if not waits:
        return Outcome(Status.OK, "no query waits on a lock")
    parts = [
        f"pid {w.pid} waits for pid {', '.join(str(p) for p in w.blocking)} ({w.waiting_s:.0f} s)"
        for w in waits
    ]
    table = Table(
        title="Lock waits (pg_locks): who waits for whom",
        columns=("waiting pid", "blocked by", "waiting", "wants", "query"),
        rows=tuple(
            (
                str(w.pid),
                ", ".join(str(p) for p in w.blocking),
                f"{w.waiting_s:.1f} s",
                w.wants or "-",
                short_query(w.query),
            )
            for w in waits
        ),
    )
    return Outcome(Status.WARN, "; ".join(parts), details=(table,))


async def _statements(deps: Deps) -> Outcome:
    frequent = await deps.db.statements(order="calls")
    if frequent is None:
        return Outcome(
            Status.OK,
            "pg_stat_statements is not installed: no statement statistics "
            "(CREATE EXTENSION pg_stat_statements, with shared_preload_libraries)",
        )
    slowest = await deps.db.statements(order="mean") or []
    tables = tuple(
        Table(
            title=title,
            columns=("calls", "mean", "total", "statement"),
            rows=tuple(
                (str(s.calls), f"{s.mean_ms:.1f} ms", f"{s.total_ms:.0f} ms", short_query(s.query))
                for s in rows
            ),
        )
        for title, rows in (
            ("Most frequent statements", frequent),
            ("Slowest statements (mean)", slowest),
        )
    )
    top = f"slowest mean {slowest[0].mean_ms:.1f} ms" if slowest else "no statements"
    return Outcome(Status.OK, f"{len(frequent)} most frequent shown; {top}", details=tables)


async def _explain(deps: Deps, query: ActiveQuery) -> Outcome:
    plan = await deps.db.explain(query.query)
    first = plan.splitlines()[0] if plan else "(empty plan)"
    return Outcome(
        Status.OK,
        first[:160],
        details=(CodeBlock(f"EXPLAIN of pid {query.pid}: {short_query(query.query, 80)}", plan),),
    )


async def database_health_steps(run: Run) -> None:
    """Pool, cache hit ratio, locks and statements, one step each."""
    deps = run.deps
    await run.step("Connection pool (pg_stat_activity)", _pool(deps))
    await run.step("Cache hit ratio (pg_stat_database)", _cache(deps))
    await run.step("Locks (pg_locks)", _locks(deps))
    await run.step("Statements (pg_stat_statements)", _statements(deps))


async def explain_steps(run: Run, queries: Sequence[ActiveQuery]) -> None:
    """``EXPLAIN`` of the first few long-running queries."""
    for query in queries[:_MAX_EXPLAINED]:
        await run.step(f"EXPLAIN pid {query.pid} (not ANALYZE)", _explain(run.deps, query))
