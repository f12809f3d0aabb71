"""DockerAdapter against the real engine and the fake SMS deployment."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from bot.adapters.docker import (
    ContainerInfo,
    ContainerNotFound,
    DockerAdapter,
    DockerError,
    DockerUnavailable,
    FileNotInContainer,
)
from bot.errors import UnknownService
from tests.harness.docker import BUSYBOX_IMAGE, SmsContainers, wait_until

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def adapter(sms_containers: SmsContainers) -> AsyncIterator[DockerAdapter]:
    async with DockerAdapter(sms_containers.services, base_url=sms_containers.base_url) as a:
        yield a


async def _wait_for_health(adapter: DockerAdapter, service: str, expected: str) -> ContainerInfo:
    seen: list[ContainerInfo] = []

    async def probe() -> bool:
        seen.append(await adapter.status(service))
        return seen[-1].health == expected

    await wait_until(probe, timeout=20, what=f"{service} health {expected!r}", interval=0.2)
    return seen[-1]


async def test_overview_counts_the_configured_services(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    overview = await adapter.overview()

    assert set(overview.services) == {"backend", "postgres", "backup"}
    for service, name in sms_containers.services.items():
        info = overview.services[service]
        assert (info.name, info.service, info.state) == (name, service, "running")
        assert info in overview.containers
    assert overview.running >= 3
    assert overview.total >= overview.running
    assert overview.missing == []
    assert overview.not_running == []
    assert overview.restarting == []


async def test_overview_reports_a_stopped_service_as_not_running(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    before = await adapter.overview()
    sms_containers.stop("postgres")

    overview = await adapter.overview()

    assert [c.service for c in overview.not_running] == ["postgres"]
    assert overview.services["postgres"].state == "exited"
    assert overview.services["postgres"].uptime(datetime.now(UTC)) is None
    assert overview.running == before.running - 1
    assert overview.missing == []


async def test_overview_reports_a_removed_service_as_missing(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    sms_containers.remove("backup")

    overview = await adapter.overview()

    assert [c.service for c in overview.missing] == ["backup"]
    backup = overview.services["backup"]
    assert (backup.name, backup.state, backup.health) == (
        sms_containers.services["backup"],
        "missing",
        None,
    )
    assert backup not in overview.containers
    assert overview.not_running == []


async def test_list_containers_fills_service_image_and_start_time(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    containers = await adapter.list_containers()

    ours = {c.service or "": c for c in containers if c.name in sms_containers.services.values()}
    assert set(ours) == {"backend", "postgres", "backup"}
    for service, info in ours.items():
        assert info.image == BUSYBOX_IMAGE
        assert info.started_at == sms_containers.started_at(service)
        assert info.status_text.startswith("Up")
        assert info.restart_count == 0
        uptime = info.uptime(datetime.now(UTC))
        assert uptime is not None and uptime >= 0
    assert ours["postgres"].health is None  # no healthcheck defined
    others = [c for c in containers if c.name not in sms_containers.services.values()]
    assert all(c.service is None for c in others)


async def test_backend_health_follows_the_health_endpoint(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    healthy = await _wait_for_health(adapter, "backend", "healthy")
    assert "(healthy)" in healthy.status_text

    sms_containers.remove_health()
    unhealthy = await _wait_for_health(adapter, "backend", "unhealthy")
    assert unhealthy.state == "running"
    assert [c.service for c in (await adapter.overview()).unhealthy] == ["backend"]

    sms_containers.set_health({"status": "healthy"})
    await _wait_for_health(adapter, "backend", "healthy")


async def test_logs_return_the_tail_with_stdout_and_stderr(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    text = await adapter.logs("backend")

    lines = text.splitlines()
    # stdout and stderr are separate pipes, so only the content is fixed, not the order.
    assert sorted(lines) == sorted(
        [
            "INFO backend starting",
            "INFO connected to redis",
            "ERROR db timeout password=hunter2",
            f"INFO listening on 127.0.0.1:{sms_containers.port}",
        ]
    )

    last_two = (await adapter.logs("backend", tail=2)).splitlines()
    assert last_two == lines[-2:]


async def test_logs_tail_is_clamped(adapter: DockerAdapter) -> None:
    assert len((await adapter.logs("postgres", tail=0)).splitlines()) == 1
    assert len((await adapter.logs("postgres", tail=-5)).splitlines()) == 1
    everything = (await adapter.logs("postgres", tail=1_000_000)).splitlines()
    assert everything == [
        "LOG:  database system was shut down",
        "LOG:  database system is ready to accept connections",
    ]


async def test_restart_changes_the_start_time(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    before = await adapter.status("postgres")

    after = await adapter.restart("postgres", timeout_s=1)

    assert after.state == "running"
    assert before.started_at is not None and after.started_at is not None
    assert after.started_at > before.started_at
    assert after.started_at == sms_containers.started_at("postgres")


async def test_stop_then_start(adapter: DockerAdapter, sms_containers: SmsContainers) -> None:
    await _wait_for_health(adapter, "backend", "healthy")
    stopped = await adapter.stop("backend", timeout_s=1)
    assert stopped.state == "exited"
    assert stopped.health is None  # the engine's stale "unhealthy" is not reported
    assert stopped.uptime(datetime.now(UTC)) is None
    overview = await adapter.overview()
    assert [c.service for c in overview.not_running] == ["backend"]
    assert overview.unhealthy == []
    assert sms_containers.container("backend").status == "exited"

    started = await adapter.start("backend")
    assert started.state == "running"
    await wait_until(sms_containers.backend_answers, timeout=15, what="backend HTTP again")


async def test_configured_but_absent_container_raises_container_not_found(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    sms_containers.remove("backup")

    with pytest.raises(ContainerNotFound) as caught:
        await adapter.status("backup")
    assert caught.value.service == "backup"
    assert caught.value.container == sms_containers.services["backup"]
    with pytest.raises(ContainerNotFound):
        await adapter.logs("backup")
    with pytest.raises(ContainerNotFound):
        await adapter.restart("backup")


async def test_a_container_id_prefix_is_not_taken_for_a_configured_name(
    sms_containers: SmsContainers,
) -> None:
    backend_id = sms_containers.container("backend").id
    assert backend_id is not None
    services = {"ghost": backend_id[:12]}
    async with DockerAdapter(services, base_url=sms_containers.base_url) as adapter:
        with pytest.raises(ContainerNotFound):
            await adapter.status("ghost")


async def test_docker_refusal_is_a_docker_error_not_unavailability(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    sms_containers.container("backup").pause()
    try:
        with pytest.raises(DockerError) as caught:
            await adapter.start("backup")  # the engine answers 409: unpause it first
        assert not isinstance(caught.value, DockerUnavailable | ContainerNotFound)
        assert caught.value.__cause__ is not None
        assert (await adapter.status("backup")).state == "paused"
    finally:
        sms_containers.container("backup").unpause()


async def test_unknown_service_is_rejected_before_any_docker_call() -> None:
    # A dead engine proves nothing was sent: any call would raise DockerUnavailable.
    adapter = DockerAdapter({"backend": "b"}, base_url="unix:///nonexistent.sock")
    for call in (
        adapter.status("frontend"),
        adapter.logs("frontend"),
        adapter.restart("frontend"),
        adapter.stop("frontend"),
        adapter.start("frontend"),
    ):
        with pytest.raises(UnknownService) as caught:
            await call
        assert caught.value.known == ["backend"]
    with pytest.raises(UnknownService):
        adapter.container_name("frontend")
    await adapter.close()


async def test_dead_socket_raises_docker_unavailable_fast() -> None:
    adapter = DockerAdapter({"backend": "b"}, base_url="unix:///nonexistent.sock", timeout=30)
    async with asyncio.timeout(10):  # a refused connection must not wait out the 30 s
        with pytest.raises(DockerUnavailable) as caught:
            await adapter.status("backend")
        assert caught.value.__cause__ is not None
        with pytest.raises(DockerUnavailable):
            await adapter.overview()
    await adapter.close()


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """A unix socket that accepts connections and never answers."""
    with tempfile.TemporaryDirectory(prefix="sms-bot-silent-") as tmp:
        path = Path(tmp) / "docker.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen(8)
            yield f"unix://{path}"


async def test_an_engine_that_does_not_answer_times_out_as_unavailable(
    silent_engine: str,
) -> None:
    adapter = DockerAdapter({"backend": "b"}, base_url=silent_engine, timeout=0.5)
    with pytest.raises(DockerUnavailable) as caught:
        await adapter.status("backend")
    assert "0.5s" in str(caught.value)
    await adapter.close()


async def test_read_tail_reads_a_file_in_a_container_without_a_tool_in_it(
    adapter: DockerAdapter, sms_containers: SmsContainers
) -> None:
    lines = [f"line {i:05d}" for i in range(20_000)]  # 220 kB
    await asyncio.to_thread(
        sms_containers.put_file, "backend", "/backend/logs/audit.log", "\n".join(lines) + "\n"
    )
    # Relative to the container's working directory ("/"), as exec would take it.
    whole = await adapter.read_tail("backend", "backend/logs/audit.log", max_bytes=1 << 20)
    assert whole.splitlines() == lines
    # Only the end is kept, in whole lines.
    end = await adapter.read_tail("backend", "/backend/logs/audit.log", max_bytes=1000)
    assert end.splitlines() == lines[-len(end.splitlines()) :]
    assert 80 <= len(end.splitlines()) <= 91 and len(end) <= 1000

    with pytest.raises(FileNotInContainer):
        await adapter.read_tail("backend", "/backend/logs/nothing.log")
    with pytest.raises(FileNotInContainer):
        await adapter.read_tail("backend", "/backend/logs")  # a folder
