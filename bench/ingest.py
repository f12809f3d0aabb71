"""Durable alert ingest against a bare aiohttp handler, in one run.

The bot (``sms-bot serve``, as an operator runs it) and a bare aiohttp
handler that only reads and parses the body each run as their own process on
loopback; one client sends one-alert Alertmanager webhooks, ``CONCURRENCY`` at
a time, to each in turn, and prints requests per second and the ratio bot /
bare, for an SQLite file and for a throwaway PostgreSQL cluster (skipped, with
a line saying so, when its binaries are missing). The bot answers 200 only once
the alert is committed (and fsynced) in its store, so this measures how well
concurrent webhooks share their commits.

The alerts cycle over a few fingerprints, as a flapping group does: the inbox
folds the repeats into open incidents meanwhile, as it would in production.
No Slack is configured: the threads go to the bot's log surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

__all__ = ["main"]

CONCURRENCY = 50
REQUESTS = 2000
ROUNDS = 3
WARMUP = 300
FINGERPRINTS = 20
TOKEN = "bench-webhook-token"

_BARE = """
import sys
from aiohttp import web

async def handle(request):
    body = await request.json()
    return web.json_response({"status": "stored", "alerts": len(body["alerts"])})

app = web.Application()
app.router.add_post("/alerts/alertmanager", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def _body(i: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    fp = f"ingest-{i % FINGERPRINTS}"
    alert = {
        "status": "firing",
        "labels": {"alertname": "IngestBench", "instance": fp, "severity": "warning"},
        "annotations": {"summary": f"IngestBench ({fp})"},
        "startsAt": now,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fp,
    }
    webhook = {"version": "4", "status": "firing", "receiver": "sms-bot", "groupKey": fp}
    return json.dumps({**webhook, "alerts": [alert]}).encode()


async def _wait_up(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            async with session.get(url) as resp:
                await resp.read()
                return
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _load(url: str, *, requests: int) -> float:
    """Requests per second for ``requests`` webhooks, ``CONCURRENCY`` in flight."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bodies = [_body(i) for i in range(requests)]
    counter = iter(range(requests))
    failures: list[int] = []
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                async with session.post(url, data=bodies[i], headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures.append(resp.status)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} webhooks failed, e.g. HTTP {failures[0]}")
    return requests / elapsed


@contextlib.asynccontextmanager
async def _server(
    argv: list[str], *, env: dict[str, str], cwd: Path, port: int
) -> AsyncIterator[str]:
    from tests.harness.processes import stop

    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_up(session, f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}/alerts/alertmanager"
    finally:
        stop(proc)


def _bot_env(root: Path, state_url: str, port: int) -> dict[str, str]:
    from tests.harness.serve_env import serve_env

    return serve_env(
        root,
        BOT_PORT=str(port),
        BOT_STATE_URL=state_url,
        BOT_LOG_LEVEL="WARNING",
        ALERT_WEBHOOK_TOKEN=TOKEN,
    )


def _sms_bot() -> list[str]:
    script = Path(sys.executable).with_name("sms-bot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def _command(state_url: str | None, root: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """How to start the bot on ``state_url``, or the bare handler for None."""
    if state_url is None:
        # The bare app has no /healthz: probing it answers 404, which is "up".
        return [sys.executable, "-c", _BARE, str(port)], dict(os.environ)
    return [*_sms_bot(), "serve"], _bot_env(root, state_url, port)


@contextlib.contextmanager
def _postgres() -> Iterator[str | None]:
    """A DSN on a throwaway cluster, or None (and why) when PostgreSQL cannot be started."""
    from tests.harness.postgres import PgHarnessError, start_cluster

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_cluster())
            dsn: str | None = server.create_database_sync("bench")
        except (PgHarnessError, OSError) as exc:
            print(f"postgresql: skipped ({exc})")
            dsn = None
        yield dsn


async def _run(root: Path, pg: str | None) -> None:
    from tests.harness.loopback import free_port

    targets: dict[str, str | None] = {
        "bare aiohttp handler": None,
        "bot on SQLite file": f"sqlite:///{root}/state.db",
    }
    if pg is not None:
        targets["bot on PostgreSQL"] = pg
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for label, state_url in targets.items():
            port = free_port()
            argv, env = _command(state_url, root, port)
            urls[label] = await stack.enter_async_context(
                _server(argv, env=env, cwd=root, port=port)
            )
            await _load(urls[label], requests=WARMUP)
        # Interleaved rounds: a machine whose load changes meanwhile weighs on all alike.
        rates: dict[str, list[float]] = {label: [] for label in urls}
        for _ in range(ROUNDS):
            for label, url in urls.items():
                rates[label].append(await _load(url, requests=REQUESTS))
    print(
        f"ingest ({REQUESTS} one-alert webhooks, {CONCURRENCY} concurrent, median of"
        f" {ROUNDS} interleaved rounds; requests/s)"
    )
    bare = rates["bare aiohttp handler"]
    for label, values in rates.items():
        rate = statistics.median(values)
        ratio = statistics.median(v / b for v, b in zip(values, bare, strict=True))
        suffix = "" if label.startswith("bare") else f"  ({ratio:.2f} x bare, round by round)"
        print(f"  {label:<21}: {rate:7.0f}{suffix}")
    if pg is None:
        print("  bot on PostgreSQL    : skipped (PostgreSQL could not be started)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sms-bot-ingest-") as tmp, _postgres() as pg:
        root = Path(tmp)
        (root / "backups").mkdir()
        asyncio.run(_run(root, pg))


if __name__ == "__main__":
    main()
