"""The composition root: builds every dependency from Settings and owns their lifetimes.

Everything is built here once, in dependency order, and passed down: the
incident service before the dispatcher, the click handler and the alert
inbox that use it. Resources are opened in one ``AsyncExitStack`` and closed
in reverse order: the HTTP session, the state store, the Docker client, the
SMS database pool, the Slack client, the engine's running tasks, and, when
the app serves (``build_app(serve=True)``), first of all its background
loops (outbox worker, alert inbox, scheduler, proposal sweeper, Socket Mode)
and the HTTP app with its routes. ``sms-bot serve`` and the test harness
serve that; ``run``, ``shell`` and ``replay`` start none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from bot.adapters.alertmanager import AlertmanagerClient
from bot.adapters.backups import BackupStore
from bot.adapters.docker import DockerAdapter
from bot.adapters.http_health import HealthClient
from bot.adapters.postgres import SmsDatabase
from bot.adapters.prometheus import PrometheusClient
from bot.audit import AuditLog
from bot.chat.base import ChatSurface
from bot.chat.fanout import FanOut, KeyedSurface
from bot.chat.log import LogSurface
from bot.clock import Clock, utc_now
from bot.config import Settings
from bot.deps import Deps
from bot.engine import Engine
from bot.errors import ConfigError
from bot.events import Click, Command
from bot.incidents import IncidentService
from bot.messages import Conversation, Message, Status
from bot.outbox import OutboxSurface, OutboxWorker
from bot.routing import PRIORITIES
from bot.scheduler import Scheduler
from bot.store import Store, StoreUnavailable, open_store
from bot.tasks import FailureLog, start_background
from bot.telemetry import UNCOUNTED, BotMetrics
from handlers.actions import ClickHandler
from handlers.alerts import AlertProcessor, alert_webhook_route
from handlers.dispatch import AlertChannel, Dispatcher
from handlers.jobs import build_jobs
from procedures.catalogue import CATALOGUE

if TYPE_CHECKING:
    from aiohttp import web
    from slack_bolt.async_app import AsyncApp

    from bot.chat.teams import TeamsSurface

__all__ = ["App", "Background", "SlackParts", "TeamsParts", "build_app"]

log = structlog.get_logger(__name__)

# At most about one new message a second per channel: Slack's limit for
# chat.postMessage, and about what Teams accepts in one conversation.
POST_INTERVAL_S = 1.0


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
class Background:
    """What a served app runs besides answering requests, and how eagerly.

    ``serve`` and the test harness run all of it; ``run``, ``shell`` and
    ``replay`` none (``run JOB --post`` drains the outbox itself). Tests shorten
    the pauses so they need not wait for a second of idle.
    """

    alert_idle_s: float = 1.0  # the alert inbox's longest wait for a wake-up
    proposal_sweep_s: float = 30.0  # how often unapproved proposals are expired
    drain_s: float = 5.0  # at stop: how long the outbox may deliver what the last runs wrote


@dataclass(frozen=True)
class App:
    deps: Deps
    engine: Engine
    incidents: IncidentService
    dispatcher: Dispatcher
    clicks: ClickHandler
    outbox: OutboxWorker
    alerts: AlertProcessor
    scheduler: Scheduler
    alert_surface: ChatSurface
    slack: SlackParts | None = None
    teams: TeamsParts | None = None
    # With ``serve=True``: the HTTP app with every route, its loops already running.
    http: web.Application | None = None

    @property
    def surfaces(self) -> Mapping[str, ChatSurface]:
        """Every chat surface of this process by name (where a stored thread may live)."""
        found = [self.slack.surface if self.slack else None]
        found += [self.teams.surface if self.teams else None, self.alert_surface]
        return {s.name: s for s in found if s is not None}


@asynccontextmanager
async def build_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    serve: bool = False,
    background: Background = Background(),
) -> AsyncIterator[App]:
    """Build the app; with ``serve``, also its HTTP app and background loops, started.

    Whatever is started here is stopped here, when the context ends.
    """
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

        # Counted where /metrics serves them; a terminal command counts nothing.
        served_metrics = BotMetrics() if serve else None
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
            metrics=served_metrics or UNCOUNTED,
            clock=clock,
        )
        engine = Engine(deps)

        # Chat out first: incidents post to the alert channel through it.
        client: Any = None
        outbox = OutboxWorker(
            store, {}, clock=clock, metrics=deps.metrics, post_interval_s=POST_INTERVAL_S
        )
        slack_surface_: ChatSurface | None = None
        if settings.slack_enabled:
            # Slack's libraries load only when Slack is configured.
            from bot.chat.slack import SlackDelivery, slack_client, slack_surface

            client = slack_client(
                token=settings.slack_bot_token,
                base_url=settings.slack_api_url,
                timeout=settings.slack_timeout_s,
                # Kept connections; ``_close_client`` closes it with the client.
                session=aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=settings.slack_timeout_s)
                ),
            )
            stack.push_async_callback(_close_client, client)
            outbox.add_delivery(SlackDelivery(client, session, store))
            # Handed to the worker only where its loop runs (``serve``).
            slack_surface_ = slack_surface(
                store=store, clock=clock, wake=outbox.wake, worker=outbox if serve else None
            )
        teams_surface: TeamsSurface | None = None
        if settings.teams_enabled:
            # The Agents SDK is imported only when Teams is configured.
            from bot.chat.teams import TeamsSurface

            teams_surface = TeamsSurface(store=store, clock=clock, wake=outbox.wake)

        # Alerts post where the alert channel is: Slack when configured, else the log;
        # with a Teams channel, or Slack for some priorities only, by priority through
        # one fan-out (bot/chat/fanout.py), the log taking what no chat takes.
        alert_surface: ChatSurface = slack_surface_ or LogSurface()
        alert_channel = settings.slack_alert_channel
        report_surface, report_channel = alert_surface, alert_channel
        places_for: Callable[[str], Conversation] | None = None
        team_channel: AlertChannel | None = None
        if slack_surface_ is not None:
            team_channel = AlertChannel(
                slack_surface_, Conversation(slack_surface_.name, alert_channel)
            )
        teams_channels = teams_surface is not None and bool(
            settings.teams_alert_channel or settings.teams_reports_channel
        )
        slack_some = slack_surface_ is not None and set(settings.slack_alert_priorities) != set(
            PRIORITIES
        )
        if teams_channels or slack_some:
            fanout, places_for, alert_channel, report_channel, team = _fan_out(
                settings, slack_surface_, teams_surface if teams_channels else None
            )
            alert_surface = report_surface = fanout
            team_channel = AlertChannel(fanout, team)
        chat_surfaces = {s.name: s for s in (slack_surface_, teams_surface) if s is not None}
        incidents = IncidentService(
            deps,
            engine,
            catalogue=CATALOGUE,
            surface=alert_surface,
            channel=alert_channel,
            surfaces=chat_surfaces,
            places_for=places_for,
        )
        dispatcher = Dispatcher(
            deps, engine, incidents=incidents, catalogue=CATALOGUE, alert_channel=team_channel
        )
        clicks = ClickHandler(
            deps,
            engine,
            incidents=incidents,
            catalogue=CATALOGUE,
            surfaces={alert_surface.name: alert_surface},
        )
        alerts = AlertProcessor(deps, incidents)

        slack: SlackParts | None = None
        if slack_surface_ is not None:
            from bot.chat.slack import build_slack_app

            surface = slack_surface_

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
        if teams_surface is not None:
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
        alert_place = Conversation(alert_surface.name, alert_channel)

        async def report_lost(text: str) -> None:
            lost = Message(title="Scheduled job did not finish", status=Status.FAILED, text=text)
            await alert_surface.post(alert_place, lost)

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
            report_lost=report_lost,
        )
        stack.push_async_callback(engine.shutdown)
        app = App(
            deps=deps,
            engine=engine,
            incidents=incidents,
            dispatcher=dispatcher,
            clicks=clicks,
            outbox=outbox,
            alerts=alerts,
            scheduler=scheduler,
            alert_surface=alert_surface,
            slack=slack,
            teams=teams,
        )
        if served_metrics is not None:
            app = replace(app, http=_http_app(app, settings, served_metrics))
            await _start_background(app, stack, settings, background)
        yield app


def _http_app(app: App, settings: Settings, metrics: BotMetrics) -> web.Application:
    """``/healthz``, ``/readyz``, ``/metrics``, ``/slack/events`` when signed, the alert webhook.

    aiohttp's server side loads here, for ``serve`` only: ``run`` and ``shell``
    use aiohttp's client alone.
    """
    from bot.http import build_http_app

    deps = app.deps

    async def refresh_metrics() -> None:
        now = deps.clock()
        due = app.scheduler.last_due_slots(now)
        await metrics.refresh(deps.store, now=now, due=due)

    http = build_http_app(
        ready_check=deps.store.ping,
        registry=metrics.registry,
        metrics_refresh=refresh_metrics,
    )
    if app.slack is not None:
        from bot.chat.slack import slack_http_routes

        # Mounted only with a signing secret (Socket Mode alone has none).
        http.add_routes(
            slack_http_routes(app.slack.app, signing_secret=settings.slack_signing_secret)
        )
    if app.teams is not None:
        http.router.add_post("/api/messages", app.teams.route)
    http.router.add_post(
        "/alerts/alertmanager",
        alert_webhook_route(token=settings.alert_webhook_token, receive=app.alerts.receive),
    )
    if not settings.alert_webhook_token:
        log.warning("alerts.webhook_disabled", reason="ALERT_WEBHOOK_TOKEN is not set")
    return http


async def _start_background(
    app: App, stack: AsyncExitStack, settings: Settings, background: Background
) -> None:
    """Start the served app's loops; stop them (and deliver what is left) when ``stack`` closes.

    Each loop is restarted if it raises (a store gone for a while, a bug on one
    row) and logged when it starts failing and when it recovers.
    """
    # A refused SLACK_APP_TOKEN stops the start before anything else runs.
    socket_mode = None
    if app.slack is not None and settings.slack_socket_mode_enabled:
        socket_mode = await _socket_mode(app, settings)
    worker = start_background("outbox", app.outbox.run)
    # Stopped last of the loops: what the last runs wrote goes out first.
    stack.push_async_callback(_stop_outbox, app, worker, background.drain_s)
    # The engine's runs are let finish before the outbox drains (its callback was
    # pushed earlier, so it would run after): shut down here, harmless twice.
    stack.push_async_callback(app.engine.shutdown)
    loops = [
        start_background(
            "proposals", partial(_expire_proposals, app, every_s=background.proposal_sweep_s)
        ),
        start_background("alerts", partial(app.alerts.run, idle_s=background.alert_idle_s)),
        start_background("scheduler", app.scheduler.run),
    ]
    stack.push_async_callback(_cancel, *loops)
    if socket_mode is not None:  # stopped first: no new events while the rest stops
        stack.push_async_callback(_cancel, socket_mode)


async def _cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _stop_outbox(app: App, worker: asyncio.Task[None], drain_s: float) -> None:
    # What does not make it stays in the outbox for the next start.
    try:
        await asyncio.wait_for(_drain(app), timeout=drain_s)
    except TimeoutError:
        pass
    except StoreUnavailable as exc:  # a store gone under the bot: stop all the same
        log.error("serve.drain_failed", error=str(exc))
    await _cancel(worker)


async def _drain(app: App) -> None:
    while await app.outbox.drain_once():
        pass


async def _expire_proposals(app: App, *, every_s: float = 30.0) -> None:
    """Take the buttons off proposals nobody approved in time."""
    failures = FailureLog("proposals")
    while True:
        try:
            await app.clicks.expire_due(app.surfaces)
        except Exception as exc:
            failures.failed(exc)
        else:
            failures.succeeded()
        await asyncio.sleep(every_s)


# Slack's answers to apps.connections.open that no retry can fix.
_BAD_APP_TOKEN = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked"}
)


async def _socket_mode(app: App, settings: Settings) -> asyncio.Task[None]:
    """Connect Socket Mode in the background, after refusing an app token Slack refuses.

    slack_sdk retries a refused token forever inside ``connect_async``; checked
    here first, a wrong SLACK_APP_TOKEN stops the start with one clear line.
    Any other failure (Slack unreachable) leaves the HTTP side serving while the
    connection keeps being retried.
    """
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_sdk.errors import SlackApiError

    from bot.chat.slack import slack_client

    assert app.slack is not None
    client = slack_client(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    try:
        await asyncio.wait_for(
            client.apps_connections_open(app_token=settings.slack_app_token), timeout=10
        )
    except SlackApiError as exc:
        error = str(exc.response.get("error", ""))
        if error in _BAD_APP_TOKEN:
            raise ConfigError(f"SLACK_APP_TOKEN: Slack refused it ({error})") from None
        log.warning("slack.socket_mode_unavailable", error=error)
    except (TimeoutError, OSError) as exc:
        log.warning("slack.socket_mode_unavailable", error=str(exc))
    # apps.connections.open goes to SLACK_API_URL like every other call.
    handler = AsyncSocketModeHandler(app.slack.app, settings.slack_app_token, web_client=client)

    async def connect() -> None:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("slack.socket_mode_connected")
        try:
            await asyncio.Event().wait()
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]

    return start_background("socket-mode", connect)


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
    from bot.chat.teams import TeamsDelivery, teams_messages_route
    from bot.chat.teams_auth import TeamsTokenValidator
    from bot.chat.teams_token import TeamsTokenProvider

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
    settings: Settings, slack: ChatSurface | None, teams: TeamsSurface | None
) -> tuple[FanOut, Callable[[str], Conversation], str, str, Conversation]:
    """The alert surface on Slack and Teams: incidents by priority, reports to both.

    An incident of a priority no chat takes (SLACK_ALERT_PRIORITIES and
    TEAMS_ALERT_PRIORITIES both leave it out) is shown in the log, as it is
    without any chat, never nowhere. Returns the surface, the places of an
    incident by priority, the channels (fan-out conversations) of digests and
    of scheduled reports, and the team's alert channel on both (announcements
    such as ``change start``: Teams' alert channel, else its reports channel).
    """
    surfaces: dict[str, KeyedSurface] = {"log": LogSurface()}
    if teams is not None:
        surfaces["teams"] = teams
    if isinstance(slack, OutboxSurface):
        surfaces["slack"] = slack
    fanout = FanOut(surfaces)
    slack_place = [("slack", settings.slack_alert_channel)] if "slack" in surfaces else []
    log_place = [("log", settings.slack_alert_channel)]
    teams_alerts = settings.teams_alert_channel if teams is not None else ""
    teams_reports = settings.teams_reports_channel if teams is not None else ""

    def places_for(priority: str) -> Conversation:
        places = [p for p in slack_place if priority in settings.slack_alert_priorities]
        if teams_alerts and priority in settings.teams_alert_priorities:
            places.append(("teams", teams_alerts))
        return fanout.where(places or log_place)

    digest = fanout.where(slack_place or ([("teams", teams_alerts)] if teams_alerts else log_place))
    reports = fanout.where(
        [*slack_place, *([("teams", teams_reports)] if teams_reports else [])] or log_place
    )
    teams_team = teams_alerts or teams_reports
    team = fanout.where(
        [*slack_place, *([("teams", teams_team)] if teams_team else [])] or log_place
    )
    return fanout, places_for, digest.channel, reports.channel, team


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


async def _close_client(client: Any) -> None:
    session = getattr(client, "session", None)
    if session is not None and not session.closed:
        await session.close()
