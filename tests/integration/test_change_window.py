"""A change window on the real services: the backend goes unhealthy mid-watch and it is said.

The watch is shortened by configuration (``SMS_CHANGE_WATCH_MIN``, and one
round a second), the health endpoint is the fake SMS backend's in Docker, the
figures come from the real Prometheus, the backup folder is real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import build_app
from bot.chat.base import Conversation
from bot.config import load_settings
from bot.events import Command
from bot.messages import Status
from tests.fakes import FakeSurface
from tests.harness.docker import SmsContainers

pytestmark = pytest.mark.integration

USER = "console:ops"


def _command(text: str) -> Command:
    return Command(
        text=text, user=USER, source="console", conversation=Conversation("fake", "#ops")
    )


async def test_the_watch_sees_the_backend_go_unhealthy_and_reports_it_at_once(
    deployment: dict[str, str], sms_containers: SmsContainers, tmp_path: Path
) -> None:
    env = {
        **deployment,
        "SMS_OPERATORS": USER,
        "SMS_CHANGE_WATCH_MIN": "0.1",  # six rounds, one a second
        "SMS_CHANGE_WATCH_INTERVAL_S": "1",
        "SMS_INCIDENTS_DIR": str(tmp_path / "incidents"),
    }
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    async with build_app(settings) as app:
        start = FakeSurface()
        await app.dispatcher.handle(_command('change start "Upgrade the backend"'), start)
        announced = start.last("m1")
        assert announced.status is Status.OK, announced
        before = next(s for s in announced.steps if s.name.startswith("Record the state"))
        assert before.summary.startswith("all 5 checks pass"), before.summary

        watch = FakeSurface()
        task = asyncio.create_task(app.dispatcher.handle(_command("change done"), watch))

        async def first_round_done() -> None:
            while True:
                shown = [m for kind, _r, m in watch.events if kind != "reply"]
                if shown and any(
                    s.name == "Watch 1/6" and s.status is not Status.RUNNING
                    for s in shown[-1].steps
                ):
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(first_round_done(), timeout=30)
        sms_containers.set_health(
            {
                "status": "unhealthy",
                "checks": {"database": {"status": "unhealthy", "message": "connection refused"}},
            }
        )
        await asyncio.wait_for(task, timeout=60)

    final = watch.last()
    statuses = [s.status for s in final.steps]
    assert statuses[0] is Status.OK, final.steps
    assert Status.CRIT in statuses[1:], final.steps
    [alarm] = [m for m in watch.replies() if m.title == "Degradation during the change watch"]
    assert alarm.text.startswith("System health endpoint: ok → "), alarm.text
    assert "Rollback:" in alarm.text
    assert final.text.startswith("Degraded after the change"), final.text
    [record] = (tmp_path / "incidents").glob("change-*.md")
    text = record.read_text()
    assert "# Change: Upgrade the backend" in text
    assert "round 1: 5/5 checks ok" in text and "DEGRADED" in text
