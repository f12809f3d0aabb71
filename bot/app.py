"""The composition root: builds every dependency from Settings and owns their lifetimes.

Resources are opened in one ``AsyncExitStack`` and closed in reverse order:
the HTTP session, the state store, the Docker client, the SMS database pool,
the Slack client, and last (first to close) the engine's running tasks.
Slack's libraries are imported only when Slack is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.adapters.alertmanager import AlertmanagerClient
from bot.adapters.backups import BackupStore
from bot.adapters.docker import DockerAdapter
from bot.adapters.http_health import HealthClient
from bot.adapters.postgres import SmsDatabase
from bot.adapters.prometheus import PrometheusClient
from bot.audit import AuditLog
from bot.chat.base import ChatSurface
from bot.chat.log import LogSurface
from bot.clock import Clock, utc_now
from bot.config import Settings
from bot.deps import Deps
from bot.engine import Engine
from bot.events import Click, Command
from bot.outbox import OutboxWorker
from bot.scheduler import Scheduler
from bot.store import open_store
from bot.telemetry import BotMetrics
from handlers.actions import ClickHandler
from handlers.alerts import AlertProcessor
from handlers.dispatch import Dispatcher
from handlers.jobs import build_jobs

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

__all__ = ["App", "SlackParts", "build_app"]


class SlackParts:
    """Slack out (the outbox surface) and Slack in (the Bolt app), built apart.

    Only ``serve`` receives Slack requests; ``run``, ``shell`` and ``replay``
    post through the outbox alone. So the Bolt app is built on first use of
    ``app``, and a terminal command never builds it.
    """

    def __init__(self, surface: ChatSurface, build_inbound: Callable[[], AsyncApp]) -> None:
        self.surface = surface
        self._build_inbound = build_inbound

    @cached_property
    def app(self) -> AsyncApp:
        return self._build_inbound()


@dataclass(frozen=True)
class App:
    deps: Deps
    engine: Engine
    dispatcher: Dispatcher
    clicks: ClickHandler
    outbox: OutboxWorker
    alerts: AlertProcessor
    scheduler: Scheduler
    alert_surface: ChatSurface
    slack: SlackParts | None = None


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
            alertmanager=AlertmanagerClient(
                settings.sms_alertmanager_url, session, timeout=timeout
            ),
            metrics=BotMetrics(),
            clock=clock,
        )
        engine = Engine(deps)
        dispatcher = Dispatcher(deps, engine)
        clicks = ClickHandler(deps, engine)

        slack: SlackParts | None = None
        outbox = OutboxWorker(store, {}, clock=clock)
        if settings.slack_enabled:
            # Slack's libraries load only when Slack is configured.
            from bot.chat.slack import SlackDelivery, build_slack_app, slack_client, slack_surface

            client = slack_client(
                token=settings.slack_bot_token,
                base_url=settings.slack_api_url,
                timeout=settings.slack_timeout_s,
            )
            stack.push_async_callback(_close_client, client)
            outbox.add_delivery(SlackDelivery(client, session, store))
            surface = slack_surface(store=store, clock=clock, wake=outbox.wake)

            async def on_command(command: Command) -> None:
                await dispatcher.handle(command, surface)

            async def on_click(click: Click) -> None:
                await clicks.handle(click, surface)

            def spawn(work: Awaitable[Any], name: str) -> None:
                engine.spawn(_awaited(work), name=name)

            slack = SlackParts(
                surface,
                partial(
                    build_slack_app,
                    client=client,
                    signing_secret=settings.slack_signing_secret,
                    on_command=on_command,
                    on_click=on_click,
                    spawn=spawn,
                ),
            )
        # Alerts post where the alert channel is: Slack when configured, else the log.
        alert_surface: ChatSurface = slack.surface if slack else LogSurface()
        alerts = AlertProcessor(
            deps, engine, surface=alert_surface, channel=settings.slack_alert_channel
        )
        clicks.alerts = alerts
        dispatcher.alerts = alerts
        scheduler = Scheduler(
            deps,
            build_jobs(
                deps=deps,
                engine=engine,
                surface=alert_surface,
                channel=settings.slack_alert_channel,
                alerts=alerts,
            ),
            grace=timedelta(minutes=settings.sms_schedule_grace_min),
        )
        stack.push_async_callback(engine.shutdown)
        yield App(
            deps=deps,
            engine=engine,
            dispatcher=dispatcher,
            clicks=clicks,
            outbox=outbox,
            alerts=alerts,
            scheduler=scheduler,
            alert_surface=alert_surface,
            slack=slack,
        )


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


async def _close_client(client: Any) -> None:
    session = getattr(client, "session", None)
    if session is not None and not session.closed:
        await session.close()
