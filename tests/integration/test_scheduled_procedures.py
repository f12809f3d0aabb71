"""The scheduled procedures and their actions on real services.

A Docker engine runs the fake SMS deployment, PostgreSQL holds the SMS
database, Prometheus scrapes the exporter (about 7 minutes of history, so
"yesterday" has no data), Alertmanager holds an alert, and the backup
folder is real. The manual backup runs a real ``docker exec`` in a busybox
container that has the backup folder mounted, with a busybox command in
place of the SMS backup service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import docker.errors
import pytest

from bot.adapters.docker import DockerAdapter, ExecTimeout
from bot.app import build_app
from bot.config import Settings, load_settings
from bot.engine import Run
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Status, Table
from bot.store.base import Incident
from procedures.backup import backup_action
from procedures.backup_freshness import backup_freshness
from procedures.monthly import monthly_maintenance
from procedures.morning_summary import morning_summary
from procedures.vacuum import database_name, vacuum_action
from procedures.weekly import weekly_checklist, weekly_report
from tests.fakes import FakeSurface
from tests.harness.alertmanager import AlertmanagerFactory
from tests.harness.docker import DockerEngine, SmsContainers, free_port
from tests.harness.exporter import HEALTHY, SLOW_HANDLER
from tests.harness.prometheus import PrometheusInstance
from tests.integration.conftest import write_backup

pytestmark = pytest.mark.integration

TEST_LABEL = "sms-bot-test"


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})


@dataclass
class Done:
    run: Run
    surface: FakeSurface

    @property
    def steps(self) -> dict[str, tuple[Status, str]]:
        return {s.name: (s.status, s.summary) for s in self.run.steps}

    @property
    def text(self) -> str:
        return self.surface.last().text

    def table(self, title_part: str) -> Table:
        tables = [
            d
            for m in self.surface.replies()
            for d in m.details
            if isinstance(d, Table) and title_part in d.title
        ]
        assert len(tables) == 1, self.surface.events
        return tables[0]

    def code(self) -> list[CodeBlock]:
        return [d for m in self.surface.replies() for d in m.details if isinstance(d, CodeBlock)]


async def _execute(
    env: dict[str, str] | Settings,
    procedure: Callable[[Run], Awaitable[None]],
    name: str = "job",
    *,
    before: Callable[[Any], Awaitable[None]] | None = None,
) -> Done:
    settings = env if isinstance(env, Settings) else _settings(env)
    surface = FakeSurface()
    async with build_app(settings) as app:
        if before is not None:
            await before(app)
        run = await app.engine.execute(
            procedure,
            name=name,
            title=name,
            command=Command(
                text=f"scheduled {name}",
                user="sms-bot",
                source="scheduler",
                conversation=Conversation("fake", "#sms-alerts"),
            ),
            surface=surface,
        )
    return Done(run, surface)


# -- morning summary --------------------------------------------------------------


async def test_morning_summary_on_a_healthy_deployment(deployment: dict[str, str]) -> None:
    done = await _execute(deployment, morning_summary, "morning-summary")
    lines = done.text.splitlines()
    assert done.run.status is Status.OK, done.steps
    assert lines[0] == "All 5 checks passed."
    assert [line.split(":")[0] for line in lines[1:]] == [
        "✓ Container health",
        "✓ System health endpoint",
        "✓ Performance metrics",
        "✓ Database connectivity",
        "✓ Backup verification",
    ]
    assert "Response time p95 3" in lines[3] and "(warn > 500, crit > 1000)" in lines[3]
    assert lines[5].endswith("(limit 24 h)")
    # Prometheus holds minutes of history: nothing to compare with 24 h ago.
    assert done.steps["Compare with yesterday"] == (Status.OK, "no data for yesterday")
    fields = {f.label: f.value for f in done.surface.last().fields}
    p95 = fields["p95"]
    assert p95.endswith(" ms (no data for yesterday)"), p95
    assert 300 <= float(p95.split(" ms")[0]) <= 380
    assert fields["throughput"].endswith(" req/s (no data for yesterday)")


async def test_morning_summary_on_a_broken_deployment(
    deployment: dict[str, str],
    sms_containers: SmsContainers,
    prometheus_degraded: PrometheusInstance,
    pg_server: Any,
    tmp_path: Path,
) -> None:
    await asyncio.to_thread(sms_containers.stop, "postgres")
    sms_containers.set_health(
        {"status": "degraded", "checks": {"database": {"status": "unhealthy"}}}
    )
    old = tmp_path / "old-backups"
    write_backup(old, "backup_20261120_020000.sql", age_h=150)
    env = {
        **deployment,
        "SMS_PROMETHEUS_URL": prometheus_degraded.url,
        "SMS_DATABASE_URL": pg_server.dsn_for("no_such_database"),
        "SMS_BACKUP_DIR": str(old),
    }
    done = await _execute(env, morning_summary, "morning-summary")
    text = done.text
    assert done.run.status is Status.FAILED
    assert text.startswith("5 of 5 checks need attention.\n")
    assert f"postgres ({sms_containers.services['postgres']}) exited" in text
    assert "failing: database (unhealthy)" in text
    assert "✗ Database connectivity: " in text and "no_such_database" in text
    for action in (
        "→ Check the container's logs",
        "→ Check the failing component",
        "→ Investigate the alerts in Alertmanager",
        "→ Check the PostgreSQL logs",
        "→ Trigger a manual backup",
    ):
        assert action in text, text
    perf = next(line for line in text.splitlines() if line.startswith("✗ Performance metrics"))
    assert "Response time p95" in perf and "Throughput" in perf and "Disk usage" in perf


# -- backups: the check, the proposal, and a real docker exec ----------------------


@pytest.fixture
def backup_container(
    docker_engine: DockerEngine, busybox_image: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """A busybox 'backup container' with the backup folder mounted at /backups."""
    backups = tmp_path / "shared-backups"
    backups.mkdir()
    name = f"smsbot-{uuid.uuid4().hex[:8]}-backup"
    docker_engine.client.containers.run(
        busybox_image,
        ["/bin/busybox", "sleep", "3600"],
        name=name,
        detach=True,
        network_mode="host",
        labels={TEST_LABEL: "1"},
        stop_signal="SIGKILL",
        volumes={str(backups): {"bind": "/backups", "mode": "rw"}},
    )
    try:
        yield name, backups
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_engine.client.api.remove_container(name, force=True)


def _backup_env(tmp_path: Path, container: str, backups: Path) -> dict[str, str]:
    return {
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SMS_SERVICES": f"backup={container}",
        "SMS_BACKUP_DIR": str(backups),
        "SMS_CHECK_TIMEOUT_S": "8",
    }


# The test container has no SMS backup service: busybox writes the dump instead.
_WRITE_DUMP = (
    "/bin/busybox",
    "sh",
    "-c",
    "echo 'connecting to postgresql://sms:hunter2@db/sms'; "
    "printf -- '-- PostgreSQL database dump\\nSET x = 1;\\n' > /backups/backup_new.sql; "
    "echo 'backup written to /backups/backup_new.sql'",
)


async def test_stale_backup_proposal_then_a_real_manual_backup(
    backup_container: tuple[str, Path], tmp_path: Path
) -> None:
    container, backups = backup_container
    write_backup(backups, "backup_20261120_020000.sql", age_h=40)
    env = _backup_env(tmp_path, container, backups)

    checked = await _execute(env, backup_freshness, "backup-freshness")
    assert checked.steps["Check the newest backup"][0] is Status.CRIT
    [proposal] = checked.run.proposals
    assert proposal.action == "backup"
    assert proposal.args == {"service": "backup", "container": container}

    done = await _execute(env, partial(backup_action, **proposal.args, argv=_WRITE_DUMP), "backup")
    assert done.run.status is Status.OK, done.steps
    assert done.steps[f"Run the manual backup in {container}"] == (
        Status.OK,
        "exited with code 0, 2 lines of output",
    )
    status, summary = done.steps["Verify a new backup appeared"]
    assert status is Status.OK and summary.startswith("backup_new.sql, ")
    assert (backups / "backup_new.sql").read_text().startswith("-- PostgreSQL database dump")
    [output] = done.code()
    assert "backup written to /backups/backup_new.sql" in output.text
    assert "hunter2" not in output.text and "[REDACTED]" in output.text

    # Now the check is green and proposes nothing.
    again = await _execute(env, backup_freshness, "backup-freshness")
    assert again.run.status is Status.OK and again.run.proposals == []


async def test_a_failing_backup_command_is_reported(
    backup_container: tuple[str, Path], tmp_path: Path
) -> None:
    container, backups = backup_container
    argv = ("/bin/busybox", "sh", "-c", "echo 'pg_dump: error: connection refused' >&2; exit 3")
    done = await _execute(
        _backup_env(tmp_path, container, backups),
        partial(backup_action, service="backup", container=container, argv=argv),
        "backup",
    )
    assert done.run.status is Status.CRIT
    assert done.steps == {
        f"Run the manual backup in {container}": (
            Status.CRIT,
            "exited with code 3: pg_dump: error: connection refused",
        )
    }


async def test_docker_exec_is_bounded(
    backup_container: tuple[str, Path], docker_engine: DockerEngine
) -> None:
    container, _backups = backup_container
    async with DockerAdapter({"backup": container}, base_url=docker_engine.base_url) as adapter:
        result = await adapter.exec(
            "backup", ("/bin/busybox", "sh", "-c", "echo out; echo err >&2")
        )
        assert result.exit_code == 0
        assert sorted(result.output.splitlines()) == ["err", "out"]
        t0 = time.monotonic()
        with pytest.raises(ExecTimeout, match="did not finish within 1 s"):
            await adapter.exec("backup", ("/bin/busybox", "sleep", "30"), timeout_s=1)
        assert time.monotonic() - t0 < 10


# -- weekly ---------------------------------------------------------------------


async def test_weekly_checklist_on_real_services(
    deployment: dict[str, str], alertmanager_factory: AlertmanagerFactory
) -> None:
    am = await alertmanager_factory(
        webhook_url=f"http://127.0.0.1:{free_port()}/alerts/alertmanager", token="t"
    )
    env = {**deployment, "SMS_ALERTMANAGER_URL": am.url}

    async def history(app: Any) -> None:
        now = datetime.now(UTC)
        await app.deps.alertmanager.post_alerts(
            [
                {
                    "labels": {"alertname": "DiskFilling", "severity": "warning"},
                    "annotations": {"summary": "disk filling"},
                    "startsAt": now - timedelta(minutes=5),
                }
            ]
        )
        incident = Incident(
            id=uuid.uuid4().hex,
            fingerprint="fp-backend",
            title="BackendDown: backend /health failing",
            priority="P0",
            procedure="backend_down",
            labels={"alertname": "BackendDown"},
            annotations={},
            opened_at=now - timedelta(days=2),
            opened_by="alertmanager",
        )
        await app.deps.store.incident_open(incident)
        await app.deps.store.incident_resolve(
            incident.id, now=incident.opened_at + timedelta(minutes=7)
        )

    done = await _execute(env, weekly_checklist, "weekly-checklist", before=history)
    assert done.run.status is Status.OK, done.steps
    disk = done.steps["Check disk space"][1]
    assert disk.startswith("3.0% used") or disk.startswith("2.9% used"), disk
    assert done.steps["Review alert history (7 days)"] == (
        Status.OK,
        "1 incident (P0 1); 1 alert active in Alertmanager",
    )
    rows = done.table("Alert history").rows
    assert [row[:3] for row in rows] == [
        ("incident", "P0", "BackendDown: backend /health failing"),
        ("active now", "warning", "DiskFilling"),
    ]
    assert rows[0][4] == "resolved in 7 min"
    assert done.steps["Verify backup integrity"][1].endswith(
        "is readable: PostgreSQL database dump (plain SQL)"
    )


async def test_weekly_report_on_real_prometheus(deployment: dict[str, str]) -> None:
    # The full week: only the newest hourly point has data here, and it is reported.
    week = await _execute(deployment, weekly_report, "weekly-report")
    perf = week.table("Performance ")
    assert "mean of 1 sample," in perf.title
    assert [row[0] for row in perf.rows] == [
        "Response time p95",
        "Response time p99",
        "Throughput",
        "Error rate",
    ]
    assert all(row[5] == "OK" for row in perf.rows), perf.rows

    # A window whose rate() ranges lie inside the ~7 minutes Prometheus holds, every 15 s.
    done = await _execute(
        deployment,
        partial(weekly_report, window=timedelta(minutes=1), step=timedelta(seconds=15)),
        "weekly-report",
    )
    assert done.run.status is Status.OK, done.steps
    perf = done.table("Performance ")
    values = {row[0]: row[1] for row in perf.rows}
    assert 300 <= float(values["Response time p95"].removesuffix(" ms")) <= 380
    assert 29.0 <= float(values["Throughput"].removesuffix(" req/s")) <= 31.5
    assert abs(float(values["Error rate"].removesuffix("%")) - HEALTHY.error_fraction * 100) < 0.2
    endpoints = done.table("Slowest endpoints").rows
    assert endpoints[0][0] == SLOW_HANDLER
    assert done.steps["Incidents of the week"] == (Status.OK, "no incidents this week")


async def test_weekly_report_without_prometheus_data(deployment: dict[str, str]) -> None:
    """The real Prometheus, asked about series it has never seen: "no data", not a crash."""
    missing = {key: f"sum(rate(no_such_metric_{key}[5m]))" for key in ("p95_ms", "p99_ms")}
    missing |= {
        "throughput_rps": "sum(rate(no_such_requests_total[5m]))",
        "error_rate_pct": "sum(rate(no_such_errors_total[5m]))",
    }
    settings = _settings(deployment).model_copy(update={"sms_promql": missing})
    done = await _execute(settings, weekly_report, "weekly-report")
    assert done.steps["Performance over the last 7 days"] == (
        Status.WARN,
        "no data in Prometheus for 7.0 days",
    )
    assert all(row[1] == "no data" for row in done.table("Performance ").rows)
    assert done.run.status is Status.WARN


# -- monthly and VACUUM ANALYZE ---------------------------------------------------


async def test_monthly_maintenance_and_vacuum_on_the_real_database(
    deployment: dict[str, str], sms_dsn: str
) -> None:
    backups = Path(deployment["SMS_BACKUP_DIR"])
    write_backup(backups, "backup_20261001_020000.sql", age_h=24 * 40)
    name = database_name(sms_dsn)
    assert name

    done = await _execute(deployment, monthly_maintenance, "monthly-maintenance")
    assert done.steps["Count backups past the 30-day retention"][1].startswith(
        "1 of 3 backup files"
    )
    db_status, db_summary = done.steps["Check database size and connections"]
    assert db_status is Status.OK and db_summary.startswith(f"{name}: ")
    [proposal] = done.run.proposals
    assert (proposal.action, proposal.args) == ("vacuum", {"database": name})

    vacuumed = await _execute(deployment, partial(vacuum_action, **proposal.args), "vacuum")
    status, summary = vacuumed.steps["VACUUM ANALYZE"]
    assert status is Status.OK and summary.startswith("done in ") and summary.endswith(" s")
    assert vacuumed.text.startswith(f"VACUUM ANALYZE on {name} finished: done in ")
    conn = await asyncpg.connect(sms_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT last_vacuum, last_analyze FROM pg_stat_user_tables WHERE relname = 'users'"
        )
    finally:
        await conn.close()
    assert row is not None and row["last_vacuum"] is not None and row["last_analyze"] is not None

    refused = await _execute(deployment, partial(vacuum_action, database="postgres"), "vacuum")
    assert refused.run.status is Status.FAILED
    assert refused.run.error is not None and "not postgres" in refused.run.error
