"""The monthly reports (SLA, capacity, compliance) and the bot's retention on real services.

The SLA report reads a Prometheus whose history this test writes: two hours
of the backend's ``up`` series with a 20-minute outage, and the fake SMS
exporter's request counters, backfilled with ``promtool tsdb
create-blocks-from openmetrics`` before Prometheus starts. The window is a
test-specific "month" (those two hours), so the downtime minutes are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from bot.adapters.prometheus import PrometheusClient, PrometheusError
from bot.adapters.restore_check import THROWAWAY_PREFIX, find_pg_binary, psql_target
from bot.app import build_app
from bot.chat.base import Conversation
from bot.config import Settings, load_settings
from bot.engine import Run
from bot.events import Command
from bot.messages import Status, Table
from bot.store.base import AuditEvent
from procedures.capacity import capacity_report
from procedures.checks import format_size
from procedures.compliance import backup_integrity
from procedures.sla import Window, sla_report
from tests.fakes import FakeSurface
from tests.harness.docker import SmsContainers
from tests.harness.exporter import HEALTHY, MetricSample, format_openmetrics, samples_at
from tests.harness.processes import stop_async
from tests.harness.prometheus import _binary, free_port
from tests.integration.conftest import write_backup

pytestmark = pytest.mark.integration

SLA_JOB = "sla-backend"
HISTORY = timedelta(hours=2)
OUTAGE = (timedelta(minutes=40), timedelta(minutes=60))  # after the window's start
STEP_S = 15


@dataclass(frozen=True)
class History:
    url: str
    window: Window


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})


async def _execute(settings: Settings, procedure: Callable[[Run], Awaitable[None]]) -> Run:
    async with build_app(settings) as app:
        return await app.engine.execute(
            procedure,
            name="report",
            title="report",
            command=Command(
                text="report",
                user="sms-bot",
                source="scheduler",
                conversation=Conversation("fake", "#sms-alerts"),
            ),
            surface=FakeSurface(),
        )


def _history_text(start: datetime, end: datetime) -> str:
    down_from, down_until = start + OUTAGE[0], start + OUTAGE[1]
    points = []
    at = start
    while at <= end:
        up = 0.0 if down_from <= at < down_until else 1.0
        samples = [MetricSample("up", {}, up)]
        # The backend serves nothing while it is down: its counters stand still.
        served = min(at, down_from) - start + max(at - down_until, timedelta(0))
        samples += samples_at(HEALTHY, uptime_s=3600 + served.total_seconds())
        points.append((at.timestamp(), samples))
        at += timedelta(seconds=STEP_S)
    return format_openmetrics(points, extra_labels={"job": SLA_JOB, "instance": "backend:8000"})


@pytest.fixture
async def sla_history(tmp_path: Path) -> AsyncIterator[History]:
    """A Prometheus holding two hours of a backend with one 20-minute outage."""
    prometheus, promtool = _binary("prometheus"), _binary("promtool")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    start = end - HISTORY
    source, tsdb = tmp_path / "history.om", tmp_path / "tsdb"
    source.write_text(_history_text(start, end))
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        str(source),
        str(tsdb),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, output.decode(errors="replace")
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            client = PrometheusClient(url, session, timeout=2.0)
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                with contextlib.suppress(PrometheusError):
                    await client.ping()
                    if await client.scalar(f'count(up{{job="{SLA_JOB}"}})', at=end):
                        break
                assert server.returncode is None, (tmp_path / "prometheus.log").read_text()
                assert asyncio.get_running_loop().time() < deadline, "Prometheus not ready"
                await asyncio.sleep(0.2)
        yield History(url, Window("test window", start, end))
    finally:
        await stop_async(server)
        log.close()


def _sla_table(run: Run) -> dict[str, tuple[str, ...]]:
    surface = run.surface
    assert isinstance(surface, FakeSurface)
    [table] = [
        d
        for m in surface.replies()
        for d in m.details
        if isinstance(d, Table) and d.title.startswith("SLA commitments")
    ]
    return {row[0]: row for row in table.rows}


async def test_sla_report_over_a_written_prometheus_history(
    sla_history: History, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    write_backup(backups, "backup_a.sql", age_h=1)
    write_backup(backups, "backup_b.sql", age_h=20)
    settings = _settings(
        {
            "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
            "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "SMS_PROMETHEUS_URL": sla_history.url,
            "SMS_SLA_UP_QUERY": f'up{{job="{SLA_JOB}"}}',
            "SMS_BACKUP_DIR": str(backups),
            "SMS_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
        }
    )

    async def procedure(run: Run) -> None:
        await sla_report(run, window=sla_history.window)

    run = await _execute(settings, procedure)
    rows = _sla_table(run)
    uptime = rows["Uptime"][2]
    # 20 minutes of up == 0, counted minute by minute from the real series.
    assert " 20 min down in 120 min measured" in uptime, uptime
    assert uptime.startswith("83.33 %"), uptime
    assert "3h 19m of the 3.65 h budget left" in uptime
    assert rows["Uptime"][3] == "met"
    p95 = float(rows["Response time (p95)"][2].split()[1])
    assert 300 <= p95 <= 400, rows["Response time (p95)"]
    errors = float(rows["Error rate"][2].split()[0])
    assert abs(errors - HEALTHY.error_fraction * 100) < 0.1, rows["Error rate"]
    assert rows["Backup gap (RPO)"][3] == "met"
    assert run.text.startswith("SLA met. SLA of test window, to "), run.text
    assert run.status is Status.OK


# -- capacity ------------------------------------------------------------------------


async def test_capacity_figures_match_the_test_database(
    sla_history: History, sms_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(sms_dsn)
    try:
        await conn.execute("CREATE TABLE courses (id serial PRIMARY KEY, title text)")
        await conn.executemany(
            "INSERT INTO courses (title) VALUES ($1)", [(f"course {i}",) for i in range(5)]
        )
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    settings = _settings(
        {
            "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
            "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "SMS_PROMETHEUS_URL": sla_history.url,
            "SMS_DATABASE_URL": sms_dsn,
            "SMS_BACKUP_DIR": str(tmp_path),
            "SMS_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
        }
    )
    async with build_app(settings) as app:
        # Yesterday's sample, as the daily job would have stored it.
        yesterday = datetime.now(UTC) - timedelta(days=1)
        await app.deps.store.capacity_sample_put(
            yesterday, {"users": 16, "courses": 5, "db_bytes": size}
        )
    run = await _execute(settings, capacity_report)
    surface = run.surface
    assert isinstance(surface, FakeSurface)
    [table] = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    rows = {row[0]: row for row in table.rows}
    assert rows["Users"][1:3] == ("18", "10,000 (0.2 %)")
    assert rows["Users"][3] == "+61/month"  # 2 more users in one day
    assert rows["Courses"][1:3] == ("5", "1,000 (0.5 %)")
    assert rows["Database size"][1] == format_size(size)
    assert "no metric: Prometheus has no data" in rows["Concurrent users (30-day peak)"][1]
    disk = next(s for s in run.steps if s.name == "Disk free")
    assert disk.status is Status.OK and disk.summary.endswith("% used"), disk.summary


# -- compliance: the test restore ------------------------------------------------------


async def _throwaway_databases(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", THROWAWAY_PREFIX + "%"
        )
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def _pg_dump(dsn: str, out: Path) -> None:
    target, env = psql_target(dsn, urlsplit(dsn).path.lstrip("/"))
    proc = await asyncio.create_subprocess_exec(
        find_pg_binary("pg_dump"),
        "--no-owner",
        "--no-privileges",
        "-f",
        str(out),
        "-d",
        target,
        env={**os.environ, **env},
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")


async def test_backup_integrity_by_a_real_test_restore(sms_dsn: str, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    await _pg_dump(sms_dsn, backups / "backup_20261130_020000.sql")
    conn = await asyncpg.connect(sms_dsn)
    try:  # the live database moves on after the backup
        await conn.execute("INSERT INTO users (email) VALUES ('a@x'), ('b@x')")
    finally:
        await conn.close()
    settings = _settings(
        {
            "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
            "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "SMS_DATABASE_URL": sms_dsn,
            "SMS_BACKUP_DIR": str(backups),
        }
    )
    before = await _throwaway_databases(sms_dsn)

    async def procedure(run: Run) -> None:
        await run.step("Backup integrity (test restore)", backup_integrity(run.deps), timeout=120)

    run = await _execute(settings, procedure)
    [step] = run.steps
    assert step.status is Status.OK, step.summary
    assert "backup_20261130_020000.sql restored into sms_restore_check_" in step.summary
    assert "1 tables, 18 rows; dropped again" in step.summary
    surface = run.surface
    assert isinstance(surface, FakeSurface)
    [table] = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    assert table.rows == (("public.users", "18", "20", "+2 since"),)
    assert await _throwaway_databases(sms_dsn) == before  # dropped afterwards

    # A backup that does not load: nothing half-restored is left behind either.
    (backups / "backup_20261130_030000.sql").write_text(
        "CREATE TABLE t (id int);\nTHIS IS NOT SQL;\n"
    )
    run = await _execute(settings, procedure)
    [step] = run.steps
    assert step.status is Status.FAILED
    assert step.summary.startswith("psql failed (exit 3)"), step.summary
    assert await _throwaway_databases(sms_dsn) == before


# -- compliance: the whole report on the real services ---------------------------------

BACKEND_AUDIT = [
    {"user": "admin", "action": "login", "success": True},
    {"user": "mallory", "action": "login", "success": False},
    {"user": "mallory", "action": "login", "success": False},
    {"user": "mallory", "action": "login", "success": False},
    {"user": "admin", "action": "login", "success": False},
    {"user": "admin", "action": "user.delete", "success": True},
    {"user": "admin", "action": "user.delete", "success": True},
    {"username": "registrar", "event": "grades.export", "status": "ok"},
]


def _audit(at: datetime, actor: str, action: str, **detail: str) -> AuditEvent:
    return AuditEvent(
        at=at,
        actor=actor,
        source="slack",
        action=action,
        target=detail.pop("target", "docker-backend-1"),
        outcome="ok",
        detail=dict(detail),
    )


async def test_the_compliance_report_end_to_end_on_the_real_services(
    deployment: dict[str, str], sms_containers: SmsContainers, sms_dsn: str, tmp_path: Path
) -> None:
    # The SMS database: a table under a GDPR retention, some rows past it; then its backup.
    conn = await asyncpg.connect(sms_dsn)
    try:
        await conn.execute("CREATE TABLE login_events (id serial PRIMARY KEY, at timestamptz)")
        await conn.execute(
            "INSERT INTO login_events (at) SELECT now() - make_interval(days => d) "
            "FROM unnest(ARRAY[400, 500, 800, 10, 20]) AS d"
        )
    finally:
        await conn.close()
    backups = Path(deployment["SMS_BACKUP_DIR"])
    await _pg_dump(sms_dsn, backups / "backup_20261130_020000.sql")  # the newest

    # The backend's audit.log, in the real backend container (it has no `tail`).
    text = "\n".join(json.dumps(line) for line in BACKEND_AUDIT) + "\nnot json\n"
    await asyncio.to_thread(sms_containers.put_file, "backend", "/backend/logs/audit.log", text)

    settings = _settings(
        {
            **deployment,
            "SMS_GDPR_RETENTION": "login_events.at=365,gone.at=30",
            "SMS_OPERATORS": "U_OP",
        }
    )
    before = await _throwaway_databases(sms_dsn)
    async with build_app(settings) as app:
        now = app.deps.clock()
        store = app.deps.store
        hour = timedelta(hours=1)
        for event in (
            _audit(now - 5 * hour, "U_OP", "command", target="restart backend"),
            _audit(now - 5 * hour, "U_OP", "propose", target="restart backend"),
            _audit(now - 4 * hour, "U_OP", "change.start", target="Upgrade"),
            _audit(now - 3.5 * hour, "U_APP", "restart", proposal_id="p1"),  # inside
            _audit(now - 3 * hour, "U_OP", "change.done", target="Upgrade"),
            _audit(now - 2 * hour, "U_APP", "vacuum", proposal_id="p2", target="sms"),  # outside
        ):
            await store.audit(event)
        await store.key_rotation_add("ADMIN_PASSWORD", at=now - timedelta(days=3), by="U_OP")
        await store.key_rotation_add("API_KEY", at=now - timedelta(days=45), by="U_OP")

        surface = FakeSurface()
        command = Command(
            text="compliance", user="U_OP", source="slack", conversation=Conversation("fake", "#c")
        )
        handled = await app.dispatcher.handle(command, surface)
    run = handled.run
    assert run is not None
    steps = {s.name: s for s in run.steps}
    assert list(steps) == [
        "Audit review: the bot",
        "Audit review: backend audit.log",
        "Encryption key rotation",
        "GDPR data retention",
        "Backup integrity (test restore)",
    ]
    tables = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]

    bot = steps["Audit review: the bot"]
    assert bot.status is Status.WARN
    assert bot.summary.endswith("2 change(s), 1 outside a change window"), bot.summary
    [outside] = [t for t in tables if t.title == "Changes made outside a change window"]
    assert [row[1:4] for row in outside.rows] == [("vacuum", "sms", "U_APP")]

    backend_step = steps["Audit review: backend audit.log"]
    assert backend_step.status is Status.WARN
    assert backend_step.summary == "8 admin action(s), 4 failed login(s), 1 line(s) not JSON"
    [admin] = [t for t in tables if t.title.startswith("Backend admin actions")]
    assert admin.rows == (
        ("mallory", "login", "FAILED", "3"),
        ("admin", "login", "FAILED", "1"),
        ("admin", "user.delete", "ok", "2"),
        ("admin", "login", "ok", "1"),
        ("registrar", "grades.export", "ok", "1"),
    )

    keys = steps["Encryption key rotation"]
    assert keys.summary == "due: BACKUP_ENCRYPTION_KEY, API_KEY", keys.summary

    gdpr = steps["GDPR data retention"]
    assert gdpr.status is Status.WARN
    assert gdpr.summary == "3 row(s) past their retention", gdpr.summary
    [retention] = [t for t in tables if t.title.startswith("Rows older than their retention")]
    assert retention.rows == (
        ("login_events", "at", "365 days", "3"),
        ("gone", "at", "30 days", "no such table"),
    )

    restore = steps["Backup integrity (test restore)"]
    assert restore.status is Status.OK, restore.summary
    assert "backup_20261130_020000.sql restored into sms_restore_check_" in restore.summary
    assert "2 tables, 23 rows; dropped again" in restore.summary
    assert await _throwaway_databases(sms_dsn) == before  # the throwaway database is gone

    assert run.text.startswith("4 of 5 compliance checks need attention"), run.text
