"""Latency, side by side in one run: the bot's first Slack message and slash-command acks.

1. A real Alertmanager (``tests/harness/alertmanager.py``) with one receiver
   that has two integrations: Alertmanager's own Slack notifier, pointed at
   the fake Slack's incoming-webhook URL, and the webhook to the bot (in
   process, as ``tests/harness/botapp.py`` runs it, on the same fake Slack).
   Both are notified by the same flush of the same group, so the difference
   between the fake's clock when Alertmanager's Slack message arrives and
   when the bot's first message for the alert arrives is what the bot adds:
   store, inbox, incident, outbox, Slack call. Alerts are sent one at a time,
   more than a second apart, so Slack's per-channel pacing does not stand in
   the way of a first message. Goal: the bot at most 10 ms after (p50).
2. ``CONCURRENT`` signed slash commands at once to ``POST /slack/events``:
   the time until each is acknowledged. Goal: p99 within 100 ms.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["main"]

ALERTS = 15
SPACING_S = 2.5
CONCURRENT = 100
ROUNDS = 3


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _alert_latency(bot: Any, fake: Any, root: Path) -> list[float]:
    from tests.harness.alertmanager import alertmanager_config, alertmanager_process
    from tests.harness.botapp import CHANNEL, WEBHOOK_TOKEN

    config = alertmanager_config(
        webhook_url=f"{bot.url}/alerts/alertmanager",
        token=WEBHOOK_TOKEN,
        group_wait="0s",
        group_interval="1s",
        repeat_interval="1h",
    )
    config["receivers"][0]["slack_configs"] = [
        {
            "api_url": fake.incoming_webhook_url(),
            "channel": "#sms-alerts",
            "send_resolved": False,
            "title": "{{ .CommonLabels.alertname }} {{ .CommonLabels.instance }}",
        }
    ]
    path = root / "alertmanager.yml"
    path.write_text(json.dumps(config))
    diffs: list[float] = []
    async with (
        alertmanager_process(path, workdir=root / "am") as am,
        aiohttp.ClientSession() as session,
    ):
        for i in range(ALERTS):
            instance = f"latency-{i:03d}"
            alert = {
                "labels": {"alertname": "LatencyBench", "instance": instance},
                "annotations": {"summary": f"LatencyBench on {instance}"},
                "startsAt": datetime.now(UTC).isoformat(),
            }
            async with session.post(f"{am.url}/api/v2/alerts", json=[alert]) as resp:
                resp.raise_for_status()
            deadline = time.monotonic() + 10
            hook = bot_at = None
            while time.monotonic() < deadline and (hook is None or bot_at is None):
                await asyncio.sleep(0.01)
                hook = next((at for at, b in fake.hooks if instance in json.dumps(b)), None)
                bot_at = next(
                    (
                        float(m.ts)
                        for m in fake.messages(CHANNEL)
                        if not m.is_reply and instance in m.text
                    ),
                    None,
                )
            if hook is not None and bot_at is not None:
                diffs.append(bot_at - hook)
            await asyncio.sleep(SPACING_S)
    return diffs


def _fire(url: str, rounds: list[list[tuple[bytes, dict[str, str]]]]) -> list[float]:
    """In a process of its own: each round's requests at once; each one's ack time.

    The first round is a warm-up (a few connections opened) and is not counted.
    """

    async def fire() -> list[float]:
        times: list[float] = []
        connector = aiohttp.TCPConnector(limit=max(len(r) for r in rounds))
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(body: bytes, headers: dict[str, str]) -> float:
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"slash command answered HTTP {resp.status}")
                return time.perf_counter() - start

            await asyncio.gather(*(one(*r) for r in rounds[0]))
            for requests in rounds[1:]:
                times += await asyncio.gather(*(one(*r) for r in requests))
                await asyncio.sleep(1)
        return times

    return asyncio.run(fire())


async def _command_acks(bot: Any, fake: Any) -> list[float]:
    """Slash commands sent from another process, as Slack sends them from elsewhere.

    Sent from this process, the client's own work (opening connections, reading
    answers) would share the bot's event loop and be counted as the bot's ack
    time; on its own process (another core) only the bot's part is measured.
    The bot's work after each ack (running ``help``, answering the fake Slack's
    ``response_url``, which is on the bot's loop) still competes with the acks.
    """
    from tests.harness.botapp import CHANNEL, SECRET
    from tests.harness.slack_signing import signed_headers, slash_command_body

    def request(n: int) -> tuple[bytes, dict[str, str]]:
        body = slash_command_body(
            "help",
            user_id=f"U{n:04d}",
            channel_id=CHANNEL,
            response_url=fake.response_url(CHANNEL, user=f"U{n:04d}"),
        )
        return body, signed_headers(body, secret=SECRET)

    # A warm-up of 10, then the rounds; every request its own (a trigger_id each).
    rounds = [[request(n) for n in range(10)]]
    rounds += [[request(n) for n in range(CONCURRENT)] for _ in range(ROUNDS)]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, _fire, f"{bot.url}/slack/events", rounds
        )


async def _run() -> None:
    from bot.config import load_settings
    from bot.logs import configure_logging
    from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
    from tests.harness.fake_slack import FakeSlack

    configure_logging("WARNING", json=False)
    with tempfile.TemporaryDirectory(prefix="sms-bot-latency-") as tmp:
        root = Path(tmp)
        async with FakeSlack(token="xoxb-test-token") as fake:
            settings = load_settings(
                _env_file=None,
                bot_state_url=f"sqlite:///{root}/state.db",
                bot_audit_log=str(root / "audit.jsonl"),
                slack_bot_token="xoxb-test-token",
                slack_signing_secret=SECRET,
                slack_api_url=fake.api_url,
                slack_alert_channel=CHANNEL,
                alert_webhook_token=WEBHOOK_TOKEN,
                sms_health_url="http://127.0.0.1:1/health",
                sms_prometheus_url="http://127.0.0.1:1",
                sms_database_url="postgresql://nobody@127.0.0.1:1/none",
                sms_incidents_dir=str(root / "incidents"),
                sms_alert_threads_per_minute=1000,
                sms_check_timeout_s=2,
            )
            bot = Bot(settings, Clock())
            await bot.start()
            try:
                diffs = await _alert_latency(bot, fake, root)
                acks = await _command_acks(bot, fake)
            finally:
                await bot.stop()
    print(f"latency (alerts: {len(diffs)} of {ALERTS} seen on both paths)")
    if diffs:
        p50 = statistics.median(diffs) * 1000
        print(
            f"  bot's first message after Alertmanager's own Slack message: p50 {p50:.1f} ms,"
            f" max {max(diffs) * 1000:.1f} ms  (goal: at most 10 ms)"
        )
    p50, p99 = _percentile(acks, 50) * 1000, _percentile(acks, 99) * 1000
    print(
        f"  slash command ack, {CONCURRENT} concurrent x {ROUNDS}: p50 {p50:.0f} ms,"
        f" p99 {p99:.0f} ms  (goal: p99 within 100 ms)"
    )


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
