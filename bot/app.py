"""The composition root: builds every dependency from Settings and owns their lifetimes.

Resources are opened in one ``AsyncExitStack`` and closed in reverse order:
the HTTP session, the state store, the Docker client, the SMS database pool,
and last (first to close) the engine's running tasks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp

from bot.adapters.backups import BackupStore
from bot.adapters.docker import DockerAdapter
from bot.adapters.http_health import HealthClient
from bot.adapters.postgres import SmsDatabase
from bot.adapters.prometheus import PrometheusClient
from bot.audit import AuditLog
from bot.config import Settings
from bot.deps import Clock, Deps, utc_now
from bot.engine import Engine
from bot.store import open_store
from bot.telemetry import BotMetrics
from handlers.dispatch import Dispatcher

__all__ = ["App", "build_app"]


@dataclass(frozen=True)
class App:
    deps: Deps
    engine: Engine
    dispatcher: Dispatcher


@asynccontextmanager
async def build_app(settings: Settings, *, clock: Clock = utc_now) -> AsyncIterator[App]:
    async with AsyncExitStack() as stack:
        timeout = settings.sms_check_timeout_s
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        )
        store = open_store(settings.bot_state_url)
        await store.open()
        stack.push_async_callback(store.close)

        docker = DockerAdapter(settings.sms_services, timeout=timeout)
        stack.push_async_callback(docker.close)
        db = SmsDatabase(
            settings.sms_database_url,
            connect_timeout=min(5.0, timeout),
            query_timeout=timeout,
        )
        stack.push_async_callback(db.close)

        deps = Deps(
            settings=settings,
            store=store,
            audit=AuditLog(store, settings.bot_audit_log),
            docker=docker,
            db=db,
            health=HealthClient(settings.sms_health_url, session, timeout=timeout),
            prometheus=PrometheusClient(settings.sms_prometheus_url, session, timeout=timeout),
            backups=BackupStore(settings.sms_backup_dir),
            metrics=BotMetrics(),
            clock=clock,
        )
        engine = Engine(deps)
        stack.push_async_callback(engine.shutdown)
        yield App(deps=deps, engine=engine, dispatcher=Dispatcher(deps, engine))
