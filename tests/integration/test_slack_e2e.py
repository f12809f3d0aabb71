"""Slack end to end: signed requests in, a fake Slack Web API out, the real Docker engine.

The bot runs in-process with its real HTTP app (``POST /slack/events``
through slack-bolt), its outbox worker and a SQLite store; Slack is the
local fake (``tests/harness/fake_slack.py``); the restarted container is a
real one. Clicks and commands are signed with the real scheme.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.store.base import AuditEvent
from tests.harness.botapp import CHANNEL, SECRET, Bot, Clock
from tests.harness.docker import wait_until
from tests.harness.fake_slack import FakeMessage, FakeSlack
from tests.harness.slack_signing import signed_headers, slash_command_body

pytestmark = pytest.mark.integration

OPERATOR = "UOPS"
APPROVER = "UAPPROVER"
APPROVER_2 = "UAPPROVER2"
VIEWER = "UVIEWER"


@pytest.fixture
async def bot(tmp_path: Path, sms_containers: Any, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    settings = load_settings(
        _env_file=None,
        bot_state_url=f"sqlite:///{tmp_path}/state.db",
        bot_audit_log=str(tmp_path / "audit.jsonl"),
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.api_url,
        sms_services=sms_containers.services,
        sms_health_url=sms_containers.health_url,
        sms_operators=(OPERATOR,),
        sms_approvers=(APPROVER, APPROVER_2),
        sms_recovery_timeout_s=30,
        sms_expected_containers=3,
        sms_backup_dir=str(tmp_path / "backups"),
    )
    b = Bot(settings, Clock())
    await b.start()
    yield b
    await b.stop()


def _buttons(message: FakeMessage) -> list[dict[str, Any]]:
    return [
        element
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def _text(message: FakeMessage) -> str:
    return json.dumps(message.blocks) + message.text


async def _proposal(fake: FakeSlack) -> FakeMessage:
    found: list[FakeMessage] = []

    async def has_buttons() -> bool:
        found[:] = [m for m in fake.messages(CHANNEL) if _buttons(m)]
        return bool(found)

    await wait_until(has_buttons, timeout=30, what="a proposal with buttons in Slack")
    return found[-1]


def _approve_id(message: FakeMessage) -> tuple[str, str]:
    [approve] = [b for b in _buttons(message) if b["action_id"].startswith("proposal.approve")]
    return approve["action_id"], approve["value"]


def _cancel_id(message: FakeMessage) -> tuple[str, str]:
    [cancel] = [b for b in _buttons(message) if b["action_id"].startswith("proposal.cancel")]
    return cancel["action_id"], cancel["value"]


async def _until(fake: FakeSlack, what: str, predicate: Any, timeout: float = 60) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await wait_until(probe, timeout=timeout, what=what)


def _restarts(events: list[AuditEvent]) -> list[AuditEvent]:
    return [e for e in events if e.action == "restart"]


async def test_restart_is_proposed_approved_and_verified(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any
) -> None:
    t0 = time.monotonic()
    assert await bot.command("restart backend", user=OPERATOR, fake=fake_slack) == 200
    ack_s = time.monotonic() - t0
    proposal = await _proposal(fake_slack)
    container = sms_containers.services["backend"]
    assert f"Restart {container}" in _text(proposal)
    assert f"docker restart {container}" in _text(proposal)
    # The status message is in the channel, the proposal in its thread.
    assert proposal.thread_ts is not None
    root = fake_slack.message(proposal.thread_ts)
    assert "Check container status" in _text(root)

    before = sms_containers.started_at("backend")
    action_id, value = _approve_id(proposal)
    assert (
        await bot.click(action_id, value, user=APPROVER, fake=fake_slack, message_ts=proposal.ts)
        == 200
    )

    await _until(
        fake_slack,
        "the proposal to show it was done",
        lambda: "Done" in _text(fake_slack.message(proposal.ts)),
        timeout=90,
    )
    assert _buttons(fake_slack.message(proposal.ts)) == []
    assert sms_containers.started_at("backend") > before

    def outcome() -> str:
        return "".join(
            _text(m) for m in fake_slack.replies(root.ts) if m.text.startswith("OK: Restarting")
        )

    await _until(fake_slack, "the restart's outcome in the thread", outcome)
    assert "Wait until /health is healthy" in outcome()
    assert "recovered: healthy" in outcome()
    events = await bot.audit()
    [restart] = _restarts(events)
    assert (restart.actor, restart.target, restart.outcome) == (APPROVER, container, "ok")
    clicks = [e for e in events if e.action == "click"]
    assert [(e.actor, e.outcome) for e in clicks] == [(APPROVER, "approved")]
    assert ack_s < 3, "the slash command must be acknowledged inside Slack's 3 seconds"


async def test_a_double_click_restarts_once(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any
) -> None:
    await bot.command("restart backend", user=OPERATOR, fake=fake_slack)
    proposal = await _proposal(fake_slack)
    action_id, value = _approve_id(proposal)
    statuses = await asyncio.gather(
        bot.click(action_id, value, user=APPROVER, fake=fake_slack, message_ts=proposal.ts),
        bot.click(action_id, value, user=APPROVER_2, fake=fake_slack, message_ts=proposal.ts),
        bot.click(action_id, value, user=APPROVER, fake=fake_slack, message_ts=proposal.ts),
    )
    assert statuses == [200, 200, 200]
    await _until(
        fake_slack,
        "the restart to finish",
        lambda: "Done" in _text(fake_slack.message(proposal.ts)),
        timeout=90,
    )
    events = await bot.audit()
    assert len(_restarts(events)) == 1
    outcomes = sorted(e.outcome for e in events if e.action == "click")
    assert outcomes == ["already_decided", "already_decided", "approved"]
    await _until(
        fake_slack,
        "answers to the late clicks",
        lambda: (
            sum("already approved" in json.dumps(e.blocks) + e.text for e in fake_slack.ephemerals)
            == 2
        ),
    )


async def test_an_unauthorized_click_changes_nothing(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any
) -> None:
    await bot.command("restart backend", user=OPERATOR, fake=fake_slack)
    proposal = await _proposal(fake_slack)
    before = sms_containers.started_at("backend")
    action_id, value = _approve_id(proposal)
    assert (
        await bot.click(action_id, value, user=OPERATOR, fake=fake_slack, message_ts=proposal.ts)
        == 200
    )
    await _until(
        fake_slack,
        "a refusal shown to the clicker only",
        lambda: any(
            "approver role" in json.dumps(e.blocks) + e.text
            for e in fake_slack.ephemerals
            if e.user == OPERATOR
        ),
    )
    assert bot.app is not None
    stored = await bot.app.deps.store.proposal_get(value)
    assert stored is not None and stored.status == "pending"
    assert _buttons(fake_slack.message(proposal.ts))  # still offered to approvers
    assert sms_containers.started_at("backend") == before
    events = await bot.audit()
    assert [(e.actor, e.outcome) for e in events if e.action == "click"] == [(OPERATOR, "refused")]
    assert _restarts(events) == []


async def test_an_expired_proposal_says_so(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any
) -> None:
    await bot.command("restart backend", user=OPERATOR, fake=fake_slack)
    proposal = await _proposal(fake_slack)
    before = sms_containers.started_at("backend")
    bot.clock.offset = timedelta(minutes=31)
    action_id, value = _approve_id(proposal)
    await bot.click(action_id, value, user=APPROVER, fake=fake_slack, message_ts=proposal.ts)
    await _until(
        fake_slack,
        "the proposal to show it expired",
        lambda: "Expired" in _text(fake_slack.message(proposal.ts)),
    )
    assert _buttons(fake_slack.message(proposal.ts)) == []
    await _until(
        fake_slack,
        "the clicker to be told",
        lambda: any("expired" in json.dumps(e.blocks) + e.text for e in fake_slack.ephemerals),
    )
    assert sms_containers.started_at("backend") == before
    assert _restarts(await bot.audit()) == []


async def test_cancel(bot: Bot, fake_slack: FakeSlack, sms_containers: Any) -> None:
    await bot.command("restart backend", user=OPERATOR, fake=fake_slack)
    proposal = await _proposal(fake_slack)
    before = sms_containers.started_at("backend")
    action_id, value = _cancel_id(proposal)
    await bot.click(action_id, value, user=OPERATOR, fake=fake_slack, message_ts=proposal.ts)
    await _until(
        fake_slack,
        "the proposal to show it was cancelled",
        lambda: "Cancelled by UOPS" in _text(fake_slack.message(proposal.ts)),
    )
    approve_id, _ = ("proposal.approve", value)
    await bot.click(approve_id, value, user=APPROVER, fake=fake_slack, message_ts=proposal.ts)
    await _until(
        fake_slack,
        "the late approval to be refused",
        lambda: any(
            "already cancelled" in json.dumps(e.blocks) + e.text for e in fake_slack.ephemerals
        ),
    )
    assert sms_containers.started_at("backend") == before


async def test_a_bot_restart_between_proposal_and_click(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any
) -> None:
    await bot.command("restart backend", user=OPERATOR, fake=fake_slack)
    proposal = await _proposal(fake_slack)
    await bot.stop()
    await bot.start()
    before = sms_containers.started_at("backend")
    action_id, value = _approve_id(proposal)
    await bot.click(action_id, value, user=APPROVER, fake=fake_slack, message_ts=proposal.ts)
    await _until(
        fake_slack,
        "the restart after the bot restart",
        lambda: "Done" in _text(fake_slack.message(proposal.ts)),
        timeout=90,
    )
    assert sms_containers.started_at("backend") > before


async def test_the_restart_limit_stops_a_fourth_restart(
    bot: Bot, fake_slack: FakeSlack, sms_containers: Any
) -> None:
    assert bot.app is not None
    container = sms_containers.services["backend"]
    for minutes in (50, 30, 10):
        await bot.app.deps.audit.record(
            at=bot.clock() - timedelta(minutes=minutes),
            actor=APPROVER,
            source="slack",
            action="restart",
            target=container,
            outcome="ok",
        )
    await bot.command("restart backend", user=OPERATOR, fake=fake_slack)

    def finished() -> bool:
        return any("Not proposing a restart" in _text(m) for m in fake_slack.messages(CHANNEL))

    await _until(fake_slack, "the refusal to propose", finished)
    assert not any(_buttons(m) for m in fake_slack.messages(CHANNEL))
    text = "".join(_text(m) for m in fake_slack.messages(CHANNEL))
    assert "3 of 3 restarts used in the last 60 minutes" in text
    assert "full system rollback" in text


async def test_only_operators_may_request_a_restart(bot: Bot, fake_slack: FakeSlack) -> None:
    assert await bot.command("restart backend", user=VIEWER, fake=fake_slack) == 200
    await _until(
        fake_slack,
        "a refusal",
        lambda: any(
            "operator role" in json.dumps(e.blocks) + e.text
            for e in fake_slack.ephemerals
            if e.user == VIEWER
        ),
    )
    assert [m for m in fake_slack.messages(CHANNEL) if not m.is_reply] == []


async def test_bad_requests_are_refused_and_run_nothing(bot: Bot, fake_slack: FakeSlack) -> None:
    body = slash_command_body(
        "restart backend",
        user_id=OPERATOR,
        channel_id=CHANNEL,
        response_url=fake_slack.response_url(CHANNEL),
    )
    good = signed_headers(body, secret=SECRET)
    # A wrong secret, a tampered body, no signature, a replayed (stale) request.
    assert (await bot.post(body, signed_headers(body, secret="wrong")))[0] == 401
    assert (await bot.post(body + b"&x=1", good))[0] == 401
    assert (await bot.post(body, {"Content-Type": good["Content-Type"]}))[0] == 401
    stale = signed_headers(body, secret=SECRET, timestamp=int(time.time()) - 6 * 60)
    assert (await bot.post(body, stale))[0] == 401
    # Signed but not something Slack sends.
    junk = b"payload=%7Bnot-json"
    status, _ = await bot.post(junk, signed_headers(junk, secret=SECRET))
    assert 400 <= status < 500
    huge = b"text=" + b"x" * 2_000_000
    assert (await bot.post(huge, signed_headers(huge, secret=SECRET)))[0] == 413
    await asyncio.sleep(0)
    assert bot.app is not None
    assert await bot.app.deps.store.recent_runs(10) == []
    assert [e for e in await bot.audit() if e.action == "command"] == []


async def test_an_unknown_button_gets_a_clear_answer(bot: Bot, fake_slack: FakeSlack) -> None:
    await bot.click(
        "self.destruct", "42", user=APPROVER, fake=fake_slack, message_ts="1764140000.000100"
    )
    await _until(
        fake_slack,
        "an answer to the unknown button",
        lambda: any("not known" in json.dumps(e.blocks) + e.text for e in fake_slack.ephemerals),
    )
    events = await bot.audit()
    assert [(e.action, e.outcome) for e in events] == [("click", "unknown_action")]


async def test_slack_down_during_a_procedure_loses_nothing(bot: Bot, fake_slack: FakeSlack) -> None:
    fake_slack.down()
    assert await bot.command("status", user=VIEWER, fake=fake_slack) == 200
    assert bot.app is not None
    store = bot.app.deps.store

    async def run_finished() -> bool:
        runs = await store.recent_runs(5)
        return bool(runs) and runs[0].status != "running"

    await wait_until(run_finished, timeout=30, what="the status run to finish")
    assert fake_slack.messages(CHANNEL) == []
    fake_slack.up()
    fake_slack.rate_limit_next(2, retry_after=1)
    await _until(
        fake_slack,
        "the final status message and its table",
        lambda: (
            any(
                "Container status" in _text(m) and "OK" in m.text.upper()
                for m in fake_slack.messages(CHANNEL)
                if not m.is_reply
            )
            and any(m.is_reply for m in fake_slack.messages(CHANNEL))
        ),
    )

    # The final message can show while a later reply of the run is still queued.
    async def drained() -> bool:
        return await store.outbox_pending() == 0

    await wait_until(drained, timeout=30, what="every queued message delivered")
    statuses = [c.status for c in fake_slack.calls]
    assert 503 in statuses and 429 in statuses


async def test_a_channel_without_the_bot_gets_answers_by_response_url(
    bot: Bot, fake_slack: FakeSlack
) -> None:
    fake_slack.add_channel("#private", "C0PRIV", member=False)
    body = slash_command_body(
        "backups",
        user_id=VIEWER,
        channel_id="C0PRIV",
        response_url=fake_slack.response_url("C0PRIV", user=VIEWER),
    )
    status, _ = await bot.post(body, signed_headers(body, secret=SECRET))
    assert status == 200
    await _until(
        fake_slack,
        "the answer through the response_url",
        lambda: any("Backups" in json.dumps(r.payload) for r in fake_slack.responses),
    )
