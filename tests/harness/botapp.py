"""The bot under test, in-process: ``build_app(serve=True)``, as ``sms-bot serve`` runs it.

Its HTTP app with every route and its background loops (outbox worker, alert
inbox, scheduler, proposal sweeper) come from the composition root; only the
server is the test's (on the same port after a restart).

Slack is the local fake (``tests/harness/fake_slack.py``); requests are signed
with the real scheme; the bot can be stopped and started again on the same
store, like a restart.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bot.app import App, Background, build_app
from bot.config import Settings
from bot.store.base import AuditEvent
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


# Quick loops for tests: the inbox looks again after 0.2 s, the sweeper every second.
TEST_BACKGROUND = Background(alert_idle_s=0.2, proposal_sweep_s=1.0)


class Bot:
    """The bot under test: app, HTTP server and background loops; can be restarted."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        # No catch-up of missed slots at start: the scheduler fires only on its cron,
        # so a test never sees a job's post it did not ask for.
        self.settings = settings.model_copy(update={"sms_schedule_grace_min": 0.0})
        self.clock = clock
        self.app: App | None = None
        self.client: TestClient | None = None
        self._stack: AsyncExitStack | None = None
        self.port: int | None = None

    async def start(self) -> None:
        stack = AsyncExitStack()
        app = await stack.enter_async_context(
            build_app(self.settings, clock=self.clock, serve=True, background=TEST_BACKGROUND)
        )
        assert app.slack is not None and app.http is not None
        # The same port after a restart, so Alertmanager's webhook URL stays valid.
        if self.port is None:
            self.port = free_port()
        client = TestClient(TestServer(app.http, host="127.0.0.1", port=self.port))
        await client.start_server()
        stack.push_async_callback(client.close)
        self.app, self.client, self._stack = app, client, stack

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self.app = self.client = self._stack = None

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
