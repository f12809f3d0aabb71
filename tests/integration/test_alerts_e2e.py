"""Alerts end to end: a real Alertmanager delivers to the bot, threads appear in the fake Slack.

Also: the P0 procedure on the real Docker engine through to an approved
restart, an alert storm of 1,000 alerts, and a bot killed with SIGKILL right
after answering 200 that still posts the alert once it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.adapters.alertmanager import AlertmanagerClient
from bot.config import load_settings
from tests.harness.alertmanager import running_alertmanager
from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
from tests.harness.docker import free_port, wait_until
from tests.harness.fake_slack import FakeMessage, FakeSlack
from tests.harness.processes import stop

pytestmark = pytest.mark.integration

APPROVER = "UAPPROVER"
SMS_BOT = str(Path(sys.executable).with_name("sms-bot"))


@pytest.fixture
async def bot(
    tmp_path: Path, sms_containers: Any, fake_slack: FakeSlack, sms_dsn: str
) -> AsyncIterator[Bot]:
    settings = load_settings(
        _env_file=None,
        bot_state_url=f"sqlite:///{tmp_path}/state.db",
        bot_audit_log=str(tmp_path / "audit.jsonl"),
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.api_url,
        slack_alert_channel=CHANNEL,
        alert_webhook_token=WEBHOOK_TOKEN,
        sms_services=sms_containers.services,
        sms_health_url=sms_containers.health_url,
        sms_database_url=sms_dsn,
        sms_prometheus_url="http://127.0.0.1:1",
        sms_approvers=(APPROVER,),
        sms_recovery_timeout_s=30,
        sms_incidents_dir=str(tmp_path / "incidents"),
        sms_check_timeout_s=5,
        sms_escalation_mention="<!subteam^SONCALL>",
    )
    b = Bot(settings, Clock())
    await b.start()
    yield b
    await b.stop()


def _text(message: FakeMessage) -> str:
    return json.dumps(message.blocks) + message.text


def _roots(fake: FakeSlack, needle: str) -> list[FakeMessage]:
    return [m for m in fake.messages(CHANNEL) if not m.is_reply and needle in _text(m)]


async def _until(what: str, predicate: Any, timeout: float = 30) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await wait_until(probe, timeout=timeout, what=what)


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def test_alertmanager_firing_repeat_and_resolved(
    bot: Bot, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    labels = {"alertname": "DiskSpace", "instance": "sms-1", "severity": "warning"}
    alert = {
        "labels": labels,
        "annotations": {"summary": "Disk 85% full on sms-1"},
        "startsAt": _now(),
        "generatorURL": "http://127.0.0.1:9/graph?g0.expr=disk",
    }
    async with (
        running_alertmanager(
            webhook_url=f"{bot.url}/alerts/alertmanager",
            token=WEBHOOK_TOKEN,
            workdir=tmp_path / "am",
        ) as am,
        aiohttp.ClientSession() as session,
    ):
        client = AlertmanagerClient(am.url, session)
        await client.post_alerts([alert])
        await _until("the alert's thread", lambda: _roots(fake_slack, "FIRING [P2] DiskSpace"))
        [root] = _roots(fake_slack, "DiskSpace")
        assert "Disk 85% full on sms-1" in _text(root)
        # The links are Slack links, not markup escaped into text.
        blocks = json.dumps(root.blocks)
        assert "<http://localhost:3000/d/system-overview|Grafana>" in blocks
        assert "<http://127.0.0.1:9/graph?g0.expr=disk|Prometheus>" in blocks
        assert "|Alertmanager>" in blocks
        assert "&lt;" not in blocks

        assert bot.app is not None
        store = bot.app.deps.store

        async def repeated() -> bool:
            opened = await store.incidents_open()
            return bool(opened) and opened[0].repeats >= 1

        await wait_until(repeated, timeout=30, what="a repeat notification")
        assert len(_roots(fake_slack, "DiskSpace")) == 1  # repeats update the same thread
        await _until("the repeat shown", lambda: "Repeats" in _text(fake_slack.message(root.ts)))

        await client.post_alerts([{**alert, "endsAt": _now()}])
        await _until(
            "the root message to turn green",
            lambda: "RESOLVED [P2] DiskSpace" in _text(fake_slack.message(root.ts)),
        )
        await _until(
            "the resolution in the thread",
            lambda: any("Resolved after" in _text(m) for m in fake_slack.replies(root.ts)),
        )
    [record] = list((tmp_path / "incidents").glob("*.md"))
    text = record.read_text()
    assert "# P2 DiskSpace: Disk 85% full on sms-1" in text
    assert "time to resolve" in text


async def _webhook(bot: Bot, *alerts: dict[str, Any], token: str = WEBHOOK_TOKEN) -> int:
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "sms-bot",
        "groupKey": "{}",
        "alerts": list(alerts),
    }
    assert bot.client is not None
    resp = await bot.client.post(
        "/alerts/alertmanager", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status


def _alert(name: str, fp: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} ({fp})"},
        "startsAt": _now(),
        "endsAt": _now() if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fp,
    }


async def test_backend_down_runs_the_p0_procedure_to_a_verified_restart(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any, tmp_path: Path
) -> None:
    sms_containers.stop("backend")
    assert await _webhook(bot, _alert("BackendDown", "p0", severity="critical")) == 200
    await _until("the P0 thread", lambda: _roots(fake_slack, "FIRING [P0] BackendDown"))
    [root] = _roots(fake_slack, "BackendDown")

    def proposal() -> FakeMessage | None:
        for m in fake_slack.replies(root.ts):
            if any(
                e.get("action_id", "").startswith("proposal.approve")
                for b in m.blocks
                if b.get("type") == "actions"
                for e in b.get("elements", [])
            ):
                return m
        return None

    await _until("the restart proposal in the thread", proposal)
    found = proposal()
    assert found is not None
    thread = "".join(_text(m) for m in fake_slack.replies(root.ts))
    assert "Check container status" in thread and "Tail backend logs" in thread
    [approve] = [
        e
        for b in found.blocks
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["action_id"].startswith("proposal.approve")
    ]
    await bot.click(
        approve["action_id"],
        approve["value"],
        user=APPROVER,
        fake=fake_slack,
        message_ts=found.ts,
    )
    await _until(
        "the restart to recover the backend",
        lambda: any("recovered: healthy" in _text(m) for m in fake_slack.replies(root.ts)),
        timeout=60,
    )
    assert sms_containers.container("backend").status == "running"

    assert await _webhook(bot, _alert("BackendDown", "p0", status="resolved")) == 200
    await _until("the P0 to resolve", lambda: "RESOLVED [P0]" in _text(fake_slack.message(root.ts)))
    await _until("the record", lambda: list((tmp_path / "incidents").glob("*.md")))
    [record] = list((tmp_path / "incidents").glob("*.md"))
    text = record.read_text()
    assert "P0 BackendDown" in text
    assert "click" in text and APPROVER in text  # who approved, and when
    assert "Run `restart (proposal" in text  # the approved action's run and steps
    assert "step Wait until /health is healthy: ok" in text
    assert "time to resolve" in text


async def test_a_storm_of_1000_alerts_is_digested_and_nothing_is_dropped(
    bot: Bot, fake_slack: FakeSlack
) -> None:
    alerts = [_alert(f"Storm{i % 7}", f"storm-{i}", instance=f"host-{i}") for i in range(1000)]
    assert await _webhook(bot, *alerts) == 200
    assert bot.app is not None
    store = bot.app.deps.store

    async def all_open() -> bool:
        return len(await store.incidents_open()) == 1000 and not await store.alert_events_pending()

    await wait_until(all_open, timeout=120, what="1000 incidents")

    def roots() -> list[FakeMessage]:
        return [m for m in fake_slack.messages(CHANNEL) if not m.is_reply]

    # Posts are paced (about one a second in the channel): wait for the threads' roots.
    await _until(
        "ten threads and the digest",
        lambda: (
            sum("FIRING [" in _text(m) for m in roots()) >= 10
            and any("Alert storm" in _text(m) for m in roots())
        ),
        timeout=60,
    )
    threads = [m for m in roots() if "FIRING [" in _text(m)]
    assert len(threads) == 10  # SMS_ALERT_THREADS_PER_MINUTE
    await _until(
        "the digest to list all 990",
        lambda: (
            sum(
                int(m.text.split("Alert storm: ")[1].split(" ")[0])
                for m in fake_slack.messages(CHANNEL)
                if m.text.startswith("CRIT: Alert storm: ")
            )
            == 990
        ),
        timeout=60,
    )


async def test_a_bot_killed_after_answering_200_still_posts_the_alert(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_", "BOT_", "SLACK_"))}
    env.update(
        {
            "BOT_PORT": str(port),
            "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
            "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "SLACK_BOT_TOKEN": "xoxb-test-token",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake_slack.api_url,
            "SLACK_ALERT_CHANNEL": CHANNEL,
            "ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "SMS_HEALTH_URL": "http://127.0.0.1:1/health",
            "SMS_PROMETHEUS_URL": "http://127.0.0.1:1",
            "SMS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "SMS_INCIDENTS_DIR": str(tmp_path / "incidents"),
        }
    )

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [SMS_BOT, "serve"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    url = f"http://127.0.0.1:{port}"
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "sms-bot",
        "groupKey": "{}",
        "alerts": [_alert("DiskSpace", "kill-9", severity="critical")],
    }
    fake_slack.down()  # nothing can leave the bot before it dies
    proc = start()
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with session.post(
                        f"{url}/alerts/alertmanager",
                        json=body,
                        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                    ) as resp:
                        status = resp.status
                    break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "sms-bot serve did not start"
                    await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert status == 200
        assert fake_slack.messages(CHANNEL) == []

        fake_slack.up()
        proc = start()
        await _until(
            "the alert posted after the restart",
            lambda: _roots(fake_slack, "DiskSpace (kill-9)"),
            timeout=60,
        )
        assert len(_roots(fake_slack, "DiskSpace (kill-9)")) == 1
    finally:
        stop(proc)


def test_replay_shows_offline_what_the_bot_would_do(tmp_path: Path) -> None:
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "sms-bot",
        "groupKey": "{}",
        "alerts": [_alert("HighErrorRate", "r1"), _alert("DiskSpace", "r2", severity="warning")],
    }
    saved = tmp_path / "alert.json"
    saved.write_text(json.dumps(payload))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_", "BOT_", "SLACK_"))}
    env.update(
        {
            "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
            "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "SMS_HEALTH_URL": "http://127.0.0.1:1/health",
            "SMS_PROMETHEUS_URL": "http://127.0.0.1:1",
            "SMS_CHECK_TIMEOUT_S": "3",
            "DOCKER_HOST": "unix:///nonexistent.sock",
        }
    )
    done = subprocess.run(
        [SMS_BOT, "replay", str(saved)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = done.stdout
    assert "Route: priority P2, procedure high_error_rate" in out
    assert "Route: priority P2, procedure none (a thread with labels and links)" in out
    assert "ERROR lines in backend logs" in out  # the P2 procedure ran, on the console
    assert done.returncode == 1  # its checks failed: nothing is reachable here

    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "3"}')
    refused = subprocess.run(
        [SMS_BOT, "replay", str(bad)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "not an Alertmanager v4 webhook" in refused.stderr


async def test_two_replicas_on_one_postgresql_store_post_one_storm_digest(
    tmp_path: Path, fake_slack: FakeSlack, pg_dsn: str
) -> None:
    """The digest lives in the store: both replicas add to the one message, none posts its own."""
    bots = []
    for name in ("a", "b"):
        settings = load_settings(
            _env_file=None,
            bot_state_url=pg_dsn,
            bot_audit_log=str(tmp_path / f"{name}-audit.jsonl"),
            slack_bot_token="xoxb-test-token",
            slack_signing_secret=SECRET,
            slack_api_url=fake_slack.api_url,
            slack_alert_channel=CHANNEL,
            alert_webhook_token=WEBHOOK_TOKEN,
            sms_alert_threads_per_minute=2,
            sms_health_url="http://127.0.0.1:1/health",
            sms_prometheus_url="http://127.0.0.1:1",
            sms_database_url="postgresql://nobody@127.0.0.1:1/none",
            sms_incidents_dir=str(tmp_path / "incidents"),
            sms_check_timeout_s=1,
        )
        bot = Bot(settings, Clock())
        await bot.start()
        bots.append(bot)
    try:
        alerts = [_alert(f"Storm{i % 5}", f"storm-{i}", instance=f"h{i}") for i in range(40)]
        # Deliveries alternate between the replicas; both processors claim from one store.
        statuses = await asyncio.gather(
            *(_webhook(bots[n % 2], *alerts[n * 4 : n * 4 + 4]) for n in range(10))
        )
        assert statuses == [200] * 10
        store = bots[0].app.deps.store if bots[0].app else None
        assert store is not None

        async def all_open() -> bool:
            return len(await store.incidents_open()) == 40 and not (
                await store.alert_events_pending()
            )

        await wait_until(all_open, timeout=60, what="40 incidents")

        def roots(needle: str) -> list[FakeMessage]:
            return [
                m for m in fake_slack.messages(CHANNEL) if not m.is_reply and needle in _text(m)
            ]

        def listed() -> int:
            return sum(
                int(m.text.split("Alert storm: ")[1].split(" ")[0])
                for m in roots("Alert storm")
                if m.text.startswith("CRIT: Alert storm: ")
            )

        # Two threads (SMS_ALERT_THREADS_PER_MINUTE), or one more when both replicas
        # counted at the same moment: that limit is approximate, the digest is not.
        await _until("every alert shown", lambda: len(roots("FIRING [")) + listed() == 40)
        assert len(roots("Alert storm")) == 1
    finally:
        for bot in bots:
            await bot.stop()
