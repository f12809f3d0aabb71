"""``GET /metrics`` says what an operator alerts on, read from the store at scrape time.

Outbox backlog and its oldest item's age, the alert inbox backlog, delivery
failures by platform and reason, and each scheduled job's latest due slot
against its latest finished one (``deploy/prometheus/sms-bot.rules.yml``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.alerts import Alert
from bot.app import Background, build_app
from bot.http import build_http_app
from bot.store import Store, open_store
from bot.telemetry import BotMetrics
from tests.harness.fake_slack import FakeSlack
from tests.unit.conftest import make_settings

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return _samples(await resp.text())


async def test_metrics_read_backlogs_and_job_runs_from_the_store_at_scrape_time(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    settings = make_settings(
        tmp_path,
        slack_bot_token="xoxb-test-token",
        slack_signing_secret="secret",
        slack_api_url=fake_slack.api_url,
        slack_alert_channel="C0ALERTS",
        sms_schedule_grace_min=0,
        sms_timezone="UTC",
    )
    fake_slack.down()  # every delivery fails: the item stays, its failure is counted
    quick = Background(alert_idle_s=0.1, proposal_sweep_s=0.1, drain_s=0.1)
    async with build_app(settings, clock=lambda: NOW, serve=True, background=quick) as app:
        assert app.http is not None
        store = app.deps.store
        await store.outbox_add(
            message_key="m1",
            op="post",
            surface="slack",
            channel="C0ALERTS",
            parent_key=None,
            payload={"text": "queued five minutes ago"},
            now=NOW - timedelta(minutes=5),
        )
        app.outbox.wake()
        slot = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)  # yesterday's ran; today's did not
        await store.job_claim("morning-summary", slot=slot, runner="a:1", now=slot)
        await store.job_finish(
            "morning-summary", slot=slot, status="ok", now=slot + timedelta(seconds=4)
        )
        async with TestClient(TestServer(app.http)) as client:
            failures = (
                "smsbot_delivery_failures_total",
                (("platform", "slack"), ("reason", "http_503")),
            )
            deadline = time.monotonic() + 10
            samples = await _scrape(client)
            while failures not in samples:
                assert time.monotonic() < deadline, sorted(k for k in samples if "fail" in k[0])
                await asyncio.sleep(0.05)
                samples = await _scrape(client)

    assert samples[failures] == 1  # retried at NOW + backoff, which this clock never reaches
    assert samples[("smsbot_outbox_backlog", ())] == 1
    assert samples[("smsbot_outbox_oldest_pending_age_seconds", ())] == 300
    assert samples[("smsbot_alert_inbox_backlog", ())] == 0
    assert samples[("smsbot_store_scrape_success", ())] == 1
    job = (("job_name", "morning-summary"),)
    today = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)
    assert (
        samples[("smsbot_scheduled_job_last_due_slot_timestamp_seconds", job)] == today.timestamp()
    )
    assert (
        samples[("smsbot_scheduled_job_last_success_slot_timestamp_seconds", job)]
        == slot.timestamp()
    )
    assert (
        samples[("smsbot_scheduled_job_last_success_timestamp_seconds", job)]
        == (slot + timedelta(seconds=4)).timestamp()
    )
    assert samples[("smsbot_token_refused_total", (("platform", "slack"),))] == 0


class _SlowStore:
    """A store whose reads never answer: the scrape must still answer."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_alert_inbox_backlog_and_a_store_that_does_not_answer(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        alert = Alert(
            fingerprint="fp1",
            status="firing",
            labels={"alertname": "BackendDown"},
            annotations={},
            starts_at=NOW,
            ends_at=None,
            generator_url="",
        )
        await store.alert_events_add([alert, alert], received_at=NOW)
        metrics = BotMetrics()
        target: dict[str, Any] = {"store": store}

        async def refresh() -> None:
            await metrics.refresh(target["store"], now=NOW, due={}, timeout_s=0.2)

        app = build_http_app(
            ready_check=store.ping, registry=metrics.registry, metrics_refresh=refresh
        )
        async with TestClient(TestServer(app)) as client:
            samples = await _scrape(client)
            assert samples[("smsbot_alert_inbox_backlog", ())] == 2
            assert samples[("smsbot_store_scrape_success", ())] == 1
            target["store"] = _SlowStore(store)
            samples = await _scrape(client)
            assert samples[("smsbot_store_scrape_success", ())] == 0
            assert samples[("smsbot_alert_inbox_backlog", ())] == 2  # kept, not made up
    finally:
        await store.close()


def test_each_count_lands_in_its_served_series() -> None:
    """What the engine, dispatcher, scheduler and outbox record, by the names alerts read."""
    metrics = BotMetrics()
    metrics.command_done("status", "ok")
    metrics.run_finished("health", "crit")
    metrics.step_finished("health", "ok", 0.2)
    metrics.job_lost("morning-summary")
    metrics.delivery_failed("slack", "invalid_auth")
    value = metrics.registry.get_sample_value
    assert value("smsbot_commands_total", {"command": "status", "outcome": "ok"}) == 1
    assert value("smsbot_runs_total", {"procedure": "health", "status": "crit"}) == 1
    step = {"procedure": "health", "status": "ok"}
    assert value("smsbot_step_duration_seconds_count", step) == 1
    assert value("smsbot_step_duration_seconds_bucket", {**step, "le": "0.25"}) == 1
    assert value("smsbot_scheduled_jobs_lost_total", {"job_name": "morning-summary"}) == 1
    failure = {"platform": "slack", "reason": "invalid_auth"}
    assert value("smsbot_delivery_failures_total", failure) == 1
    assert value("smsbot_token_refused_total", {"platform": "slack"}) == 1
