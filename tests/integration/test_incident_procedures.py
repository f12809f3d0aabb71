"""The incident procedures on real services: Docker, PostgreSQL and Prometheus.

The fake SMS deployment runs in Docker (its backend logs
``ERROR db timeout password=hunter2``), the SMS database is a fresh
PostgreSQL database with a ``users`` table, and Prometheus scrapes the
exporter's healthy or degraded figures. Procedures run through a real
``App`` (``build_app``), the way alert routing and clicks will run them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.alerts import Alert
from bot.app import App, build_app
from bot.config import load_settings
from bot.engine import Run
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Link, Status, Table
from procedures.incident_response import (
    TERMINATE_ACTION,
    backend_down,
    high_error_rate,
    slow_responses,
    terminate_action,
)
from procedures.restart import RESTART_ACTION
from tests.fakes import FakeSurface
from tests.harness.docker import SmsContainers, wait_until
from tests.harness.exporter import DEGRADED, SLOW_HANDLER
from tests.harness.prometheus import PrometheusInstance

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(
    tmp_path: Path,
    sms_containers: SmsContainers,
    sms_dsn: str,
    prometheus_degraded: PrometheusInstance,
) -> AsyncIterator[App]:
    """The bot against a deployment in trouble: Prometheus reads the degraded profile."""
    env = {
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SMS_SERVICES": ",".join(f"{k}={v}" for k, v in sms_containers.services.items()),
        "SMS_EXPECTED_CONTAINERS": "3",
        "SMS_HEALTH_URL": sms_containers.health_url,
        "SMS_PROMETHEUS_URL": prometheus_degraded.url,
        "SMS_DATABASE_URL": sms_dsn,
        "SMS_BACKUP_DIR": str(tmp_path / "backups"),
        "SMS_CHECK_TIMEOUT_S": "8",
        "SMS_SLOW_QUERY_S": "1",
    }
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    async with build_app(settings) as built:
        yield built


def _alert(name: str) -> Alert:
    return Alert(
        fingerprint=f"fp-{name}",
        status="firing",
        labels={"alertname": name, "severity": "critical"},
        annotations={"summary": f"{name} is firing"},
    )


@dataclass
class Done:
    run: Run
    surface: FakeSurface

    @property
    def steps(self) -> dict[str, tuple[Status, str]]:
        return {s.name: (s.status, s.summary) for s in self.run.steps}

    def table(self, title_part: str) -> Table:
        tables = [
            d
            for m in self.surface.replies()
            for d in m.details
            if isinstance(d, Table) and title_part in d.title
        ]
        assert len(tables) == 1, self.surface.events
        return tables[0]

    def code(self, title_part: str) -> str:
        blocks = [
            d.text
            for m in self.surface.replies()
            for d in m.details
            if isinstance(d, CodeBlock) and title_part in d.title
        ]
        assert len(blocks) == 1, self.surface.events
        return blocks[0]


async def _execute(
    app: App, procedure: Callable[..., Coroutine[Any, Any, None]], name: str, **kwargs: Any
) -> Done:
    surface = FakeSurface()
    run = await app.engine.execute(
        partial(procedure, **kwargs),
        name=name,
        title=name,
        command=Command(
            text=name, user="console:test", source="console", conversation=Conversation("console")
        ),
        surface=surface,
    )
    return Done(run, surface)


async def test_backend_down_with_the_backend_stopped_proposes_a_restart(
    app: App, sms_containers: SmsContainers
) -> None:
    backend = sms_containers.services["backend"]
    postgres = sms_containers.services["postgres"]
    await asyncio.to_thread(sms_containers.stop, "backend")
    done = await _execute(app, backend_down, "backend_down", alert=_alert("BackendDown"))
    steps = done.steps
    status, summary = steps["Check container status"]
    assert status is Status.CRIT
    assert summary.startswith(f"{backend}: exited")
    # A stopped container's log is still there to read, secrets masked.
    assert steps["Tail backend logs"] == (
        Status.WARN,
        f"4 lines from {backend}, 1 ERROR",
    )
    log = done.code(f"{backend}: last 4 lines")
    assert "ERROR db timeout password=[REDACTED]" in log and "hunter2" not in log
    status, summary = steps["Check database"]
    assert status is Status.OK
    assert summary.startswith("connected, 18 users")
    assert f"{postgres}: 2 log lines, 0 ERROR/FATAL/PANIC" in summary
    assert "database system is ready" in done.code(f"{postgres}: last")
    assert steps["Check the restart limit"][0] is Status.OK
    # Container Won't Start: the stopped backend is diagnosed before a restart is proposed.
    assert steps[f"Inspect {backend} (docker inspect)"][0] is Status.CRIT

    [proposal] = done.run.proposals
    stored = await app.deps.store.proposal_get(proposal.id)
    assert stored is not None
    assert (stored.action, stored.status) == (RESTART_ACTION, "pending")
    assert stored.args == {"service": "backend", "container": backend}
    assert done.run.text.startswith(f"{backend} is exited;")
    assert done.run.status is Status.CRIT


async def _wait_for_active(conn: asyncpg.Connection, pid: int, *, min_age_s: float) -> None:
    async def active() -> bool:
        age = await conn.fetchval(
            "SELECT extract(epoch FROM now() - query_start) FROM pg_stat_activity"
            " WHERE pid = $1 AND state = 'active'",
            pid,
        )
        return age is not None and float(age) > min_age_s

    await wait_until(active, timeout=15, what=f"pid {pid} active for {min_age_s} s")


async def test_slow_responses_proposes_terminating_a_long_query_and_terminate_kills_it(
    app: App, sms_dsn: str
) -> None:
    sleeper = await asyncpg.connect(sms_dsn)
    watcher = await asyncpg.connect(sms_dsn)
    pid = sleeper.get_server_pid()
    sleeping = asyncio.create_task(sleeper.execute("SELECT pg_sleep(30)"))
    try:
        await _wait_for_active(watcher, pid, min_age_s=1.5)
        done = await _execute(app, slow_responses, "slow_responses", alert=_alert("SlowAPI"))
        steps = done.steps

        # Degraded Prometheus: the slow handler first, past the critical threshold.
        status, summary = steps["p95 per endpoint"]
        assert status is Status.CRIT
        rows = done.table("p95 per endpoint").rows
        assert rows[0][0] == SLOW_HANDLER and rows[0][2] == "CRIT"
        assert int(rows[0][1].removesuffix(" ms")) > DEGRADED.p95_s * 1000
        assert f"slowest {SLOW_HANDLER}" in summary

        assert steps["Active queries"][0] is Status.OK
        assert str(pid) in [row[0] for row in done.table("Active queries").rows]
        assert steps["Queries running longer than 1 s"][0] is Status.WARN

        [proposal] = [p for p in done.run.proposals if p.args["pid"] == pid]
        stored = await app.deps.store.proposal_get(proposal.id)
        assert stored is not None and stored.action == TERMINATE_ACTION
        assert stored.args["query"] == "SELECT pg_sleep(30)"
        assert stored.summary.startswith(f"terminate query pid {pid} (")
        assert f"proposed terminating pid {pid}" in done.run.text

        # The approved action, with the stored arguments.
        done = await _execute(app, terminate_action, "terminate", **stored.args)
        assert done.steps == {
            "Check the query is still the one proposed": (
                Status.OK,
                done.steps["Check the query is still the one proposed"][1],
            ),
            f"Terminate pid {pid}": (Status.OK, f"pg_terminate_backend({pid}) signalled it"),
            "Verify it is gone": (Status.OK, f"pid {pid} no longer runs the query"),
        }
        assert done.run.text.startswith(f"Terminated pid {pid}")
        # The sleeper's client got the error, long before its 30 s were up.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await asyncio.wait_for(sleeping, timeout=10)
        gone = await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        assert gone == 0

        # Clicking a second time changes nothing: that query is gone.
        again = await _execute(app, terminate_action, "terminate", **stored.args)
        assert again.steps == {
            "Check the query is still the one proposed": (
                Status.OK,
                f"pid {pid} is gone: the query has ended",
            )
        }
    finally:
        sleeping.cancel()
        with contextlib.suppress(BaseException):
            await sleeping
        sleeper.terminate()
        await watcher.close()


async def test_terminate_refuses_when_the_pid_runs_another_query(app: App, sms_dsn: str) -> None:
    """Same pid, a later query: the proposal no longer describes what runs there."""
    conn = await asyncpg.connect(sms_dsn)
    watcher = await asyncpg.connect(sms_dsn)
    pid = conn.get_server_pid()
    first = asyncio.create_task(conn.execute("SELECT pg_sleep(3)"))
    try:
        await _wait_for_active(watcher, pid, min_age_s=1.1)
        done = await _execute(app, slow_responses, "slow_responses")
        [proposal] = [p for p in done.run.proposals if p.args["pid"] == pid]
        await first
        second = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))
        try:
            await _wait_for_active(watcher, pid, min_age_s=0.1)
            refused = await _execute(app, terminate_action, "terminate", **proposal.args)
            status, summary = refused.steps["Check the query is still the one proposed"]
            assert status is Status.WARN
            assert summary.startswith(f"pid {pid} now runs another query")
            assert list(refused.steps) == ["Check the query is still the one proposed"]
            assert not second.done()  # still sleeping: nothing was terminated
        finally:
            second.cancel()
            with contextlib.suppress(BaseException):
                await second
    finally:
        conn.terminate()
        await watcher.close()


async def test_high_error_rate_groups_the_backend_errors_and_reads_rates_by_status(
    app: App, sms_containers: SmsContainers
) -> None:
    backend = sms_containers.services["backend"]
    done = await _execute(app, high_error_rate, "high_error_rate", alert=_alert("HighErrorRate"))
    steps = done.steps
    status, summary = steps["ERROR lines in backend logs, grouped by pattern"]
    assert status is Status.WARN
    assert summary.startswith(f"1 ERROR line in the last 4 of {backend}, 1 pattern;")
    assert done.table("ERROR lines by pattern").rows == (
        (
            "ERROR db timeout password=[REDACTED]",
            "1",
            "ERROR db timeout password=[REDACTED]",
        ),
    )
    assert "hunter2" not in repr(done.surface.events)

    # The degraded exporter: 8% of requests answer 500, 1% of the rest 404.
    assert steps["Error rate by status code"] == (
        Status.CRIT,
        "5xx 8.0% (crit); 500 8.0%, 422 0.0%, 403 0.0%, 404 0.9%",
    )
    rows = dict(done.table("Error rate by status code").rows)
    assert rows["5xx total"] == "8.0% (warn > 2, crit > 5)"

    fields = {f.label: f.value for f in done.run.fields}
    loki = fields["Loki logs (Grafana Explore)"]
    assert isinstance(loki, Link) and loki.url.startswith("http://localhost:3000/explore?")
    assert backend in steps["Logs in Grafana/Loki"][1]
    assert done.run.text.startswith("5xx error rate 8.0% (crit).")
