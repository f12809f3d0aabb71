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
import selectors
import socket
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

    A client of plain sockets, each request's bytes made beforehand: writing
    a hundred requests costs it well under a millisecond, so the times are the
    bot's (an HTTP library would spend longer issuing them than the bot does
    answering, and count it). Each request has a kept-alive connection of its
    own, opened and used once in a warm-up round (the first, not counted), as
    the connections of a proxy in front of the bot are.
    """
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    conns = [socket.create_connection((host, port)) for _ in range(max(map(len, rounds)))]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times: list[float] = []
    try:
        for number, requests in enumerate(rounds):
            raw = [_http_post(parsed.path, f"{host}:{port}", *r) for r in requests]
            took = _round(conns[: len(raw)], raw)
            if number:
                times += took
            time.sleep(1)  # the work the commands started is done before the next round
    finally:
        for conn in conns:
            conn.close()
    return times


def _http_post(path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _round(conns: list[socket.socket], raw: list[bytes]) -> list[float]:
    """Send every request, then wait for every answer: the time each took."""
    selector = selectors.DefaultSelector()
    started: dict[int, float] = {}
    received: dict[int, bytes] = {}
    for index, (conn, data) in enumerate(zip(conns, raw, strict=True)):
        started[index] = time.perf_counter()
        conn.sendall(data)
        received[index] = b""
        selector.register(conn, selectors.EVENT_READ, index)
    took: dict[int, float] = {}
    while len(took) < len(raw):
        for key, _ in selector.select(timeout=30):
            index = key.data
            chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if not chunk:
                raise RuntimeError("the bot closed a connection")
            received[index] += chunk
            if _complete(received[index]):
                took[index] = time.perf_counter() - started[index]
                selector.unregister(key.fileobj)
                status = received[index].split(b" ", 2)[1]
                if status != b"200":
                    raise RuntimeError(f"slash command answered HTTP {status.decode()}")
    selector.close()
    return [took[i] for i in range(len(raw))]


def _complete(response: bytes) -> bool:
    """A whole HTTP/1.1 response: its headers, and as much body as Content-Length says."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


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

    # A warm-up round, then the rounds; every request its own (a trigger_id each).
    rounds = [[request(n) for n in range(CONCURRENT)] for _ in range(1 + ROUNDS)]
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
    from tests.harness.serve_env import unreachable_sms

    configure_logging("WARNING", json=False)
    with tempfile.TemporaryDirectory(prefix="sms-bot-latency-") as tmp:
        root = Path(tmp)
        async with FakeSlack(token="xoxb-test-token") as fake:
            settings = load_settings(
                _env_file=None,
                **unreachable_sms(root),
                bot_state_url=f"sqlite:///{root}/state.db",
                slack_bot_token="xoxb-test-token",
                slack_signing_secret=SECRET,
                slack_api_url=fake.api_url,
                slack_alert_channel=CHANNEL,
                alert_webhook_token=WEBHOOK_TOKEN,
                sms_alert_threads_per_minute=1000,
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
