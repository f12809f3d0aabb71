"""The bot under test, in-process: its real HTTP app, outbox worker and alert processor.

Slack is the local fake (``tests/harness/fake_slack.py``); requests are signed
with the real scheme; the bot can be stopped and started again on the same
store, like a restart.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bot.app import App, build_app
from bot.chat.slack import slack_http_routes
from bot.config import Settings
from bot.http import build_http_app
from bot.store.base import AuditEvent
from bot.tasks import start_background
from handlers.alerts import alert_webhook_route
from tests.harness.docker import free_port
from tests.harness.fake_slack import FakeSlack
from tests.harness.slack_signing import block_actions_body, signed_headers, slash_command_body

__all__ = ["CHANNEL", "SECRET", "WEBHOOK_TOKEN", "Bot", "Clock"]

SECRET = "signing-secret-for-tests"
WEBHOOK_TOKEN = "alert-webhook-token-for-tests"
CHANNEL = "C0ALERTS"


@dataclass
class Clock:
    """Real time plus an offset the test can move forward (proposal expiry)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Bot:
    """The bot under test: app, HTTP server and outbox worker; can be restarted."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.app: App | None = None
        self.client: TestClient | None = None
        self._stack: AsyncExitStack | None = None
        self._worker: asyncio.Task[None] | None = None
        self._alerts: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> None:
        stack = AsyncExitStack()
        app = await stack.enter_async_context(build_app(self.settings, clock=self.clock))
        assert app.slack is not None
        http = build_http_app(ready_check=app.deps.store.ping, registry=app.deps.metrics.registry)
        # Mounted as ``serve`` mounts it: only with a signing secret.
        http.add_routes(
            slack_http_routes(app.slack.app, signing_secret=self.settings.slack_signing_secret)
        )
        if app.teams is not None:  # as ``serve`` mounts it
            http.router.add_post("/api/messages", app.teams.route)
        http.router.add_post(
            "/alerts/alertmanager",
            alert_webhook_route(
                token=self.settings.alert_webhook_token, receive=app.alerts.receive
            ),
        )
        # The same port after a restart, so Alertmanager's webhook URL stays valid.
        if self.port is None:
            self.port = free_port()
        client = TestClient(TestServer(http, host="127.0.0.1", port=self.port))
        await client.start_server()
        stack.push_async_callback(client.close)
        # As ``serve`` runs them: restarted when they raise, logged when they start failing.
        self._worker = start_background("outbox", app.outbox.run)
        self._alerts = start_background("alerts", partial(app.alerts.run, idle_s=0.2))
        self.app, self.client, self._stack = app, client, stack

    async def stop(self) -> None:
        for task in (self._alerts, self._worker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._stack is not None:
            await self._stack.aclose()
        self.app = self.client = self._stack = self._worker = self._alerts = None

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        assert self.client is not None
        resp = await self.client.post("/slack/events", data=body, headers=headers)
        return resp.status, await resp.text()

    async def command(self, text: str, *, user: str, fake: FakeSlack) -> int:
        body = slash_command_body(
            text,
            user_id=user,
            channel_id=CHANNEL,
            response_url=fake.response_url(CHANNEL, user=user),
        )
        status, _ = await self.post(body, signed_headers(body, secret=SECRET))
        return status

    async def click(
        self, action_id: str, value: str, *, user: str, fake: FakeSlack, message_ts: str
    ) -> int:
        body = block_actions_body(
            action_id,
            value,
            user_id=user,
            channel_id=CHANNEL,
            message_ts=message_ts,
            response_url=fake.response_url(CHANNEL, user=user, message_ts=message_ts),
        )
        status, _ = await self.post(body, signed_headers(body, secret=SECRET))
        return status

    async def teams(
        self, activity: dict[str, Any], *, token: str | None
    ) -> tuple[int, dict[str, Any] | None]:
        """POST an activity to ``/api/messages`` as Teams does; the status and JSON answer."""
        assert self.client is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.client.post("/api/messages", json=activity, headers=headers)
        text = await resp.text()
        body = json.loads(text) if text and resp.content_type == "application/json" else None
        return resp.status, body

    async def audit(self, limit: int = 200) -> list[AuditEvent]:
        assert self.app is not None
        return await self.app.deps.store.recent_audit(limit)

    @property
    def url(self) -> str:
        assert self.client is not None
        return str(self.client.make_url("")).rstrip("/")
