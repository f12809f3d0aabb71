"""The composition root: builds every dependency from Settings and owns their lifetimes.

Resources are opened in one ``AsyncExitStack`` and closed in reverse order:
the HTTP session, the state store, the Docker client, the SMS database pool,
the Slack client, and last (first to close) the engine's running tasks.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, partial
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp

from bot.adapters.alertmanager import AlertmanagerClient
from bot.adapters.backups import BackupStore
from bot.adapters.docker import DockerAdapter
from bot.adapters.http_health import HealthClient
from bot.adapters.postgres import SmsDatabase
from bot.adapters.prometheus import PrometheusClient
from bot.audit import AuditLog
from bot.chat.base import ChatSurface, Conversation
from bot.chat.fanout import FanOut, KeyedSurface
from bot.chat.log import LogSurface
from bot.chat.slack import SlackDelivery, build_slack_app, slack_client, slack_surface
from bot.chat.teams import TeamsDelivery, TeamsSurface, teams_messages_route
from bot.chat.teams_auth import TeamsTokenValidator
from bot.chat.teams_token import TeamsTokenProvider
from bot.config import Settings
from bot.deps import Clock, Deps, utc_now
from bot.engine import Engine
from bot.events import Click, Command
from bot.outbox import OutboxSurface, OutboxWorker
from bot.scheduler import Scheduler
from bot.store import Store, open_store
from bot.telemetry import BotMetrics
from handlers.actions import ClickHandler
from handlers.alerts import AlertProcessor
from handlers.dispatch import Dispatcher
from handlers.jobs import build_jobs

__all__ = ["App", "SlackParts", "TeamsParts", "build_app"]


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
class TeamsParts:
    """Teams out (the outbox surface) and in (the ``POST /api/messages`` handler)."""

    surface: ChatSurface
    route: Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    teams: TeamsParts | None = None

    def surfaces(self) -> dict[str, ChatSurface]:
        """Every chat surface of this process by name (where a stored thread may live)."""
        found = [self.slack.surface if self.slack else None]
        found += [self.teams.surface if self.teams else None, self.alert_surface]
        return {s.name: s for s in found if s is not None}


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
        teams: TeamsParts | None = None
        teams_surface: TeamsSurface | None = None
        if settings.teams_enabled:
            teams_surface = TeamsSurface(store=store, clock=clock, wake=outbox.wake)
            # A context made now reads SSL_CERT_FILE now (aiohttp's default one is made
            # at import): a private cloud's or a test's CA is trusted for Teams.
            teams_session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ssl.create_default_context()),
                    timeout=aiohttp.ClientTimeout(total=timeout),
                )
            )
            teams = _build_teams(
                settings,
                stack=stack,
                session=teams_session,
                store=store,
                clock=clock,
                outbox=outbox,
                surface=teams_surface,
                dispatcher=dispatcher,
                clicks=clicks,
                engine=engine,
            )

        # Alerts post where the alert channel is: Slack when configured, else the log;
        # with a Teams alert channel, both at once by priority (bot/chat/fanout.py).
        alert_surface: ChatSurface = slack.surface if slack else LogSurface()
        alert_channel = settings.slack_alert_channel
        report_surface, report_channel = alert_surface, alert_channel
        places_for: Callable[[str], Conversation] | None = None
        if teams_surface is not None and (
            settings.teams_alert_channel or settings.teams_reports_channel
        ):
            fanout, places_for, alert_channel, report_channel = _fan_out(
                settings, slack.surface if slack else None, teams_surface
            )
            alert_surface = report_surface = fanout
        alerts = AlertProcessor(
            deps,
            engine,
            surface=alert_surface,
            channel=alert_channel,
            places_for=places_for,
            surfaces={s.name: s for s in (slack.surface if slack else None, teams_surface) if s},
        )
        clicks.alerts = alerts
        clicks.surfaces = {alert_surface.name: alert_surface}
        dispatcher.alerts = alerts
        scheduler = Scheduler(
            deps,
            build_jobs(
                deps=deps,
                engine=engine,
                surface=report_surface,
                channel=report_channel,
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
            teams=teams,
        )


def _build_teams(
    settings: Settings,
    *,
    stack: AsyncExitStack,
    session: aiohttp.ClientSession,
    store: Store,
    clock: Clock,
    outbox: OutboxWorker,
    surface: TeamsSurface,
    dispatcher: Dispatcher,
    clicks: ClickHandler,
    engine: Engine,
) -> TeamsParts:
    """Teams' delivery on the outbox and its inbound handler, as Slack's are built."""
    tokens = TeamsTokenProvider(
        app_id=settings.teams_app_id,
        password=settings.teams_app_password,
        tenant_id=settings.teams_tenant_id,
        login_url=settings.teams_login_url,
    )
    delivery = TeamsDelivery(
        store=store,
        tokens=tokens,
        app_id=settings.teams_app_id,
        tenant_id=settings.teams_tenant_id,
        service_url=settings.teams_service_url,
        connector=session.connector,
    )
    stack.push_async_callback(delivery.close)
    outbox.add_delivery(delivery)
    validator = TeamsTokenValidator(
        app_id=settings.teams_app_id,
        metadata_url=settings.teams_openid_metadata_url,
        session=session,
    )

    async def on_command(command: Command) -> None:
        await dispatcher.handle(command, surface)

    async def on_click(click: Click) -> None:
        await clicks.handle(click, surface)

    def spawn(work: Awaitable[Any], name: str) -> None:
        engine.spawn(_awaited(work), name=name)

    route = teams_messages_route(
        validator=validator,
        store=store,
        clock=clock,
        on_command=on_command,
        on_click=on_click,
        spawn=spawn,
    )
    return TeamsParts(surface=surface, route=route)


def _fan_out(
    settings: Settings, slack: ChatSurface | None, teams: TeamsSurface
) -> tuple[FanOut, Callable[[str], Conversation], str, str]:
    """The alert surface on Slack and Teams: incidents by priority, reports to both.

    Returns the surface, the places of an incident by priority, and the
    channels (fan-out conversations) of digests and of scheduled reports.
    """
    surfaces: dict[str, KeyedSurface] = {"teams": teams}
    if isinstance(slack, OutboxSurface):
        surfaces["slack"] = slack
    fanout = FanOut(surfaces)
    slack_place = [("slack", settings.slack_alert_channel)] if "slack" in surfaces else []

    def places_for(priority: str) -> Conversation:
        places = [p for p in slack_place if priority in settings.slack_alert_priorities]
        if settings.teams_alert_channel and priority in settings.teams_alert_priorities:
            places.append(("teams", settings.teams_alert_channel))
        return fanout.where(places)

    digest = fanout.where(slack_place or [("teams", settings.teams_alert_channel)])
    reports = fanout.where([*slack_place, ("teams", settings.teams_reports_channel)])
    return fanout, places_for, digest.channel, reports.channel


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


async def _close_client(client: Any) -> None:
    session = getattr(client, "session", None)
    if session is not None and not session.closed:
        await session.close()
