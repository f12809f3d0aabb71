"""The runbook's Common Issues on the real Docker engine and PostgreSQL.

Containers that will not start (exit code 1, a restart loop, a port taken by
another container) are diagnosed with the right cause; ``memory`` lists real
``docker stats``; ``perf`` names the pid blocking a query that waits on a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import docker
import docker.errors
import pytest

from bot.app import App, build_app
from bot.chat.base import Conversation
from bot.config import load_settings
from bot.engine import Procedure, Run
from bot.events import Command
from bot.messages import Status, Table
from procedures.diagnose import START_ACTION, diagnose
from procedures.memory import memory
from procedures.perf import perf
from procedures.status import status
from tests.fakes import FakeSurface
from tests.harness.docker import (
    BUSYBOX_IMAGE,
    TEST_LABEL,
    DockerEngine,
    SmsContainers,
    free_port,
    wait_until,
)
from tests.harness.prometheus import PrometheusInstance

pytestmark = pytest.mark.integration


@dataclass
class Extra:
    """Test containers beside the SMS deployment, removed afterwards."""

    client: docker.DockerClient
    prefix: str = field(default_factory=lambda: f"smsbot-x-{uuid.uuid4().hex[:6]}")
    names: list[str] = field(default_factory=list)

    def run(
        self,
        service: str,
        script: str,
        *,
        environment: dict[str, str] | None = None,
        restart: str = "no",
        expose: int | None = None,
    ) -> str:
        """Create and start a host-network container; ``expose`` a port as compose would."""
        name = f"{self.prefix}-{service}"
        api = self.client.api
        host_config = api.create_host_config(network_mode="host", restart_policy={"Name": restart})
        created = api.create_container(
            BUSYBOX_IMAGE,
            ["/bin/busybox", "sh", "-c", script],
            name=name,
            environment=environment,
            labels={TEST_LABEL: "1", "com.docker.compose.service": service},
            stop_signal="SIGKILL",
            ports=[expose] if expose else None,
            host_config=host_config,
        )
        self.names.append(name)
        api.start(created["Id"])
        return name

    def attrs(self, name: str) -> dict[str, Any]:
        return dict(self.client.api.inspect_container(name))


@pytest.fixture
def extra(docker_engine: DockerEngine, busybox_image: str) -> Iterator[Extra]:
    found = Extra(docker_engine.client)
    yield found
    for name in found.names:
        with contextlib.suppress(docker.errors.NotFound):
            found.client.api.remove_container(name, force=True)


BROKEN = ("crashing", "looping", "web", "blocker")


@pytest.fixture
async def app(
    tmp_path: Path,
    sms_containers: SmsContainers,
    sms_dsn: str,
    prometheus_healthy: PrometheusInstance,
    extra: Extra,
) -> AsyncIterator[App]:
    services = dict(sms_containers.services)
    services.update({s: f"{extra.prefix}-{s}" for s in BROKEN})
    env = {
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SMS_SERVICES": ",".join(f"{k}={v}" for k, v in services.items()),
        "SMS_HEALTH_URL": sms_containers.health_url,
        "SMS_PROMETHEUS_URL": prometheus_healthy.url,
        "SMS_DATABASE_URL": sms_dsn,
        "SMS_BACKUP_DIR": str(tmp_path / "backups"),
        "SMS_CHECK_TIMEOUT_S": "8",
        "SMS_SLOW_QUERY_S": "1",
    }
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    async with build_app(settings) as built:
        yield built


async def _execute(app: App, procedure: Procedure, name: str) -> tuple[Run, FakeSurface]:
    surface = FakeSurface()
    run = await app.engine.execute(
        procedure,
        name=name,
        title=name,
        command=Command(name, "console:op", "console", Conversation("console")),
        surface=surface,
    )
    return run, surface


async def _exited(extra: Extra, name: str) -> bool:
    return bool(extra.attrs(name)["State"]["Status"] == "exited")


async def test_a_container_exiting_with_code_1_is_diagnosed_and_a_start_proposed(
    app: App, extra: Extra
) -> None:
    name = extra.run(
        "crashing",
        "echo 'INFO starting'; echo 'FATAL config missing token=abc123'; exit 1",
        environment={"DB_PASSWORD": "hunter2", "MODE": "prod"},
    )
    await wait_until(partial(_exited, extra, name), timeout=15, what="container exited")
    run, surface = await _execute(app, partial(diagnose, service="crashing"), "diagnose")
    assert f"{name}: exited with code 1" in run.text
    assert "docker compose build crashing" in run.text
    [proposal] = run.proposals
    assert proposal.action == START_ACTION
    texts = "\n".join(d.text for m in surface.replies() for d in m.details if hasattr(d, "text"))
    assert "FATAL config missing" in texts
    assert "abc123" not in texts  # redacted
    assert "DB_PASSWORD=****" in texts and "hunter2" not in texts


async def test_a_container_that_keeps_restarting_is_diagnosed(app: App, extra: Extra) -> None:
    name = extra.run("looping", "echo 'ERROR cannot open /data/db'; exit 3", restart="always")

    async def restarted() -> bool:
        return int(extra.attrs(name).get("RestartCount") or 0) >= 2

    await wait_until(restarted, timeout=30, what="two restarts")
    run, _surface = await _execute(app, partial(diagnose, service="looping"), "diagnose")
    assert "keeps restarting" in run.text and "last exit code 3" in run.text


async def test_a_port_taken_by_another_container_is_named(app: App, extra: Extra) -> None:
    port = free_port()
    script = f"exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /"
    blocker = extra.run("blocker", script, expose=port)

    async def serving() -> bool:
        return bool(extra.attrs(blocker)["State"]["Status"] == "running")

    await wait_until(serving, timeout=15, what="blocker running")
    await asyncio.sleep(0.5)  # let httpd bind before the second one tries
    web = extra.run("web", script, expose=port)
    await wait_until(partial(_exited, extra, web), timeout=15, what="web exited")
    run, _surface = await _execute(app, partial(diagnose, service="web"), "diagnose")
    assert f"port {port} is taken by another container: {blocker}" in run.text
    steps = {s.name: s for s in run.steps}
    assert steps["Port conflicts"].status is Status.CRIT


async def test_status_diagnoses_an_exited_container_by_itself(app: App, extra: Extra) -> None:
    name = extra.run("crashing", "echo 'FATAL boom'; exit 1")
    await wait_until(partial(_exited, extra, name), timeout=15, what="container exited")
    run, _surface = await _execute(app, status, "status")
    assert any(s.name.startswith(f"Inspect {name}") for s in run.steps)
    assert "crashing: exited with code 1" in run.text


async def test_memory_lists_real_docker_stats(app: App, sms_containers: SmsContainers) -> None:
    run, surface = await _execute(app, memory, "memory")
    tables = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    stats = next((t for t in tables if "docker stats" in t.title), None)
    assert stats is not None, [(s.name, s.status, s.summary) for s in run.steps]
    names = [row[0] for row in stats.rows]
    for container in sms_containers.services.values():
        assert container in names
    assert all(row[1].endswith("B") for row in stats.rows)  # usage with a unit


async def test_perf_names_the_pid_that_blocks(app: App, sms_dsn: str) -> None:
    holder = await asyncpg.connect(sms_dsn)
    waiter = await asyncpg.connect(sms_dsn)
    try:
        blocking_pid = await holder.fetchval("SELECT pg_backend_pid()")
        waiting_pid = await waiter.fetchval("SELECT pg_backend_pid()")
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        blocked = asyncio.create_task(waiter.fetchval("SELECT count(*) FROM users"))

        async def waiting() -> bool:
            return bool(
                await holder.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", waiting_pid
                )
            )

        await wait_until(waiting, timeout=10, what="query waiting on the lock")
        run, _surface = await _execute(app, perf, "perf")
        locks = {s.name: s for s in run.steps}["Locks (pg_locks)"]
        assert locks.status is Status.WARN
        assert f"pid {waiting_pid} waits for pid {blocking_pid}" in locks.summary
        await tx.rollback()
        assert await blocked == 18
    finally:
        await holder.close()
        await waiter.close()
