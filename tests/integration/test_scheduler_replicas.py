"""Two ``sms-bot serve`` replicas on one PostgreSQL store: each slot posts once; the leader
killed, the other takes over. Jobs here fire every two seconds (a six-field cron)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.store import open_store
from tests.harness.docker import free_port
from tests.harness.fake_slack import FakeSlack
from tests.harness.serve_env import serve_env

pytestmark = pytest.mark.integration

SMS_BOT = str(Path(sys.executable).with_name("sms-bot"))


def _env(tmp_path: Path, state_url: str, fake: FakeSlack, name: str) -> dict[str, str]:
    return serve_env(
        tmp_path,
        BOT_PORT=str(free_port()),
        BOT_STATE_URL=state_url,
        BOT_AUDIT_LOG=str(tmp_path / f"{name}-audit.jsonl"),
        SLACK_BOT_TOKEN="xoxb-test-token",
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=fake.api_url,
        SLACK_ALERT_CHANNEL="C0ALERTS",
        SMS_MORNING_SUMMARY_CRON="*/2 * * * * *",
        SMS_CHECK_TIMEOUT_S="1",
    )


@pytest.fixture
def replicas(
    tmp_path: Path, pg_dsn: str, fake_slack: FakeSlack
) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for name in ("a", "b"):
        proc = subprocess.Popen(
            [SMS_BOT, "serve"],
            env=_env(tmp_path, pg_dsn, fake_slack, name),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs[proc.pid] = proc
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _runs(dsn: str) -> list[Any]:
    store = open_store(dsn)
    await store.open()
    try:
        return await store.job_runs("morning-summary", limit=1000)
    finally:
        await store.close()


def _summaries(fake: FakeSlack) -> list[Any]:
    return [m for m in fake.messages("C0ALERTS") if not m.is_reply and "Morning summary" in m.text]


async def _wait(what: str, probe: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


async def test_two_replicas_post_each_slot_once_and_take_over(
    replicas: dict[int, subprocess.Popen[bytes]], pg_dsn: str, fake_slack: FakeSlack
) -> None:
    async def three_slots() -> list[Any]:
        runs = await _runs(pg_dsn)
        return runs if len([r for r in runs if r.status != "running"]) >= 3 else []

    runs = await _wait("three morning summaries", three_slots)
    leaders = {int(r.runner.rsplit(":", 1)[1]) for r in runs}
    assert len(leaders) == 1, "only the leader schedules"
    [leader] = leaders
    assert leader in replicas

    os.kill(leader, signal.SIGKILL)
    replicas[leader].wait(timeout=10)
    killed_at = time.monotonic()
    [survivor] = [pid for pid in replicas if pid != leader]

    async def taken_over() -> list[Any]:
        runs = await _runs(pg_dsn)
        mine = [r for r in runs if r.runner.endswith(f":{survivor}") and r.status != "running"]
        return runs if len(mine) >= 2 else []

    runs = await _wait("the other replica to take over", taken_over, timeout=60)
    assert time.monotonic() - killed_at < 60

    slots = [r.slot for r in runs]
    assert len(slots) == len(set(slots))  # no slot ran twice
    finished = [r for r in runs if r.status != "running"]

    async def all_posted() -> bool:
        return len(_summaries(fake_slack)) >= len(finished)

    await _wait("every finished run in Slack", all_posted, timeout=60)
    # One message per slot: the killed leader's queued posts were delivered by the survivor
    # (the outbox is shared), and nothing was posted twice.
    assert len(_summaries(fake_slack)) <= len(runs)
