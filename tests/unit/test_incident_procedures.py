"""The three incident procedures and the terminate action, with fakes at the adapter boundary."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.adapters.docker import DockerUnavailable
from bot.adapters.postgres import DatabaseUnavailable
from bot.adapters.prometheus import DEFAULT_QUERIES, PrometheusUnavailable
from bot.alerts import Alert
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Link, Status, Table
from procedures.high_error_rate import (
    ERROR_RATE_BY_STATUS_QUERY,
    group_errors,
    high_error_rate,
    normalise,
)
from procedures.incident_response import (
    TERMINATE_ACTION,
    backend_down,
    slow_responses,
    terminate_action,
)
from procedures.restart import RESTART_ACTION
from tests.fakes import NOW, FakeSurface, active_query, container, samples
from tests.unit.conftest import make_settings

ENDPOINT_P95 = DEFAULT_QUERIES["endpoint_p95_ms"]
ALERT = Alert(
    fingerprint="abc123",
    status="firing",
    labels={"alertname": "BackendDown", "severity": "critical"},
    annotations={"summary": "Backend is down"},
)


async def _run(
    deps: Deps, procedure: Callable[..., Coroutine[Any, Any, None]], **kwargs: Any
) -> tuple[Run, FakeSurface]:
    surface = FakeSurface()
    cmd = Command("incident", "console:bob", "console", Conversation("console"))
    run = await Engine(deps).execute(
        partial(procedure, **kwargs),
        name="incident",
        title="Incident",
        command=cmd,
        surface=surface,
    )
    return run, surface


def _steps(run: Run) -> dict[str, tuple[Status, str]]:
    return {s.name: (s.status, s.summary) for s in run.steps}


def _details(surface: FakeSurface) -> list[CodeBlock | Table]:
    return [d for m in surface.replies() for d in m.details]


def _table(surface: FakeSurface, title_part: str) -> Table:
    tables = [d for d in _details(surface) if isinstance(d, Table) and title_part in d.title]
    assert len(tables) == 1, [d.title for d in _details(surface)]
    return tables[0]


# -- Backend Down (P0) -----------------------------------------------------------


async def test_backend_down_on_a_stopped_backend_proposes_a_restart(deps: Deps) -> None:
    deps.docker.containers = [  # type: ignore[attr-defined]
        container("docker-backend-1", service="backend", state="exited", health=None),
        container("docker-postgres-1", service="postgres"),
    ]
    deps.docker.service_logs = {  # type: ignore[attr-defined]
        "backend": "INFO up\nERROR db timeout password=hunter2\nERROR db timeout\nINFO bye",
        "postgres": "LOG:  ready\nFATAL:  password authentication failed for user sms",
    }
    run, surface = await _run(deps, backend_down, alert=ALERT)
    steps = _steps(run)
    assert list(steps) == [
        "Check container status",
        "Tail backend logs",
        "Check database",
        # Container Won't Start: the runbook's diagnosis of the exited container.
        "Inspect docker-backend-1 (docker inspect)",
        "Last 50 log lines",
        "Port conflicts",
        "Mounts with a missing source",
        "Environment variables (names only)",
        "Check the restart limit",
    ]
    assert steps["Check container status"] == (
        Status.CRIT,
        "docker-backend-1: exited (Exited (1))",
    )
    assert steps["Tail backend logs"] == (Status.WARN, "4 lines from docker-backend-1, 2 ERROR")
    assert steps["Check database"] == (
        Status.WARN,
        "connected, 18 users (2 ms); docker-postgres-1: 2 log lines, 1 ERROR/FATAL/PANIC",
    )
    assert steps["Check the restart limit"][0] is Status.OK
    # The runbook's line counts, and both logs shown redacted in the thread.
    assert deps.docker.log_calls == [("backend", 100), ("postgres", 50), ("backend", 50)]  # type: ignore[attr-defined]
    blocks = {d.title: d.text for d in _details(surface) if isinstance(d, CodeBlock)}
    assert "ERROR db timeout password=[REDACTED]" in blocks["docker-backend-1: last 4 lines"]
    assert "FATAL:  password authentication" in blocks["docker-postgres-1: last 2 lines"]
    assert not any("hunter2" in text for text in blocks.values())

    [proposal] = run.proposals
    assert proposal.action == RESTART_ACTION
    assert proposal.args == {"service": "backend", "container": "docker-backend-1"}
    stored = await deps.store.proposal_get(proposal.id)
    assert stored is not None and stored.status == "pending"
    assert run.text == (
        "docker-backend-1 is exited; 2 ERROR lines in its last log; the database answers.\n"
        "Why it does not run: exited with code 1.\n"
        "Proposed: restart docker-backend-1. Waiting for an approver's click."
    )
    assert run.status is Status.CRIT


async def test_backend_down_stops_at_the_restart_limit(deps: Deps) -> None:
    for _ in range(deps.settings.sms_restart_limit):
        await deps.audit.record(
            at=NOW - timedelta(minutes=5),
            actor="console:alice",
            source="console",
            action=RESTART_ACTION,
            target="docker-backend-1",
            outcome="ok",
        )
    run, _surface = await _run(deps, backend_down)
    assert _steps(run)["Check the restart limit"] == (
        Status.WARN,
        "3 of 3 restarts used in the last 60 minutes",
    )
    assert run.proposals == []
    assert "Not proposing a restart of docker-backend-1" in run.text
    assert "full system rollback" in run.text


async def test_backend_down_goes_on_when_docker_and_the_database_fail(deps: Deps) -> None:
    deps.docker.log_errors = {  # type: ignore[attr-defined]
        "backend": DockerUnavailable("Docker engine is not reachable"),
        "postgres": DockerUnavailable("Docker engine is not reachable"),
    }
    deps.db.error = DatabaseUnavailable("cannot connect to the SMS database: refused")  # type: ignore[attr-defined]
    run, _surface = await _run(deps, backend_down)
    steps = _steps(run)
    assert steps["Tail backend logs"] == (Status.FAILED, "Docker engine is not reachable")
    assert steps["Check database"] == (
        Status.CRIT,
        "query failed: cannot connect to the SMS database: refused; "
        "docker-postgres-1 log unavailable: Docker engine is not reachable",
    )
    # The failed steps did not stop the procedure: the restart is still proposed.
    assert [p.action for p in run.proposals] == [RESTART_ACTION]
    assert run.text.startswith(
        "docker-backend-1 is running and healthy; the database query failed."
    )


async def test_backend_down_does_not_propose_restarting_a_missing_container(deps: Deps) -> None:
    deps.docker.containers = [container("docker-postgres-1", service="postgres")]  # type: ignore[attr-defined]
    run, _surface = await _run(deps, backend_down)
    assert _steps(run)["Check container status"] == (
        Status.CRIT,
        "Container backend (docker-backend-1) does not exist.",
    )
    assert run.proposals == []
    assert "Check the restart limit" not in _steps(run)
    assert "there is no docker-backend-1 to restart" in run.text


# -- Slow Response Times (P1) -----------------------------------------------------


def _p95(deps: Deps, values: dict[str, float]) -> None:
    deps.prometheus.samples[ENDPOINT_P95] = samples("handler", values)  # type: ignore[attr-defined]


async def test_slow_responses_healthy(deps: Deps) -> None:
    _p95(deps, {"/health": 4.0, "/api/v1/students": 180.0, "/api/v1/courses": 320.0})
    deps.db.queries = [active_query(101, age_s=0.2, query="SELECT 1")]  # type: ignore[attr-defined]
    run, surface = await _run(deps, slow_responses)
    steps = _steps(run)
    assert list(steps) == [
        "p95 per endpoint",
        "Active queries",
        "Queries running longer than 5 s",
        # The runbook's degradation actions (issue 11).
        "Connection pool (pg_stat_activity)",
        "Cache hit ratio (pg_stat_database)",
        "Locks (pg_locks)",
        "Statements (pg_stat_statements)",
    ]
    assert steps["Locks (pg_locks)"] == (Status.OK, "no query waits on a lock")
    assert steps["Statements (pg_stat_statements)"][1].startswith(
        "pg_stat_statements is not installed"
    )
    assert steps["p95 per endpoint"] == (
        Status.OK,
        "all 3 endpoints within 500 ms; slowest /api/v1/courses 320 ms",
    )
    assert steps["Active queries"] == (Status.OK, "1 active query, longest running 0.2 s")
    assert steps["Queries running longer than 5 s"] == (Status.OK, "none running longer than 5 s")
    assert run.proposals == []
    assert run.status is Status.OK
    assert run.text == (
        "Slowest endpoint /api/v1/courses: p95 320 ms (ok).\n"
        "No database query runs longer than 5 s."
    )
    rows = _table(surface, "p95 per endpoint").rows
    assert [r[0] for r in rows] == ["/api/v1/courses", "/api/v1/students", "/health"]
    fields = {f.label: f.value for f in run.fields}
    assert fields["Application Performance dashboard"] == Link(
        "Grafana", "http://localhost:3000/d/app-performance"
    )


async def test_slow_responses_judges_each_endpoint_and_proposes_terminating_long_queries(
    deps: Deps,
) -> None:
    _p95(deps, {"/health": float("nan"), "/api/v1/students": 640.0, "/api/v1/courses": 1875.0})
    long_one = active_query(
        4242, age_s=42.4, query="SELECT * FROM grades WHERE secret_token='abc123xyz'"
    )
    deps.db.queries = [  # type: ignore[attr-defined]
        long_one,
        active_query(4243, age_s=7.0, query="UPDATE courses SET name = $1"),
        active_query(4244, age_s=1.0, query="SELECT 1"),
        active_query(4245, age_s=60.0, query="SELECT 2", state="idle"),
    ]
    run, surface = await _run(deps, slow_responses)
    steps = _steps(run)
    assert steps["p95 per endpoint"] == (
        Status.CRIT,
        "2 of 3 endpoints over 500 ms; slowest /api/v1/courses 1875 ms (crit)",
    )
    rows = _table(surface, "p95 per endpoint").rows
    assert rows == (
        ("/api/v1/courses", "1875 ms", "CRIT"),
        ("/api/v1/students", "640 ms", "WARN"),
        ("/health", "no requests", "-"),
    )
    assert steps["Active queries"] == (Status.OK, "3 active queries, longest running 42.4 s")
    assert steps["Queries running longer than 5 s"] == (
        Status.WARN,
        "2 queries running longer than 5 s, longest 42 s",
    )
    first, second = run.proposals
    assert first.action == TERMINATE_ACTION
    assert first.args == {
        "pid": 4242,
        "query_start": (NOW - timedelta(seconds=42.4)).isoformat(),
        "query": "SELECT * FROM grades WHERE secret_token='[REDACTED]'",
    }
    assert first.summary == (
        "terminate query pid 4242 (42s): SELECT * FROM grades WHERE secret_token='[REDACTED]'"
    )
    assert second.args["pid"] == 4243
    stored = await deps.store.proposal_get(first.id)
    assert stored is not None and stored.args == first.args
    # The buttons carry the pid in their label.
    labels = [b.label for m in surface.replies() for b in m.buttons]
    assert "Terminate 4242" in labels and "Terminate 4243" in labels
    assert run.text.splitlines() == [
        "Slowest endpoint /api/v1/courses: p95 1875 ms (crit).",
        "2 database queries run longer than 5 s; proposed terminating pid 4242, 4243.",
        "Escalation (runbook, Slow Response Times): if p95 stays above 2000 ms for 15+ "
        "minutes, scale up resources.",
    ]


async def test_at_most_five_terminate_proposals(deps: Deps) -> None:
    _p95(deps, {"/api/v1/courses": 1200.0})
    deps.db.queries = [active_query(1000 + i, age_s=100.0 - i) for i in range(8)]  # type: ignore[attr-defined]
    run, _surface = await _run(deps, slow_responses)
    assert [p.args["pid"] for p in run.proposals] == [1000, 1001, 1002, 1003, 1004]
    assert "8 database queries run longer than 5 s" in run.text
    assert "3 more not proposed (at most 5 at a time)" in run.text


async def test_slow_responses_goes_on_without_prometheus(deps: Deps) -> None:
    deps.prometheus.unavailable = PrometheusUnavailable("http://localhost:9090: connection refused")  # type: ignore[attr-defined]
    deps.db.queries = [active_query(7, age_s=9.0)]  # type: ignore[attr-defined]
    run, _surface = await _run(deps, slow_responses)
    steps = _steps(run)
    assert steps["p95 per endpoint"] == (Status.FAILED, "http://localhost:9090: connection refused")
    assert steps["Queries running longer than 5 s"][0] is Status.WARN
    assert [p.args["pid"] for p in run.proposals] == [7]
    assert run.text.startswith("The p95 per endpoint could not be read.")


async def test_slow_responses_without_latency_data_warns(deps: Deps) -> None:
    run, _surface = await _run(deps, slow_responses)
    assert _steps(run)["p95 per endpoint"] == (
        Status.WARN,
        "Prometheus has no per-endpoint latency data",
    )


# -- the terminate action ----------------------------------------------------------


async def _proposed_args(deps: Deps) -> dict[str, Any]:
    _p95(deps, {"/api/v1/courses": 1200.0})
    deps.db.queries = [active_query(4242, age_s=42.0)]  # type: ignore[attr-defined]
    run, _surface = await _run(deps, slow_responses)
    [proposal] = run.proposals
    # The click side reads the args back from the store, as JSON.
    stored = await deps.store.proposal_get(proposal.id)
    assert stored is not None
    return dict(json.loads(json.dumps(stored.args)))


async def test_terminate_action_terminates_the_proposed_query(deps: Deps) -> None:
    args = await _proposed_args(deps)
    run, _surface = await _run(deps, terminate_action, **args)
    steps = _steps(run)
    assert steps == {
        "Check the query is still the one proposed": (
            Status.OK,
            "pid 4242 still runs it (42 s so far)",
        ),
        "Terminate pid 4242": (Status.OK, "pg_terminate_backend(4242) signalled it"),
        "Verify it is gone": (Status.OK, "pid 4242 no longer runs the query"),
    }
    assert deps.db.terminated == [4242]  # type: ignore[attr-defined]
    assert run.text == "Terminated pid 4242 (query started 07:29:18 UTC: SELECT pg_sleep(30))."
    assert run.status is Status.OK


async def test_terminate_action_refuses_a_reused_pid(deps: Deps) -> None:
    args = await _proposed_args(deps)
    # The proposed query ended; a new connection got pid 4242 and runs something else.
    deps.db.queries = [active_query(4242, age_s=3.0, query="SELECT * FROM students")]  # type: ignore[attr-defined]
    run, _surface = await _run(deps, terminate_action, **args)
    assert _steps(run) == {
        "Check the query is still the one proposed": (
            Status.WARN,
            "pid 4242 now runs another query (started 07:29:57 UTC, not 07:29:18 UTC)",
        ),
    }
    assert deps.db.terminated == []  # type: ignore[attr-defined]
    assert run.text.startswith("Not terminating pid 4242")
    assert run.text.endswith("Nothing was changed.")


async def test_terminate_action_refuses_when_the_query_has_ended(deps: Deps) -> None:
    args = await _proposed_args(deps)
    deps.db.queries = []  # type: ignore[attr-defined]
    run, _surface = await _run(deps, terminate_action, **args)
    assert _steps(run) == {
        "Check the query is still the one proposed": (
            Status.OK,
            "pid 4242 is gone: the query has ended",
        ),
    }
    # Same pid and start, but finished: the connection sits idle. Not terminated either.
    deps.db.queries = [replace(active_query(4242, age_s=42.0), state="idle")]  # type: ignore[attr-defined]
    run, _surface = await _run(deps, terminate_action, **args)
    assert _steps(run)["Check the query is still the one proposed"] == (
        Status.OK,
        "pid 4242 is idle: the query has ended",
    )
    assert deps.db.terminated == []  # type: ignore[attr-defined]


async def test_terminate_action_refuses_when_it_cannot_check(deps: Deps) -> None:
    args = await _proposed_args(deps)
    deps.db.error = DatabaseUnavailable("cannot connect to the SMS database: refused")  # type: ignore[attr-defined]
    run, _surface = await _run(deps, terminate_action, **args)
    assert list(_steps(run)) == ["Check the query is still the one proposed"]
    assert run.status is Status.FAILED
    assert "could not check" in run.text
    assert deps.db.terminated == []  # type: ignore[attr-defined]


async def test_terminate_action_reports_a_backend_that_does_not_go(
    deps: Deps, tmp_path: Path
) -> None:
    args = await _proposed_args(deps)
    deps.db.survives_terminate = True  # type: ignore[attr-defined]
    # The wait for it to go is the check timeout: keep it short here.
    deps = replace(deps, settings=make_settings(tmp_path, sms_check_timeout_s=0.3))
    run, _surface = await _run(deps, terminate_action, **args)
    assert _steps(run)["Verify it is gone"] == (
        Status.CRIT,
        "pid 4242 still runs the query after 0.3 s",
    )
    assert deps.db.terminated == [4242]  # type: ignore[attr-defined]
    assert run.text.startswith("Asked PostgreSQL to terminate pid 4242")
    assert "could not confirm it is gone" in run.text


# -- High Error Rate (P2) -------------------------------------------------------------


def test_normalise_replaces_what_varies() -> None:
    assert normalise("2026-11-26 07:30:01,123 ERROR db timeout after 5000 ms") == (
        "<n>-<n>-<n> <n>:<n>:<n> ERROR db timeout after <n> ms"
    )
    assert normalise(
        "ERROR user 42 not found (request 3f2b1c9e-1234-4abc-9def-0123456789ab) name='Ann Lee'"
    ) == ("ERROR user <n> not found (request <uuid>) name=<str>")
    assert normalise('ERROR HTTP 500 on "/api/v1/x" at 0x7ffd1234, trace deadbeef01') == (
        "ERROR HTTP 500 on <str> at <hex>, trace <hex>"
    )
    assert normalise("ERROR status=404 for user_123") == "ERROR status=404 for user_<n>"


def test_group_errors_counts_patterns_and_redacts_examples() -> None:
    text = "\n".join(
        [
            "INFO fine 1",
            "ERROR user 1 not found",
            "ERROR db timeout password=hunter2",
            "ERROR user 2 not found",
            "WARNING almost",
            "ERROR user 3 not found",
            "ERROR db timeout password=swordfish",
            "ERROR disk full on /dev/sda1",
        ]
    )
    groups = group_errors(text)
    assert [(g.pattern, g.count, g.example) for g in groups] == [
        ("ERROR user <n> not found", 3, "ERROR user 1 not found"),
        (
            "ERROR db timeout password=[REDACTED]",
            2,
            "ERROR db timeout password=[REDACTED]",
        ),
        ("ERROR disk full on /dev/sda<n>", 1, "ERROR disk full on /dev/sda1"),
    ]


def _error_rates(deps: Deps, values: dict[str, float]) -> None:
    deps.prometheus.samples[ERROR_RATE_BY_STATUS_QUERY] = samples("status", values)  # type: ignore[attr-defined]


async def test_high_error_rate_groups_log_errors_and_rates_by_status(deps: Deps) -> None:
    lines = [f"ERROR request {i} failed: db timeout after {i * 10} ms" for i in range(30)]
    lines += [f"ERROR user {i} not allowed password=pw{i}" for i in range(5)]
    lines += [f"ERROR unique pattern number {i} kind {chr(97 + i) * 3}" for i in range(12)]
    deps.docker.log_text = "\n".join(["INFO start", *lines])  # type: ignore[attr-defined]
    _error_rates(deps, {"500": 7.5, "503": 1.0, "404": 0.9, "422": 0.2})
    run, surface = await _run(deps, high_error_rate, alert=ALERT)
    steps = _steps(run)
    assert list(steps) == [
        "ERROR lines in backend logs, grouped by pattern",
        "Error rate by status code",
        "Logs in Grafana/Loki",
    ]
    assert deps.docker.log_calls == [("backend", 1000)]  # type: ignore[attr-defined]
    status, summary = steps["ERROR lines in backend logs, grouped by pattern"]
    assert status is Status.WARN
    assert summary.startswith("47 ERROR lines in the last 48 of docker-backend-1, 14 patterns;")
    table = _table(surface, "ERROR lines by pattern")
    assert table.title.startswith("docker-backend-1: ERROR lines by pattern (top 10 of 14")
    assert len(table.rows) == 10
    assert table.rows[0] == (
        "ERROR request <n> failed: db timeout after <n> ms",
        "30",
        "ERROR request 0 failed: db timeout after 0 ms",
    )
    assert table.rows[1] == (
        "ERROR user <n> not allowed password=[REDACTED]",
        "5",
        "ERROR user 0 not allowed password=[REDACTED]",
    )
    assert steps["Error rate by status code"] == (
        Status.CRIT,
        "5xx 8.5% (crit); 500 7.5%, 422 0.2%, 403 0.0%, 404 0.9%",
    )
    rates = _table(surface, "Error rate by status code").rows
    assert rates == (
        ("500", "7.5%"),
        ("422", "0.2%"),
        ("403", "0.0%"),
        ("404", "0.9%"),
        ("503", "1.0%"),
        ("5xx total", "8.5% (warn > 2, crit > 5)"),
        ("4xx total", "1.1%"),
    )
    fields = {f.label: f for f in run.fields}
    assert fields["5xx error rate"].status is Status.CRIT
    loki = fields["Loki logs (Grafana Explore)"].value
    assert isinstance(loki, Link)
    link = urlsplit(loki.url)
    assert (link.scheme, link.netloc, link.path) == ("http", "localhost:3000", "/explore")
    assert " " not in loki.url
    state = json.loads(parse_qs(link.query)["left"][0])
    assert state["queries"][0]["expr"] == '{container="docker-backend-1"} |= "ERROR"'
    assert steps["Logs in Grafana/Loki"] == (
        Status.OK,
        '{container="docker-backend-1"} |= "ERROR"',
    )
    assert run.text.splitlines() == [
        "5xx error rate 8.5% (crit).",
        "Most frequent error (30x): ERROR request 0 failed: db timeout after 0 ms",
        "Next (runbook): review recent deployments and configuration changes.",
    ]


async def test_high_error_rate_above_ten_percent_says_roll_back(deps: Deps) -> None:
    _error_rates(deps, {"500": 12.0})
    run, _surface = await _run(deps, high_error_rate)
    assert run.text.splitlines()[-1].startswith("Escalation (runbook, High Error Rate)")
    assert "roll back to the previous version" in run.text


async def test_high_error_rate_healthy(deps: Deps) -> None:
    deps.docker.log_text = "INFO up\nINFO request ok"  # type: ignore[attr-defined]
    _error_rates(deps, {"500": 1.2, "404": 0.5})
    run, _surface = await _run(deps, high_error_rate)
    steps = _steps(run)
    assert steps["ERROR lines in backend logs, grouped by pattern"] == (
        Status.OK,
        "no ERROR line in the last 2 lines of docker-backend-1",
    )
    assert steps["Error rate by status code"] == (
        Status.OK,
        "5xx 1.2% (ok); 500 1.2%, 422 0.0%, 403 0.0%, 404 0.5%",
    )
    assert run.status is Status.OK
    assert "No ERROR line in the backend's recent log." in run.text
    assert "Escalation" not in run.text


async def test_high_error_rate_without_traffic_or_prometheus(deps: Deps) -> None:
    _error_rates(deps, {"500": float("nan")})
    run, _surface = await _run(deps, high_error_rate)
    assert _steps(run)["Error rate by status code"] == (
        Status.WARN,
        "no requests in the last 5 minutes",
    )
    deps.prometheus.unavailable = PrometheusUnavailable("http://localhost:9090: connection refused")  # type: ignore[attr-defined]
    run, _surface = await _run(deps, high_error_rate)
    steps = _steps(run)
    assert steps["Error rate by status code"][0] is Status.FAILED
    # The other steps still ran.
    assert steps["Logs in Grafana/Loki"][0] is Status.OK
    assert run.text.startswith("The error rate could not be read from Prometheus.")
