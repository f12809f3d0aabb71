"""Two replicas behind one address: each command, click, alert and scheduled slot happens once.

Two in-process bots (``build_app(serve=True)``, as ``sms-bot serve`` runs it)
share one PostgreSQL store and the fake Slack; the test alternates requests
between them as a load balancer would, and both run their outbox workers,
alert processors and schedulers all along.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.store import open_store
from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
from tests.harness.docker import wait_until
from tests.harness.fake_slack import FakeMessage, FakeSlack
from tests.harness.serve_env import unreachable_sms

pytestmark = pytest.mark.integration

OPERATOR = "UOPS"


@pytest.fixture
async def bots(tmp_path: Path, pg_dsn: str, fake_slack: FakeSlack) -> AsyncIterator[list[Bot]]:
    settings = load_settings(
        _env_file=None,
        bot_state_url=pg_dsn,
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.api_url,
        slack_alert_channel=CHANNEL,
        alert_webhook_token=WEBHOOK_TOKEN,
        sms_operators=(OPERATOR,),
        **(
            unreachable_sms(tmp_path)
            | {"sms_check_timeout_s": 1, "sms_morning_summary_cron": "*/3 * * * * *"}
        ),
    )
    clock = Clock()
    started = [Bot(settings, clock), Bot(settings, clock)]
    try:
        for bot in started:
            await bot.start()
        yield started
    finally:
        for bot in started:
            await bot.stop()


def _text(message: FakeMessage) -> str:
    return json.dumps(message.blocks) + message.text


def _roots(fake: FakeSlack, needle: str) -> list[FakeMessage]:
    return [m for m in fake.messages(CHANNEL) if not m.is_reply and needle in _text(m)]


async def _until(what: str, predicate: Any, timeout: float = 60) -> None:
    async def probe() -> bool:
        return bool(await predicate() if asyncio.iscoroutinefunction(predicate) else predicate())

    await wait_until(probe, timeout=timeout, what=what)


async def _webhook(bot: Bot, alert: dict[str, Any]) -> int:
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "sms-bot",
        "groupKey": "{}",
        "alerts": [alert],
    }
    assert bot.client is not None
    resp = await bot.client.post(
        "/alerts/alertmanager", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    )
    return resp.status


async def test_two_replicas_behind_one_address_do_everything_once(
    bots: list[Bot], fake_slack: FakeSlack, pg_dsn: str
) -> None:
    a, b = bots

    # Commands: one to each replica, one answer each.
    assert await a.command("help", user=OPERATOR, fake=fake_slack) == 200
    assert await b.command("runbook", user=OPERATOR, fake=fake_slack) == 200

    # An alert, and Alertmanager's repeat of it landing on the other replica: one thread.
    alert = {
        "status": "firing",
        "labels": {"alertname": "ReplicaCheck", "instance": "sms-1", "severity": "warning"},
        "annotations": {"summary": "ReplicaCheck on sms-1"},
        "startsAt": "2026-11-30T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "replicas-fp",
    }
    assert await _webhook(a, alert) == 200
    await _until("the alert's thread", lambda: _roots(fake_slack, "ReplicaCheck"))
    assert await _webhook(b, alert) == 200

    # A double click on Acknowledge, one request on each replica: acknowledged once.
    [root] = _roots(fake_slack, "ReplicaCheck")
    [ack] = [
        element
        for block in root.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
        if element["action_id"].startswith("incident.ack")
    ]
    statuses = await asyncio.gather(
        *(
            bot.click(
                ack["action_id"], ack["value"], user=OPERATOR, fake=fake_slack, message_ts=root.ts
            )
            for bot in (a, b)
        )
    )
    assert statuses == [200, 200]

    # Schedules: both replicas run a scheduler; the slots every three seconds run once each.
    store = open_store(pg_dsn)
    await store.open()
    try:

        async def three_finished() -> bool:
            runs = await store.job_runs("morning-summary", limit=100)
            return len([r for r in runs if r.status != "running"]) >= 3

        await _until("three morning summaries", three_finished, timeout=90)
        runs = await store.job_runs("morning-summary", limit=100)
        audit = await store.recent_audit(500)
        acks = [e for e in audit if e.action == "click" and e.outcome == "acknowledged"]
        commands = sorted(e.target for e in audit if e.action == "command")
        incidents = await store.incidents_open()
    finally:
        await store.close()

    finished = [r for r in runs if r.status != "running"]
    assert len({r.slot for r in runs}) == len(runs)
    assert len({r.runner for r in runs}) == 1  # one leader schedules

    def summaries() -> list[FakeMessage]:
        return _roots(fake_slack, "Morning summary")

    await _until("every finished slot in Slack", lambda: len(summaries()) >= len(finished))
    assert len(summaries()) <= len(runs)  # no slot posted twice

    # Each command ran once (on the replica it reached), one thread, one acknowledgement.
    assert commands == ["help", "runbook"]
    assert len(_roots(fake_slack, "ReplicaCheck")) == 1
    [incident] = [i for i in incidents if i.fingerprint == "replicas-fp"]
    assert incident.repeats == 1 and incident.acknowledged_by == OPERATOR
    assert len(acks) == 1

    def ack_notes() -> list[FakeMessage]:
        return [m for m in fake_slack.replies(root.ts) if f"Acknowledged by {OPERATOR}" in m.text]

    await _until("the acknowledgement in the thread", ack_notes)
    assert len(ack_notes()) == 1
    # Every message was delivered once: no item left, none dead.
    assert await _outbox_left(pg_dsn) == []


async def _outbox_left(dsn: str) -> list[Any]:
    store = open_store(dsn)
    await store.open()
    try:

        async def drained() -> bool:
            return not await store.outbox_items()

        await _until("the outbox to drain", drained)
        return await store.outbox_items()
    finally:
        await store.close()
