"""Jobs fired through the scheduler with a controlled clock, posted to a fake Slack."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.chat.slack import SlackDelivery, slack_client, slack_surface
from bot.deps import Deps
from bot.engine import Engine
from bot.incidents import IncidentService
from bot.outbox import OutboxWorker
from bot.scheduler import Scheduler
from handlers.alerts import AlertProcessor
from handlers.jobs import build_jobs
from procedures.catalogue import CATALOGUE
from tests.fakes import healthy_report
from tests.harness.fake_slack import FakeSlack

MORNING = datetime(2026, 11, 26, 7, 30, 5, tzinfo=UTC)


@dataclass
class Setup:
    deps: Deps
    engine: Engine
    scheduler: Scheduler
    alerts: AlertProcessor
    worker: OutboxWorker
    clock: dict[str, datetime]

    async def deliver(self) -> None:
        await self.engine.shutdown(grace_s=30)  # let background runs finish
        while await self.alerts.process_once():
            pass
        await self.engine.shutdown(grace_s=30)
        while await self.deps.store.outbox_pending():
            if not await self.worker.drain_once():
                self.clock["now"] += timedelta(seconds=2)


@pytest.fixture
async def setup(deps: Deps, fake_slack: FakeSlack) -> AsyncIterator[Setup]:
    clock = {"now": MORNING}
    deps = replace(deps, clock=lambda: clock["now"])
    async with aiohttp.ClientSession() as session:
        client = slack_client(token="xoxb-test-token", base_url=fake_slack.api_url)
        worker = OutboxWorker(
            deps.store,
            {"slack": SlackDelivery(client, session, deps.store)},
            clock=deps.clock,
            min_update_interval_s=0,
        )
        surface = slack_surface(store=deps.store, clock=deps.clock, wake=worker.wake)
        engine = Engine(deps)
        incidents = IncidentService(
            deps, engine, catalogue=CATALOGUE, surface=surface, channel="C0ALERTS"
        )
        alerts = AlertProcessor(deps, incidents)
        jobs = build_jobs(
            deps=deps, engine=engine, surface=surface, channel="C0ALERTS", alerts=alerts
        )
        scheduler = Scheduler(deps, jobs, grace=timedelta(hours=1), runner="test")
        yield Setup(deps, engine, scheduler, alerts, worker, clock)


def _backup(deps: Deps, name: str, *, age_h: float, size: int = 2048) -> None:
    path = Path(deps.settings.sms_backup_dir) / name
    path.write_bytes(b"-- PostgreSQL database dump\n" + b"x" * size)
    ts = (MORNING - timedelta(hours=age_h)).timestamp()
    os.utime(path, (ts, ts))


def _roots(fake: FakeSlack) -> list[str]:
    return [m.text for m in fake.messages("C0ALERTS") if not m.is_reply]


async def test_morning_summary_all_passed(setup: Setup, fake_slack: FakeSlack) -> None:
    _backup(setup.deps, "backup_20261126_020000.sql", age_h=5.5)
    assert await setup.scheduler.fire_due("morning-summary")
    await setup.deliver()
    [summary] = _roots(fake_slack)
    assert summary.startswith("OK: Morning summary — All 5 checks passed")
    # Posted once finished: the notification shows the verdict, never "running".
    [post, *_replies] = fake_slack.calls_to("chat.postMessage")
    assert post.args["text"].startswith("OK: Morning summary — All 5 checks passed")
    assert not await setup.scheduler.fire_due("morning-summary")  # the slot ran already


async def test_morning_summary_with_failures(setup: Setup, fake_slack: FakeSlack) -> None:
    _backup(setup.deps, "backup_20261120_020000.sql", age_h=150)
    setup.deps.health.report = healthy_report(database="down")  # type: ignore[attr-defined]
    assert await setup.scheduler.fire_due("morning-summary")
    await setup.deliver()
    [summary] = [m for m in fake_slack.messages("C0ALERTS") if not m.is_reply]
    assert "2 of 5 checks need attention" in summary.text
    text = json.dumps(summary.blocks)
    assert "Trigger a manual backup" in text


async def test_a_stale_backup_opens_an_incident_with_a_manual_backup_proposal(
    setup: Setup, fake_slack: FakeSlack
) -> None:
    setup.clock["now"] = datetime(2026, 11, 26, 2, 30, 5, tzinfo=UTC)
    _backup(setup.deps, "backup_20261124_020000.sql", age_h=53)
    assert await setup.scheduler.fire_due("backup-freshness")
    await setup.deliver()
    [root] = [m for m in fake_slack.messages("C0ALERTS") if not m.is_reply]
    assert "FIRING [P1] BackupStale" in root.text
    thread = json.dumps([m.blocks for m in fake_slack.replies(root.ts)])
    assert "Run manual backup" in thread

    # The next night a fresh backup is there: the incident resolves.
    setup.clock["now"] = datetime(2026, 11, 27, 2, 30, 5, tzinfo=UTC)
    fresh = Path(setup.deps.settings.sms_backup_dir) / "backup_20261127_020000.sql"
    fresh.write_bytes(b"-- PostgreSQL database dump\nok")
    os.utime(fresh, (setup.clock["now"].timestamp() - 1800,) * 2)
    assert await setup.scheduler.fire_due("backup-freshness")
    await setup.deliver()
    assert "RESOLVED [P1] BackupStale" in fake_slack.message(root.ts).text


async def test_fresh_backups_post_nothing(setup: Setup, fake_slack: FakeSlack) -> None:
    setup.clock["now"] = datetime(2026, 11, 26, 2, 30, 5, tzinfo=UTC)
    _backup(setup.deps, "backup_20261126_020000.sql", age_h=5.5)  # 02:00 today
    assert await setup.scheduler.fire_due("backup-freshness")
    await setup.deliver()
    assert _roots(fake_slack) == []
