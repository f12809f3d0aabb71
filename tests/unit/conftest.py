from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bot.adapters.prometheus import DEFAULT_QUERIES
from bot.config import Settings, load_settings
from bot.deps import Deps
from bot.engine import Engine
from bot.store import open_store
from handlers.dispatch import Dispatcher
from tests.fakes import (
    NOW,
    FakeDocker,
    FakePrometheus,
    FakeSurface,
    container,
    fake_deps,
)

SERVICES = {
    "backend": "docker-backend-1",
    "postgres": "docker-postgres-1",
    "backup": "sms-db-backup",
}

HEALTHY_VALUES = {
    "p95_ms": 350.0,
    "p99_ms": 2000.0,
    "throughput_rps": 30.2,
    "error_rate_pct": 1.3,
    "cpu_pct": 15.0,
    "memory_pct": 15.3,
    "disk_pct": 3.0,
}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "bot_state_url": f"sqlite:///{tmp_path}/state.db",
        "bot_audit_log": str(tmp_path / "audit.jsonl"),
        "sms_backup_dir": str(tmp_path / "backups"),
        # Incident records: the default is relative, and would land in the checkout.
        "sms_incidents_dir": str(tmp_path / "incidents"),
        "sms_services": SERVICES,
        "sms_expected_containers": 3,
        "sms_check_timeout_s": 2.0,
    }
    values.update(overrides)
    return load_settings(**values)


def all_running() -> list[Any]:
    return [container(name, service=svc) for svc, name in SERVICES.items()]


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """``sms-bot``'s ``main`` configures structlog for the process: undo it after each test.

    Otherwise the level a ``run`` test set (WARNING) filters the next test's events.
    """
    yield
    structlog.reset_defaults()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "backups").mkdir()
    return make_settings(tmp_path)


@pytest.fixture
async def deps(settings: Settings) -> AsyncIterator[Deps]:
    store = open_store(settings.bot_state_url)
    await store.open()
    try:
        yield fake_deps(
            settings,
            store,
            docker=FakeDocker(SERVICES, all_running(), logs="INFO up\nERROR boom password=s3cret"),
            prometheus=FakePrometheus(HEALTHY_VALUES, DEFAULT_QUERIES),
            clock=lambda: NOW,
        )
    finally:
        await store.close()


@pytest.fixture
def surface() -> FakeSurface:
    return FakeSurface()


@pytest.fixture
def dispatcher(deps: Deps) -> Dispatcher:
    return Dispatcher(deps, Engine(deps))
