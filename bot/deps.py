"""The one bundle of dependencies, built in ``bot.app`` and passed down.

No module-level clients: tests build their own ``Deps`` with fakes or with
real adapters pointed at local services. Each adapter is named by its
protocol, so mypy checks that a fake offers what the real adapter does.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.adapters.alertmanager import Alertmanager
from bot.adapters.backups import Backups
from bot.adapters.docker import Docker
from bot.adapters.http_health import Health
from bot.adapters.postgres import Database
from bot.adapters.prometheus import Prometheus
from bot.audit import AuditLog
from bot.clock import Clock, utc_now
from bot.config import Settings
from bot.store import Store
from bot.telemetry import Metrics

__all__ = ["Deps"]


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Store
    audit: AuditLog
    docker: Docker
    db: Database
    health: Health
    prometheus: Prometheus
    backups: Backups
    alertmanager: Alertmanager
    metrics: Metrics
    clock: Clock = utc_now
