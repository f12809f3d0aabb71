"""``db check`` and ``db slow``: the runbook's database connectivity and slow-query diagnosis."""

from __future__ import annotations

from bot.catalogue import (
    CommandSpec,
    ProcedureSpec,
    RunbookEntry,
    without_args,
)
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Field, Status, Table
from bot.redact import redact
from procedures.checks import check_database, format_size
from procedures.dbperf import database_health_steps, explain_steps

__all__ = ["SPEC", "db_check", "db_slow"]

# Above this share of max_connections the pool is close to exhaustion.
_CONNECTIONS_WARN = 0.8
_QUERY_SHOWN_CHARS = 200


async def _server(deps: Deps) -> Outcome:
    info = await deps.db.check()
    share = info.connections / info.max_connections if info.max_connections else 0.0
    status = Status.WARN if share >= _CONNECTIONS_WARN else Status.OK
    fields = (
        Field("Server", info.server_version),
        Field("Database", info.database),
        Field("Size", format_size(info.size_bytes)),
        Field(
            "Connections",
            f"{info.connections} of {info.max_connections} ({share:.0%})",
            status,
        ),
    )
    summary = f"{info.database}: {info.connections}/{info.max_connections} connections, " + (
        f"{format_size(info.size_bytes)}, SELECT 1 in {info.latency_ms:.0f} ms"
    )
    return Outcome(status, summary, fields=fields)


async def db_check(run: Run) -> None:
    await run.step("Count users (SELECT COUNT(*) FROM users)", check_database(run.deps))
    await run.step("Server status", _server(run.deps))


def _shorten(query: str) -> str:
    one_line = " ".join(redact(query).split())
    if len(one_line) > _QUERY_SHOWN_CHARS:
        return one_line[: _QUERY_SHOWN_CHARS - 1] + "…"
    return one_line


async def _slow(deps: Deps) -> Outcome:
    min_age = deps.settings.sms_slow_query_s
    queries = await deps.db.active_queries(min_age_s=min_age)
    if not queries:
        return Outcome(Status.OK, f"no active query older than {min_age:g} s")
    table = Table(
        title=f"Active queries older than {min_age:g} s (oldest first)",
        columns=("pid", "user", "running", "query"),
        rows=tuple(
            (str(q.pid), q.user or "-", f"{q.duration_s:.1f} s", _shorten(q.query)) for q in queries
        ),
    )
    longest = max(q.duration_s for q in queries)
    return Outcome(
        Status.WARN,
        f"{len(queries)} active quer{'y' if len(queries) == 1 else 'ies'} older than "
        f"{min_age:g} s, longest {longest:.0f} s",
        details=(table,),
    )


async def db_slow(run: Run) -> None:
    await run.step("Find long-running queries (pg_stat_activity)", _slow(run.deps))
    await database_health_steps(run)
    long = await run.deps.db.active_queries(min_age_s=run.deps.settings.sms_slow_query_s)
    await explain_steps(run, long)


SPEC = ProcedureSpec(
    name="db",
    summary="The SMS database: connectivity, server status and slow queries",
    commands=(
        CommandSpec(
            "db check",
            usage="db check",
            summary="Database connectivity and server status",
            parse=without_args("db check", "Database check", db_check),
        ),
        CommandSpec(
            "db slow",
            usage="db slow",
            summary="Long queries, pool, cache hit ratio, locks, statements, EXPLAIN",
            parse=without_args("db slow", "Slow queries", db_slow),
        ),
    ),
    runbook=(
        RunbookEntry(
            "Database connectivity",
            "failed database check",
            "SELECT COUNT(*) FROM users, server status, connections",
            command="db check",
        ),
        RunbookEntry(
            "Slow database queries",
            "p95 > 1000 ms; database CPU high",
            "active queries older than 5 s from pg_stat_activity",
            command="db slow",
        ),
    ),
)
