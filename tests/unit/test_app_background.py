"""The composition root owns what the app runs in the background, and builds it once.

``build_app(serve=True)`` returns the HTTP app with every route and its loops
already running, and stops them when its context ends; without ``serve`` a
terminal command starts none. Everything that changes incidents is the one
service, passed in, not set afterwards.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import Background, build_app
from tests.unit.conftest import make_settings

LOOPS = {"outbox", "proposals", "alerts", "scheduler"}


def _running() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if not t.done()}


async def test_serve_starts_every_loop_and_the_routes_and_stops_them(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        slack_bot_token="xoxb-test-token",
        slack_signing_secret="secret",
        alert_webhook_token="token",
        sms_schedule_grace_min=0,
    )
    quick = Background(alert_idle_s=0.1, proposal_sweep_s=0.1, drain_s=0.1)
    async with build_app(settings, serve=True, background=quick) as app:
        assert _running() >= LOOPS
        assert app.http is not None
        paths = {r.resource.canonical for r in app.http.router.routes() if r.resource}
        assert {"/healthz", "/readyz", "/metrics", "/slack/events", "/alerts/alertmanager"} <= (
            paths
        )
    assert not LOOPS & _running()


async def test_without_a_signing_secret_no_slack_route(tmp_path: Path) -> None:
    async with build_app(make_settings(tmp_path), serve=True) as app:
        assert app.http is not None
        paths = {r.resource.canonical for r in app.http.router.routes() if r.resource}
        assert "/slack/events" not in paths and "/alerts/alertmanager" in paths


async def test_terminal_commands_start_nothing_in_the_background(tmp_path: Path) -> None:
    before = _running()
    async with build_app(make_settings(tmp_path)) as app:
        assert app.http is None
        assert not LOOPS & (_running() - before)


async def test_one_incident_service_passed_to_everything_that_uses_it(tmp_path: Path) -> None:
    async with build_app(make_settings(tmp_path)) as app:
        assert app.dispatcher.incidents is app.incidents
        assert app.clicks.incidents is app.incidents
        assert app.alerts.incidents is app.incidents
        assert app.incidents.surface is app.alert_surface
