"""Slack slower than the bot's client timeout: every message still shows once.

Slack carries out a post and answers only after the client gave up (15 s
against a 10 s timeout, as seen in production, scaled down here): the bot
must find the post it made instead of posting it again. The bot runs
in-process (``tests/harness/botapp.py``) with its real HTTP app, outbox worker
and alert processor; Slack is the local fake in its slow mode.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
from tests.harness.docker import wait_until
from tests.harness.fake_slack import FakeMessage, FakeSlack

pytestmark = pytest.mark.integration

VIEWER = "UVIEWER"
CLIENT_TIMEOUT_S = 0.5
SLOW_S = 10.0  # far longer than the client waits; the fake's shutdown ends it early


@pytest.fixture
async def bot(tmp_path: Path, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    settings = load_settings(
        _env_file=None,
        bot_state_url=f"sqlite:///{tmp_path}/state.db",
        bot_audit_log=str(tmp_path / "audit.jsonl"),
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.api_url,
        slack_timeout_s=CLIENT_TIMEOUT_S,
        # By name, as by default: the lookup must find the channel's id first.
        slack_alert_channel="#sms-alerts",
        alert_webhook_token=WEBHOOK_TOKEN,
        sms_backup_dir=str(tmp_path / "backups"),
        sms_incidents_dir=str(tmp_path / "incidents"),
        sms_check_timeout_s=5,
    )
    b = Bot(settings, Clock())
    await b.start()
    yield b
    await b.stop()


def _text(message: FakeMessage) -> str:
    return json.dumps(message.blocks) + message.text


def _roots(fake: FakeSlack) -> list[FakeMessage]:
    return [m for m in fake.messages(CHANNEL) if not m.is_reply]


async def _until(what: str, predicate: Any, timeout: float = 60) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await wait_until(probe, timeout=timeout, what=what)


async def _outbox_empty(bot: Bot) -> None:
    assert bot.app is not None
    store = bot.app.deps.store

    async def empty() -> bool:
        return await store.outbox_pending() == 0

    await wait_until(empty, timeout=60, what="the outbox to empty")


def _keys(messages: list[FakeMessage]) -> list[str]:
    return [str((m.metadata or {}).get("event_payload", {}).get("key")) for m in messages]


async def test_a_command_answered_late_by_slack_shows_once(bot: Bot, fake_slack: FakeSlack) -> None:
    fake_slack.slow_next(10, delay_s=SLOW_S, method="chat.postMessage")  # every post
    assert await bot.command("backups", user=VIEWER, fake=fake_slack) == 200
    await _until("the answer in the channel", lambda: _roots(fake_slack))
    await _outbox_empty(bot)
    [root] = _roots(fake_slack)
    assert "Backups" in _text(root)
    # Every message the bot made is in Slack once, replies in the root's thread.
    everything = fake_slack.messages(CHANNEL)
    assert len(set(_keys(everything))) == len(everything)
    assert all(m.thread_ts == root.ts for m in everything if m.is_reply)
    assert len(fake_slack.calls_to("chat.postMessage")) == len(everything)
    assert fake_slack.calls_to("conversations.history")


async def test_an_alert_and_its_run_show_once_when_slack_is_slow(
    bot: Bot, fake_slack: FakeSlack
) -> None:
    fake_slack.slow_next(10, delay_s=SLOW_S, method="chat.postMessage")  # every post
    alert = {
        "status": "firing",
        "labels": {"alertname": "BackupStale", "severity": "warning"},
        "annotations": {"summary": "No backup for 30 hours"},
        "startsAt": datetime.now(UTC).isoformat(),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "slow-1",
    }
    body = {"version": "4", "status": "firing", "receiver": "sms-bot", "alerts": [alert]}
    assert bot.client is not None
    resp = await bot.client.post(
        "/alerts/alertmanager", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    )
    assert resp.status == 200

    def thread() -> list[FakeMessage]:
        roots = [m for m in _roots(fake_slack) if "BackupStale" in _text(m)]
        return fake_slack.replies(roots[0].ts) if roots else []

    await _until("the run in the alert's thread", thread)
    await _outbox_empty(bot)
    [root] = [m for m in _roots(fake_slack) if "BackupStale" in _text(m)]
    assert "FIRING" in _text(root)
    replies = fake_slack.replies(root.ts)
    assert any("backup" in _text(m).lower() for m in replies)
    # Nothing twice: one message per outbox key, all replies in this thread.
    everything = fake_slack.messages(CHANNEL)
    assert len(set(_keys(everything))) == len(everything)
    assert [m for m in everything if m.is_reply and m.thread_ts != root.ts] == []
    # Each post timed out once and was found, never sent a second time.
    assert len(fake_slack.calls_to("chat.postMessage")) == len(everything) >= 2
    assert fake_slack.calls_to("conversations.list")
    assert fake_slack.calls_to("conversations.replies")
