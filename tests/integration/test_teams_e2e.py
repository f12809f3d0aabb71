"""Teams end to end: signed activities in, the fake Bot Framework connector out, real services.

The bot runs in-process (``tests/harness/botapp.py``) with its real HTTP app
(``POST /api/messages``), outbox worker and alert processor, Slack and Teams
both on; Teams is the local fake (``tests/harness/fake_teams.py``), reached
only through the ``TEAMS_*`` settings and trusted through SSL_CERT_FILE and
REQUESTS_CA_BUNDLE as a bot process would be. The restarted container is a
real one, the alert comes from a real Alertmanager.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.adapters.alertmanager import AlertmanagerClient
from bot.config import load_settings
from bot.incidents import ACK
from bot.proposals import APPROVE
from procedures.health import CHECKS
from tests.harness.alertmanager import running_alertmanager
from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
from tests.harness.docker import wait_until
from tests.harness.fake_slack import FakeMessage, FakeSlack
from tests.harness.fake_teams import CARD_TYPE, FakeActivity, FakeTeams

pytestmark = pytest.mark.integration

OPERATOR = "00000000-0000-0000-0000-0000000000aa"  # fake_teams' default sender
APPROVER = "00000000-0000-0000-0000-0000000000ab"  # fake_teams' default clicker
APPROVER_2 = "00000000-0000-0000-0000-0000000000ac"
NOBODY = "00000000-0000-0000-0000-0000000000dd"
SLACK_OPERATOR = "U0OPS"


@pytest.fixture
async def bot(
    tmp_path: Path,
    sms_containers: Any,
    sms_dsn: str,
    fake_slack: FakeSlack,
    fake_teams: FakeTeams,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Bot]:
    monkeypatch.setenv("SSL_CERT_FILE", str(fake_teams.ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_teams.ca_file))
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
        sms_operators=(f"teams:{OPERATOR}", SLACK_OPERATOR),
        sms_approvers=(f"teams:{APPROVER}", f"teams:{APPROVER_2}"),
        sms_recovery_timeout_s=30,
        sms_expected_containers=3,
        sms_check_timeout_s=5,
        sms_backup_dir=str(tmp_path / "backups"),
        sms_incidents_dir=str(tmp_path / "incidents"),
        **fake_teams.settings(),
    )
    b = Bot(settings, Clock())
    await b.start()
    yield b
    await b.stop()


async def _until(what: str, predicate: Any, timeout: float = 60) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await wait_until(probe, timeout=timeout, what=what)


def _text(activity: FakeActivity) -> str:
    return json.dumps(activity.card)


def _actions(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "Action.Execute":
            yield node
        for value in node.values():
            yield from _actions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _actions(value)


def _button(activity: FakeActivity, verb: str) -> dict[str, Any] | None:
    for action in _actions(activity.card):
        if action.get("verb") == verb:
            data: dict[str, Any] = action["data"]
            return data
    return None


def _roots(fake: FakeTeams, conversation: str) -> list[FakeActivity]:
    return [a for a in fake.activities(conversation) if a.reply_to_id is None]


async def test_health_is_one_card_updated_in_place_with_the_five_checks(
    bot: Bot, fake_teams: FakeTeams
) -> None:
    activity = fake_teams.channel_message("health")
    status, _ = await bot.teams(activity, token=fake_teams.mint_token())
    assert status == 200
    conversation = activity["conversation"]["id"]
    names = [name for _, name in CHECKS]

    def done() -> bool:
        roots = _roots(fake_teams, conversation)
        return (
            len(roots) == 1 and bool(roots[0].updates) and all(n in _text(roots[0]) for n in names)
        )

    await _until("the status card with the five checks", done)
    assert bot.app is not None
    store = bot.app.deps.store

    async def drained() -> bool:
        return await store.outbox_pending() == 0

    await wait_until(drained, timeout=30, what="the outbox drained")
    [card] = _roots(fake_teams, conversation)
    assert card.updates, "the status card is updated in place, not posted again"
    assert all(n in _text(card) for n in names)
    assert card.current["attachments"][0]["contentType"] == CARD_TYPE


async def _proposal(fake: FakeTeams, conversation: str) -> FakeActivity:
    found: list[FakeActivity] = []

    def has_button() -> bool:
        found[:] = [a for a in fake.activities(conversation) if _button(a, APPROVE)]
        return bool(found)

    await _until("a proposal with buttons in Teams", has_button)
    return found[-1]


async def test_restart_refused_for_a_non_approver_and_run_once_for_two_approvers(
    bot: Bot, fake_teams: FakeTeams, sms_containers: Any
) -> None:
    activity = fake_teams.channel_message("restart backend", user_aad=OPERATOR)
    conversation = activity["conversation"]["id"]
    status, _ = await bot.teams(activity, token=fake_teams.mint_token())
    assert status == 200
    proposal = await _proposal(fake_teams, conversation)
    data = _button(proposal, APPROVE)
    assert data is not None and set(data) == {"action", "value"}
    assert bot.app is not None
    store = bot.app.deps.store
    before = sms_containers.started_at("backend")

    def click(user: str) -> dict[str, Any]:
        return fake_teams.card_action(
            APPROVE,
            data,
            user_aad=user,
            conversation_id=conversation,
            reply_to_id=proposal.id,
        )

    # A non-approver: an error card for them only; nothing changes.
    status, answer = await bot.teams(click(NOBODY), token=fake_teams.mint_token())
    assert status == 200 and answer is not None
    assert answer["type"] == CARD_TYPE
    assert "Nothing was changed" in json.dumps(answer["value"])
    stored = await store.proposal_get(data["value"])
    assert stored is not None and stored.status == "pending"

    # Two approvers at once: one claim, one restart; the other is told it was decided.
    answers = await asyncio.gather(
        bot.teams(click(APPROVER), token=fake_teams.mint_token()),
        bot.teams(click(APPROVER_2), token=fake_teams.mint_token()),
    )
    assert [s for s, _ in answers] == [200, 200]
    texts = [json.dumps(a) for _, a in answers]
    assert sum("already" in t for t in texts) == 1

    async def finished() -> bool:
        p = await store.proposal_get(data["value"])
        return p is not None and p.status in ("done", "failed")

    await wait_until(finished, timeout=90, what="the restart to finish")
    assert sms_containers.started_at("backend") > before
    restarts = [e for e in await bot.audit() if e.action == "restart"]
    assert len(restarts) == 1
    await _until(
        "the proposal card updated for everyone",
        lambda: _button(fake_teams.activity(proposal.id), APPROVE) is None,
    )


def _slack_roots(fake: FakeSlack, needle: str) -> list[FakeMessage]:
    return [
        m
        for m in fake.messages(CHANNEL)
        if not m.is_reply and needle in json.dumps(m.blocks) + m.text
    ]


async def test_a_p0_alert_opens_threads_in_teams_and_slack_acknowledged_in_teams(
    bot: Bot, fake_teams: FakeTeams, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    alert = {
        "labels": {"alertname": "BackendDown", "instance": "sms-1", "severity": "critical"},
        "annotations": {"summary": "Backend is down"},
    }
    async with (
        running_alertmanager(
            webhook_url=f"{bot.url}/alerts/alertmanager",
            token=WEBHOOK_TOKEN,
            workdir=tmp_path / "am",
        ) as am,
        aiohttp.ClientSession() as session,
    ):
        await AlertmanagerClient(am.url, session).post_alerts([alert])
        await _until(
            "the Teams channel thread",
            lambda: [t for t in fake_teams.threads() if "BackendDown" in _text(t)],
        )
        await _until("the Slack thread", lambda: _slack_roots(fake_slack, "[P0] BackendDown"))
        [thread] = [t for t in fake_teams.threads() if "BackendDown" in _text(t)]
        [slack_root] = _slack_roots(fake_slack, "[P0] BackendDown")
        ack = _button(thread, ACK)
        assert ack is not None
        click = fake_teams.card_action(
            ACK,
            ack,
            user_aad=OPERATOR,
            conversation_id=thread.conversation_id,
            reply_to_id=thread.id,
        )
        status, answer = await bot.teams(click, token=fake_teams.mint_token())
        assert status == 200 and answer is not None
        assert "Acknowledged" in json.dumps(answer)
        await _until(
            "acknowledged in Teams",
            lambda: "Acknowledged" in _text(fake_teams.activity(thread.id)),
        )
        await _until(
            "acknowledged in Slack",
            lambda: "Acknowledged" in json.dumps(fake_slack.message(slack_root.ts).blocks),
        )
    assert bot.app is not None
    [incident] = await bot.app.deps.store.incidents_open()
    assert incident.acknowledged_by == f"teams:{OPERATOR}"


async def test_connector_down_loses_nothing(bot: Bot, fake_teams: FakeTeams) -> None:
    assert bot.app is not None
    store = bot.app.deps.store
    fake_teams.down()
    activity = fake_teams.channel_message("health")
    status, _ = await bot.teams(activity, token=fake_teams.mint_token())
    assert status == 200

    async def failing_for_a_while() -> bool:
        # Backoff 1, 2, 4 s: three failed attempts are about ten seconds of outage.
        items = await store.outbox_items()
        return any(i.attempts >= 3 for i in items)

    await wait_until(failing_for_a_while, timeout=60, what="deliveries failing while down")
    fake_teams.up()
    conversation = activity["conversation"]["id"]
    names = [name for _, name in CHECKS]

    def delivered() -> bool:
        roots = _roots(fake_teams, conversation)
        return len(roots) == 1 and all(n in _text(roots[0]) for n in names)

    await _until("the status card after the outage", delivered, timeout=90)

    async def drained() -> bool:
        return await store.outbox_pending() == 0

    await wait_until(drained, timeout=60, what="everything delivered")
    assert await store.outbox_items() == []  # nothing dead: every item was delivered


@pytest.mark.parametrize("kind", ["unsigned", "expired", "wrong_audience", "wrong_key"])
async def test_bad_tokens_get_401_and_run_nothing(
    bot: Bot, fake_teams: FakeTeams, kind: str
) -> None:
    tokens = {
        "unsigned": None,
        "expired": fake_teams.mint_token(expired=True),
        "wrong_audience": fake_teams.mint_token(audience="99999999-9999-9999-9999-999999999999"),
        "wrong_key": fake_teams.mint_token(wrong_key=True),
    }
    status, _ = await bot.teams(fake_teams.channel_message("health"), token=tokens[kind])
    assert status == 401
    assert bot.app is not None
    assert await bot.app.deps.store.outbox_pending() == 0
    assert [e for e in await bot.audit() if e.source == "teams"] == []
    assert fake_teams.calls == []


async def test_an_expired_proposal_says_so_to_the_clicker(
    bot: Bot, fake_teams: FakeTeams, sms_containers: Any
) -> None:
    activity = fake_teams.channel_message("restart backend", user_aad=OPERATOR)
    conversation = activity["conversation"]["id"]
    assert (await bot.teams(activity, token=fake_teams.mint_token()))[0] == 200
    proposal = await _proposal(fake_teams, conversation)
    data = _button(proposal, APPROVE)
    assert data is not None
    before = sms_containers.started_at("backend")
    bot.clock.offset = timedelta(minutes=31)
    click = fake_teams.card_action(
        APPROVE, data, conversation_id=conversation, reply_to_id=proposal.id
    )
    status, answer = await bot.teams(click, token=fake_teams.mint_token())
    assert status == 200 and answer is not None
    assert "Expired" in json.dumps(answer["value"])
    await _until(
        "the card expired for everyone",
        lambda: _button(fake_teams.activity(proposal.id), APPROVE) is None,
    )
    assert sms_containers.started_at("backend") == before
    assert [e for e in await bot.audit() if e.action == "restart"] == []


async def test_a_change_started_in_slack_is_announced_in_teams_too_and_aborted_from_teams(
    bot: Bot, fake_teams: FakeTeams, fake_slack: FakeSlack
) -> None:
    what = "Upgrade the backend"
    status = await bot.command(f'change start "{what}"', user=SLACK_OPERATOR, fake=fake_slack)
    assert status == 200

    def teams_threads() -> list[FakeActivity]:
        return [t for t in fake_teams.threads() if what in _text(t)]

    await _until(
        "the change announced in Slack's alert channel", lambda: _slack_roots(fake_slack, what)
    )
    await _until("the change announced in Teams' alert channel", teams_threads)
    [slack_root] = _slack_roots(fake_slack, what)
    [thread] = teams_threads()

    # Ended from Teams: the change thread is the announcement's, on both surfaces.
    activity = fake_teams.channel_message("change abort", user_aad=OPERATOR)
    status, _ = await bot.teams(activity, token=fake_teams.mint_token())
    assert status == 200

    def teams_replies() -> list[FakeActivity]:
        return [
            a
            for a in fake_teams.activities(thread.conversation_id)
            if a.id != thread.id and "Change aborted" in _text(a)
        ]

    def slack_replies() -> list[FakeMessage]:
        return [
            m
            for m in fake_slack.replies(slack_root.ts)
            if m.is_reply and "Change aborted" in json.dumps(m.blocks) + m.text
        ]

    await _until("the abort in the Teams change thread", teams_replies)
    await _until("the abort in the Slack change thread", slack_replies)
    assert bot.app is not None
    assert await bot.app.deps.store.change_current() is None
