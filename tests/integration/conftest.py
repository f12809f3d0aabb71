"""Fixtures shared by the integration tests: a whole healthy SMS deployment."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.harness.docker import SmsContainers, free_port, wait_until
from tests.harness.prometheus import PrometheusInstance


def write_backup(directory: Path, name: str, *, age_h: float, size: int = 4096) -> Path:
    """A backup file that looks like pg_dump's, written ``age_h`` hours ago."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"-- PostgreSQL database dump\n" + b"-- dump\n" * (size // 8))
    ts = time.time() - age_h * 3600
    os.utime(path, (ts, ts))
    return path


@pytest.fixture
async def deployment(
    tmp_path: Path,
    sms_containers: SmsContainers,
    sms_dsn: str,
    prometheus_healthy: PrometheusInstance,
) -> dict[str, str]:
    """The environment of a healthy SMS: every variable the bot reads."""

    async def backend_healthy() -> bool:
        def probe() -> bool:
            attrs = sms_containers.container("backend").attrs
            return bool(attrs["State"].get("Health", {}).get("Status") == "healthy")

        return await asyncio.to_thread(probe)

    await wait_until(backend_healthy, timeout=20, what="backend container healthy")
    backups = tmp_path / "backups"
    write_backup(backups, "backup_20261125_020000.sql", age_h=30)
    write_backup(backups, "backup_20261126_020000.sql", age_h=2)
    return {
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SMS_SERVICES": ",".join(f"{k}={v}" for k, v in sms_containers.services.items()),
        "SMS_EXPECTED_CONTAINERS": "3",
        "SMS_HEALTH_URL": sms_containers.health_url,
        "SMS_PROMETHEUS_URL": prometheus_healthy.url,
        "SMS_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
        "SMS_DATABASE_URL": sms_dsn,
        "SMS_BACKUP_DIR": str(backups),
        "SMS_CHECK_TIMEOUT_S": "8",
        "SMS_SLOW_QUERY_S": "1",
    }
