"""The one bundle of dependencies, built in ``bot.app`` and passed down.

No module-level clients: tests build their own ``Deps`` with fakes or with
real adapters pointed at local services.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.adapters.alertmanager import AlertmanagerClient
from bot.adapters.backups import BackupStore
from bot.adapters.docker import DockerAdapter
from bot.adapters.http_health import HealthClient
from bot.adapters.postgres import SmsDatabase
from bot.adapters.prometheus import PrometheusClient
from bot.audit import AuditLog
from bot.config import Settings
from bot.store import Store
from bot.telemetry import BotMetrics

__all__ = ["Clock", "Deps", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Store
    audit: AuditLog
    docker: DockerAdapter
    db: SmsDatabase
    health: HealthClient
    prometheus: PrometheusClient
    backups: BackupStore
    alertmanager: AlertmanagerClient
    metrics: BotMetrics
    clock: Clock = utc_now
