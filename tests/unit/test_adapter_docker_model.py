"""The Docker adapter's pure parts: result types and service-name resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.adapters.docker import (
    ContainerInfo,
    ContainerOverview,
    ContainerState,
    DockerAdapter,
    HealthState,
)
from bot.errors import UnknownService, UserError

STARTED = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def info(
    name: str,
    *,
    service: str | None = None,
    state: ContainerState = "running",
    health: HealthState | None = None,
) -> ContainerInfo:
    return ContainerInfo(
        name=name,
        service=service,
        state=state,
        health=health,
        status_text="Up",
        started_at=STARTED,
        restart_count=0,
        image="img",
    )


def test_uptime_is_measured_against_the_given_clock() -> None:
    running = info("a")
    assert running.uptime(STARTED + timedelta(minutes=3)) == 180.0
    assert running.uptime(STARTED - timedelta(seconds=5)) == 0.0  # clock skew never negative
    assert info("a", state="exited").uptime(STARTED + timedelta(hours=1)) is None


def test_overview_sorts_configured_services_into_findings() -> None:
    containers = (
        info("b", service="backend", health="unhealthy"),
        info("p", service="postgres", state="exited"),
        info("r", service="worker", state="restarting"),
        info("grafana"),
    )
    missing = ContainerInfo(
        name="bk",
        service="backup",
        state="missing",
        health=None,
        status_text="missing",
        started_at=None,
        restart_count=0,
        image="",
    )
    services = {c.service: c for c in containers if c.service} | {"backup": missing}
    overview = ContainerOverview(containers=containers, services=services)

    assert (overview.running, overview.total) == (2, 4)
    assert [c.service for c in overview.missing] == ["backup"]
    assert [c.service for c in overview.not_running] == ["postgres", "worker"]
    assert [c.service for c in overview.restarting] == ["worker"]
    assert [c.service for c in overview.unhealthy] == ["backend"]


def test_container_name_comes_only_from_the_service_map() -> None:
    adapter = DockerAdapter({"backend": "docker-backend-1", "postgres": "docker-postgres-1"})

    assert adapter.container_name("backend") == "docker-backend-1"
    assert dict(adapter.services) == {
        "backend": "docker-backend-1",
        "postgres": "docker-postgres-1",
    }
    with pytest.raises(UnknownService) as caught:
        adapter.container_name("docker-backend-1")  # a container name is not a service
    assert isinstance(caught.value, UserError)
    assert "backend, postgres" in str(caught.value)


def test_services_view_cannot_change_the_adapter() -> None:
    adapter = DockerAdapter({"backend": "docker-backend-1"})
    view = adapter.services
    assert isinstance(view, dict)
    view["evil"] = "host-root"

    with pytest.raises(UnknownService):
        adapter.container_name("evil")
