"""The read-only runbook end to end, on real services.

A Docker engine runs a fake SMS deployment (busybox containers, the backend
serving /health), PostgreSQL holds a ``users`` table, Prometheus scrapes an
exporter with healthy or degraded figures, and the backup folder is real.
Commands go through the whole app (``build_app``) and, for exit codes and
plain output, through the ``sms-bot`` executable itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from rich.console import Console

from bot.app import build_app
from bot.chat.console import ConsoleSurface
from bot.config import Settings, load_settings
from bot.events import Command
from bot.messages import Conversation, Status, Table
from handlers.dispatch import Handled
from tests.fakes import FakeSurface
from tests.harness.docker import free_port
from tests.harness.processes import stop
from tests.integration.conftest import write_backup

pytestmark = pytest.mark.integration

SMS_BOT = str(Path(sys.executable).with_name("sms-bot"))


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})


async def _dispatch(env: dict[str, str], text: str) -> tuple[Handled, FakeSurface]:
    surface = FakeSurface()
    async with build_app(_settings(env)) as app:
        handled = await app.dispatcher.handle(
            Command(
                text=text,
                user="console:test",
                source="console",
                conversation=Conversation("console"),
            ),
            surface,
        )
    return handled, surface


def _steps(surface: FakeSurface) -> dict[str, tuple[Status, str]]:
    return {s.name: (s.status, s.summary) for s in surface.last().steps}


def _table(surface: FakeSurface) -> Table:
    tables = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    assert tables, surface.events
    return tables[0]


async def test_health_passes_on_a_healthy_deployment(deployment: dict[str, str]) -> None:
    handled, surface = await _dispatch(deployment, "/sms health")
    steps = _steps(surface)
    assert handled.exit_code == 0, steps
    assert all(status is Status.OK for status, _ in steps.values()), steps
    assert steps["Container health"][1].endswith("/3 containers running")
    assert steps["System health endpoint"][1].startswith("healthy, all 2 checks passing")
    assert steps["Performance metrics"][1] == "all 7 metrics within baseline"
    assert steps["Database connectivity"][1].startswith("connected, 18 users")
    assert "backup_20261126_020000.sql, 2.0 h old" in steps["Backup verification"][1]
    fields = {f.label: f for f in surface.last().fields}
    # Real PromQL over real scrapes: rate() extrapolation moves the last digits.
    p95 = float(fields["Response time p95"].value.split(" ms")[0])
    throughput = float(fields["Throughput"].value.split(" req/s")[0])
    assert 300 <= p95 <= 380, fields["Response time p95"]
    assert 29.0 <= throughput <= 31.5, fields["Throughput"]


async def test_health_fails_on_a_broken_deployment(
    deployment: dict[str, str],
    sms_containers: Any,
    prometheus_degraded: Any,
    pg_server: Any,
    tmp_path: Path,
) -> None:
    sms_containers.stop("postgres")
    sms_containers.set_health(
        {
            "status": "degraded",
            "checks": {
                "database": {"status": "unhealthy", "message": "connection refused"},
                "redis": {"status": "healthy"},
            },
        }
    )
    old = tmp_path / "old-backups"
    write_backup(old, "backup_20261120_020000.sql", age_h=150)
    env = {
        **deployment,
        "SMS_PROMETHEUS_URL": prometheus_degraded.url,
        "SMS_DATABASE_URL": pg_server.dsn_for("no_such_database"),
        "SMS_BACKUP_DIR": str(old),
    }
    handled, surface = await _dispatch(env, "health")
    steps = _steps(surface)
    assert handled.exit_code == 1
    assert steps["Container health"][0] is Status.CRIT
    assert (
        f"postgres ({sms_containers.services['postgres']}) exited" in steps["Container health"][1]
    )
    assert steps["System health endpoint"][0] is Status.CRIT
    assert "failing: database (unhealthy)" in steps["System health endpoint"][1]
    assert steps["Performance metrics"][0] is Status.CRIT
    for label in ("Response time p95", "Throughput", "Error rate", "CPU usage"):
        assert f"{label} " in steps["Performance metrics"][1]
    assert steps["Database connectivity"][0] is Status.FAILED
    assert "no_such_database" in steps["Database connectivity"][1]
    assert steps["Backup verification"][0] is Status.CRIT
    assert "older than 24 h" in steps["Backup verification"][1]
    assert surface.last().text.startswith("5 of 5 checks need attention.")


async def test_health_endpoint_down_is_reported_by_name(
    deployment: dict[str, str], sms_containers: Any
) -> None:
    sms_containers.stop("backend")
    handled, surface = await _dispatch(deployment, "health")
    steps = _steps(surface)
    assert handled.exit_code == 1
    status, summary = steps["System health endpoint"]
    assert status is Status.FAILED
    assert sms_containers.health_url in summary and "connection refused" in summary
    # The other checks are not held up by it.
    assert steps["Database connectivity"][0] is Status.OK
    assert steps["Performance metrics"][0] is Status.OK


async def test_logs_are_tailed_and_redacted(
    deployment: dict[str, str], sms_containers: Any
) -> None:
    handled, surface = await _dispatch(deployment, "logs backend 50")
    assert handled.exit_code == 0
    [reply] = surface.replies()
    text = reply.details[0].text  # type: ignore[union-attr]
    assert "ERROR db timeout password=[REDACTED]" in text
    assert "hunter2" not in text
    assert sms_containers.services["backend"] in _steps(surface)["Tail backend logs (50 lines)"][1]


async def test_status_lists_the_containers(deployment: dict[str, str], sms_containers: Any) -> None:
    sms_containers.stop("backup")
    handled, surface = await _dispatch(deployment, "status")
    assert handled.exit_code == 1
    rows = {row[0]: row for row in _table(surface).rows}
    backend = rows[sms_containers.services["backend"]]
    assert backend[1:3] == ("backend", "running")
    assert backend[4] != "-"
    assert rows[sms_containers.services["backup"]][2] == "exited"


async def test_db_check_and_db_slow(deployment: dict[str, str], sms_dsn: str) -> None:
    handled, surface = await _dispatch(deployment, "db check")
    assert handled.exit_code == 0
    fields = {f.label: f.value for f in surface.last().fields}
    assert fields["Database"] == sms_dsn.rsplit("/", 1)[1]
    assert " of " in fields["Connections"]

    handled, surface = await _dispatch(deployment, "db slow")
    assert _steps(surface)["Find long-running queries (pg_stat_activity)"] == (
        Status.OK,
        "no active query older than 1 s",
    )

    sleeper = await asyncpg.connect(sms_dsn)
    task = asyncio.create_task(sleeper.execute("SELECT pg_sleep(30)"))
    try:
        deadline = time.monotonic() + 15
        while True:
            handled, surface = await _dispatch(deployment, "db slow")
            # db slow also reports the pool, cache and locks: wait for the slow query itself.
            found = _steps(surface)["Find long-running queries (pg_stat_activity)"][0]
            if found is not Status.OK or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert handled.exit_code == 0  # a slow query is a warning, not a failure
        assert surface.last().status is Status.WARN
        [row] = _table(surface).rows
        assert row[3] == "SELECT pg_sleep(30)"
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        sleeper.terminate()


async def test_metrics_table_healthy_and_degraded(
    deployment: dict[str, str], prometheus_degraded: Any
) -> None:
    handled, surface = await _dispatch(deployment, "metrics")
    assert handled.exit_code == 0
    rows = {row[0]: row for row in _table(surface).rows}
    assert rows["Error rate"][1:] == ("1.3%", "1.3%", "> 2.0%", "> 5.0%", "OK")

    env = {**deployment, "SMS_PROMETHEUS_URL": prometheus_degraded.url}
    handled, surface = await _dispatch(env, "metrics")
    assert handled.exit_code == 1
    rows = {row[0]: row for row in _table(surface).rows}
    assert {row[-1] for row in rows.values()} == {"CRIT"}
    assert rows["Response time p95"][1] == "1250 ms"


async def test_backups_lists_the_newest(deployment: dict[str, str]) -> None:
    handled, surface = await _dispatch(deployment, "backups")
    assert handled.exit_code == 0
    names = [row[0] for row in _table(surface).rows]
    assert names == ["backup_20261126_020000.sql", "backup_20261125_020000.sql"]


async def test_the_run_is_recorded_with_its_steps(deployment: dict[str, str]) -> None:
    handled, _surface = await _dispatch(deployment, "backups")
    assert handled.run is not None
    settings = _settings(deployment)
    from bot.store import open_store

    store = open_store(settings.bot_state_url)
    await store.open()
    try:
        record = await store.get_run(handled.run.id)
        steps = await store.list_steps(handled.run.id)
        audit = await store.recent_audit(5)
    finally:
        await store.close()
    assert record is not None and record.status == "ok" and record.command == "backups"
    assert [s.name for s in steps] == ["List newest backups"]
    assert {a.outcome for a in audit} >= {"started", "ok"}


# -- the executable ----------------------------------------------------------------


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_", "BOT_"))}
    full.update(env)
    return subprocess.run(
        [SMS_BOT, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(env["BOT_AUDIT_LOG"]).parent,
        check=False,
    )


async def test_cli_run_health_exit_codes_and_plain_output(
    deployment: dict[str, str], sms_containers: Any
) -> None:
    ok = await asyncio.to_thread(_cli, deployment, "run", "health")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "[RUNNING] Health check"
    assert "◔ Container health …" in lines
    assert any(line.startswith("✓ Database connectivity (") for line in lines)
    assert "\x1b[" not in ok.stdout  # piped: plain text, no colours
    assert "All 5 checks passed." in ok.stdout
    assert "[OK] Health check" in ok.stdout

    sms_containers.stop("backend")
    bad = await asyncio.to_thread(_cli, deployment, "run", "health")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "✗ System health endpoint" in bad.stdout


async def test_cli_usage_and_config_errors_exit_2(deployment: dict[str, str]) -> None:
    usage = await asyncio.to_thread(_cli, deployment, "run", "logs", "nginx")
    assert usage.returncode == 2
    assert "Unknown service 'nginx'" in usage.stdout
    assert "Traceback" not in usage.stdout + usage.stderr

    no_words = await asyncio.to_thread(_cli, deployment, "run")
    assert no_words.returncode == 2

    bad = await asyncio.to_thread(
        _cli, {**deployment, "SMS_HEALTH_URL": "localhost:8080/health"}, "run", "health"
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "sms-bot: configuration error: SMS_HEALTH_URL: 'localhost:8080/health' is not an "
        "http:// or https:// URL"
    )

    checked = await asyncio.to_thread(_cli, deployment, "check-config")
    assert checked.returncode == 0
    assert "SMS_EXPECTED_CONTAINERS = 3" in checked.stdout


@pytest.fixture
def served(deployment: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(("SMS_", "BOT_"))}
        | deployment
        | {"BOT_PORT": str(port)}
    )
    proc = subprocess.Popen(
        [SMS_BOT, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(deployment["BOT_AUDIT_LOG"]).parent,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


async def test_serve_answers_health_readiness_and_metrics(served: str) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with session.get(f"{served}/healthz") as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "sms-bot serve did not start listening"
                await asyncio.sleep(0.2)
        async with session.get(f"{served}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"
        async with session.get(f"{served}/metrics") as resp:
            assert resp.status == 200
            body = await resp.text()
            assert "smsbot_commands_total" in body


async def test_console_surface_shows_progress_live_in_a_terminal(
    deployment: dict[str, str],
) -> None:
    out = io.StringIO()
    surface = ConsoleSurface(Console(file=out, force_terminal=True, width=120))
    async with build_app(_settings(deployment)) as app:
        handled = await app.dispatcher.handle(
            Command(
                text="health",
                user="console:test",
                source="console",
                conversation=Conversation("console"),
            ),
            surface,
        )
    surface.close()
    assert handled.exit_code == 0
    shown = out.getvalue()
    for name in ("Container health", "Performance metrics", "Backup verification"):
        assert name in shown


async def test_cli_runs_a_scheduled_job_now(deployment: dict[str, str]) -> None:
    done = await asyncio.to_thread(_cli, deployment, "run", "morning-summary")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 5 checks passed." in done.stdout
    assert "[OK] Morning summary" in done.stdout

    no_slack = await asyncio.to_thread(_cli, deployment, "run", "morning-summary", "--post")
    assert no_slack.returncode == 2
    assert "--post needs Slack" in no_slack.stderr
    extra = await asyncio.to_thread(_cli, deployment, "run", "morning-summary", "now")
    assert extra.returncode == 2
    post_without_job = await asyncio.to_thread(_cli, deployment, "run", "health", "--post")
    assert post_without_job.returncode == 2

    schedule = await asyncio.to_thread(_cli, deployment, "run", "schedule")
    assert schedule.returncode == 0
    for job in (
        "morning-summary",
        "backup-freshness",
        "weekly-checklist",
        "weekly-report",
        "monthly-maintenance",
    ):
        assert job in schedule.stdout
