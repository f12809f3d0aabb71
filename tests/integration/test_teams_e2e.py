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
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.adapters.alertmanager import AlertmanagerClient
from bot.config import load_settings
from bot.incidents import ACK, RESOLVE, SILENCE
from bot.proposals import APPROVE
from procedures.health import CHECKS
from tests.harness.alertmanager import running_alertmanager
from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
from tests.harness.docker import free_port, wait_until
from tests.harness.fake_slack import FakeMessage, FakeSlack
from tests.harness.fake_teams import CARD_TYPE, FakeActivity, FakeTeams

pytestmark = pytest.mark.integration

OPERATOR = "00000000-0000-0000-0000-0000000000aa"  # fake_teams' default sender
APPROVER = "00000000-0000-0000-0000-0000000000ab"  # fake_teams' default clicker
APPROVER_2 = "00000000-0000-0000-0000-0000000000ac"
NOBODY = "00000000-0000-0000-0000-0000000000dd"
SLACK_OPERATOR = "U0OPERATOR"
SLACK_APPROVER = "U0APPROVER"
REPORTS = "19:fakeReports0456@thread.tacv2"


BotFactory = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def make_bot(
    tmp_path: Path,
    sms_containers: Any,
    sms_dsn: str,
    fake_slack: FakeSlack,
    fake_teams: FakeTeams,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[BotFactory]:
    """Starts the bot with Slack and Teams on; ``port`` and settings may be given."""
    monkeypatch.setenv("SSL_CERT_FILE", str(fake_teams.ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_teams.ca_file))
    started: list[Bot] = []

    async def make(*, port: int | None = None, **overrides: Any) -> Bot:
        values: dict[str, Any] = {
            "bot_state_url": f"sqlite:///{tmp_path}/state.db",
            "bot_audit_log": str(tmp_path / "audit.jsonl"),
            "slack_bot_token": "xoxb-test-token",
            "slack_signing_secret": SECRET,
            "slack_api_url": fake_slack.api_url,
            "slack_alert_channel": CHANNEL,
            "alert_webhook_token": WEBHOOK_TOKEN,
            "sms_services": sms_containers.services,
            "sms_health_url": sms_containers.health_url,
            "sms_database_url": sms_dsn,
            "sms_prometheus_url": "http://127.0.0.1:1",
            "sms_operators": (f"teams:{OPERATOR}", SLACK_OPERATOR),
            "sms_approvers": (f"teams:{APPROVER}", f"teams:{APPROVER_2}", SLACK_APPROVER),
            "sms_recovery_timeout_s": 30,
            "sms_expected_containers": 3,
            "sms_check_timeout_s": 5,
            "sms_backup_dir": str(tmp_path / "backups"),
            "sms_incidents_dir": str(tmp_path / "incidents"),
            **fake_teams.settings(),
            **overrides,
        }
        b = Bot(load_settings(_env_file=None, **values), Clock())
        b.port = port
        await b.start()
        started.append(b)
        return b

    yield make
    for b in reversed(started):
        await b.stop()


@pytest.fixture
async def bot(make_bot: BotFactory) -> Bot:
    return await make_bot()


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


# -- incidents from the real Alertmanager: repeat, acknowledge in Slack, resolved -------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _p0(name: str) -> dict[str, Any]:
    """A P0 alert no procedure answers: only the incident's own messages in its thread."""
    return {
        "labels": {
            "alertname": name,
            "instance": "sms-1",
            "severity": "critical",
            "priority": "P0",
        },
        "annotations": {"summary": f"{name} on sms-1"},
        "startsAt": _now(),
    }


def _last_put(fake: FakeTeams, activity_id: str) -> dict[str, Any]:
    """The body of the connector's last PUT of that activity (its current card); {} before."""
    puts = [
        c.body
        for c in fake.calls
        if c.method == "PUT" and c.path.endswith(f"/activities/{activity_id}")
    ]
    return puts[-1] if puts else {}


def _card_of(activity: dict[str, Any]) -> dict[str, Any]:
    [attachment] = activity["attachments"]
    assert attachment["contentType"] == CARD_TYPE
    card: dict[str, Any] = attachment["content"]
    return card


def _header(activity: dict[str, Any]) -> tuple[str, str, str]:
    """The card header's container style, title colour and title text ("" for no card)."""
    if not activity:
        return "", "", ""
    container = _card_of(activity)["body"][0]
    title = container["items"][0]
    return container["style"], title["color"], title["text"]


def _facts(activity: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "FactSet":
                found.update({f["title"]: f["value"] for f in node["facts"]})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_card_of(activity))
    return found


def _teams_replies(fake: FakeTeams, thread: FakeActivity) -> str:
    return "".join(
        _text(a) for a in fake.activities(thread.conversation_id) if a.reply_to_id == thread.id
    )


def _slack_replies(fake: FakeSlack, root: FakeMessage) -> str:
    return "".join(json.dumps(m.blocks) + m.text for m in fake.replies(root.ts))


async def _drained(bot: Bot) -> None:
    assert bot.app is not None
    store = bot.app.deps.store

    async def empty() -> bool:
        return await store.outbox_pending() == 0

    await wait_until(empty, timeout=60, what="the outbox drained")


async def test_a_p0_repeat_updates_both_cards_and_resolved_turns_the_teams_card_green(
    bot: Bot, fake_teams: FakeTeams, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    alert = _p0("TeamsDrillDown")
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
        await _until(
            "the Teams channel thread",
            lambda: [t for t in fake_teams.threads() if "TeamsDrillDown" in _text(t)],
        )
        await _until("the Slack thread", lambda: _slack_roots(fake_slack, "[P0] TeamsDrillDown"))
        [thread] = [t for t in fake_teams.threads() if "TeamsDrillDown" in _text(t)]
        [slack_root] = _slack_roots(fake_slack, "[P0] TeamsDrillDown")
        assert _header(thread.activity)[:2] == ("attention", "attention")
        assert bot.app is not None
        store = bot.app.deps.store

        async def repeated() -> bool:
            opened = await store.incidents_open()
            return bool(opened) and opened[0].repeats >= 1

        await wait_until(repeated, timeout=30, what="a repeat notification")
        await _until(
            "the repeat on the Teams card",
            lambda: "Repeats" in json.dumps(_last_put(fake_teams, thread.id)),
        )
        await _until(
            "the repeat on the Slack message",
            lambda: "Repeats" in json.dumps(fake_slack.message(slack_root.ts).blocks),
        )
        assert len([t for t in fake_teams.threads() if "TeamsDrillDown" in _text(t)]) == 1
        assert len(_slack_roots(fake_slack, "[P0] TeamsDrillDown")) == 1

        # Acknowledged in Slack: shown on the Teams card as well.
        [incident] = await store.incidents_open()
        assert (
            await bot.click(
                ACK,
                incident.id,
                user=SLACK_OPERATOR,
                fake=fake_slack,
                message_ts=slack_root.ts,
            )
            == 200
        )
        await _until(
            "the Slack acknowledgement on the Teams card",
            lambda: f"by {SLACK_OPERATOR}" in json.dumps(_last_put(fake_teams, thread.id)),
        )

        await client.post_alerts([{**alert, "endsAt": _now()}])
        await _until(
            "the Teams card resolved",
            lambda: "RESOLVED" in _header(_last_put(fake_teams, thread.id))[2],
        )
        await _until(
            "the Slack message resolved",
            lambda: (
                "RESOLVED [P0] TeamsDrillDown"
                in json.dumps(fake_slack.message(slack_root.ts).blocks)
            ),
        )
    resolved = _last_put(fake_teams, thread.id)
    style, colour, title = _header(resolved)
    assert (style, colour) == ("good", "good")
    assert "RESOLVED \\[P0\\] TeamsDrillDown" in title
    assert re.search(r" after (\d+m )?\d+s\b", _facts(resolved)["Resolved"])
    assert _button(fake_teams.activity(thread.id), ACK) is None  # no buttons once resolved
    await _until(
        "the resolution in both threads",
        lambda: (
            "Resolved after" in _teams_replies(fake_teams, thread)
            and "Resolved after" in _slack_replies(fake_slack, slack_root)
        ),
    )


# -- Silence and Resolve clicked in Teams ----------------------------------------------------


async def test_silence_from_teams_creates_it_in_alertmanager_and_shows_on_both(
    make_bot: BotFactory, fake_teams: FakeTeams, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    port = free_port()
    async with (
        running_alertmanager(
            webhook_url=f"http://127.0.0.1:{port}/alerts/alertmanager",
            token=WEBHOOK_TOKEN,
            workdir=tmp_path / "am",
            repeat_interval="1h",  # no repeat changes the thread while it is counted
        ) as am,
        aiohttp.ClientSession() as session,
    ):
        bot = await make_bot(port=port, sms_alertmanager_url=am.url)
        client = AlertmanagerClient(am.url, session)
        await client.post_alerts([_p0("TeamsSilenceDrill")])
        await _until(
            "the Teams channel thread",
            lambda: [t for t in fake_teams.threads() if "TeamsSilenceDrill" in _text(t)],
        )
        await _until("the Slack thread", lambda: _slack_roots(fake_slack, "[P0] TeamsSilenceDrill"))
        [thread] = [t for t in fake_teams.threads() if "TeamsSilenceDrill" in _text(t)]
        [slack_root] = _slack_roots(fake_slack, "[P0] TeamsSilenceDrill")
        data = _button(thread, SILENCE)
        assert data is not None and data["value"].endswith(":1")
        await _drained(bot)

        def click(user: str) -> dict[str, Any]:
            return fake_teams.card_action(
                SILENCE,
                data,
                user_aad=user,
                conversation_id=thread.conversation_id,
                reply_to_id=thread.id,
            )

        # Not an operator: an error card for them only, and nothing anywhere.
        calls, slack_calls = len(fake_teams.calls), len(fake_slack.messages(CHANNEL))
        status, answer = await bot.teams(click(NOBODY), token=fake_teams.mint_token())
        assert status == 200 and answer is not None and answer["type"] == CARD_TYPE
        assert "Nothing was changed" in json.dumps(answer["value"])
        assert "operator" in json.dumps(answer["value"])
        await _drained(bot)
        assert await client.silences() == []
        assert len(fake_teams.calls) == calls
        assert len(fake_slack.messages(CHANNEL)) == slack_calls
        assert not _slack_replies(fake_slack, slack_root)

        # An operator: the silence is made in Alertmanager and said in both threads.
        status, answer = await bot.teams(click(OPERATOR), token=fake_teams.mint_token())
        assert status == 200 and answer is not None and answer["type"] == CARD_TYPE
        assert "Nothing was changed" not in json.dumps(answer["value"])
        [silence] = await client.silences()
        assert dict(silence.matchers)["alertname"] == "TeamsSilenceDrill"
        assert OPERATOR in silence.created_by
        said = f"Silenced TeamsSilenceDrill for 1h by teams:{OPERATOR}: silence {silence.id}"
        await _until(
            "the silence in the Teams thread",
            lambda: said in _teams_replies(fake_teams, thread),
        )
        await _until(
            "the silence in the Slack thread",
            lambda: said in _slack_replies(fake_slack, slack_root),
        )
    silenced = [e for e in await bot.audit() if e.outcome == "silenced"]
    assert [(e.actor, e.source) for e in silenced] == [(f"teams:{OPERATOR}", "teams")]


async def test_resolve_from_teams_by_an_operator_only(bot: Bot, fake_teams: FakeTeams) -> None:
    activity = fake_teams.channel_message("incident Disk full on sms-1", user_aad=OPERATOR)
    conversation = activity["conversation"]["id"]
    assert (await bot.teams(activity, token=fake_teams.mint_token()))[0] == 200
    found: list[FakeActivity] = []

    def has_resolve() -> bool:
        found[:] = [a for a in fake_teams.activities(conversation) if _button(a, RESOLVE)]
        return bool(found)

    await _until("the manual incident with its Resolve button", has_resolve)
    [card] = found
    data = _button(card, RESOLVE)
    assert data is not None
    assert bot.app is not None
    store = bot.app.deps.store

    def click(user: str) -> dict[str, Any]:
        return fake_teams.card_action(
            RESOLVE, data, user_aad=user, conversation_id=conversation, reply_to_id=card.id
        )

    status, answer = await bot.teams(click(NOBODY), token=fake_teams.mint_token())
    assert status == 200 and answer is not None
    assert "Nothing was changed" in json.dumps(answer["value"])
    [incident] = await store.incidents_open()
    assert incident.status == "open"

    status, answer = await bot.teams(click(OPERATOR), token=fake_teams.mint_token())
    assert status == 200 and answer is not None and answer["type"] == CARD_TYPE
    assert answer["value"]["body"][0]["style"] == "good"
    assert await store.incidents_open() == []
    await _until(
        "the incident card green for everyone",
        lambda: _header(_last_put(fake_teams, card.id))[:2] == ("good", "good"),
    )
    assert _button(fake_teams.activity(card.id), RESOLVE) is None
    await _until(
        "the resolution in the reply chain",
        lambda: any(
            "Resolved after" in _text(a) and f"teams:{OPERATOR}" in _text(a)
            for a in fake_teams.activities(conversation)
        ),
    )


# -- scheduled reports -------------------------------------------------------------------------


async def test_a_scheduled_report_goes_to_the_teams_reports_channel_and_slack(
    make_bot: BotFactory, fake_teams: FakeTeams, fake_slack: FakeSlack
) -> None:
    bot = await make_bot(teams_reports_channel=REPORTS)
    assert bot.app is not None
    job = bot.app.scheduler.jobs["morning-summary"]
    await job.action()
    await _drained(bot)
    [report] = fake_teams.threads(REPORTS)
    assert report.conversation_id.startswith(f"{REPORTS};messageid=")
    assert fake_teams.threads() == []  # not the alert channel
    style, _, title = _header(report.current)
    assert job.title.split()[0] in title
    assert style not in ("accent", "emphasis")  # finished: neither running nor pending
    assert report.updates == []  # posted once, finished
    [slack_report] = [
        m
        for m in fake_slack.messages(CHANNEL)
        if not m.is_reply and job.title.split()[0] in json.dumps(m.blocks) + m.text
    ]
    assert slack_report.updates == 0


# -- the connector's passing failures ------------------------------------------------------------


@pytest.mark.parametrize("status", [412, 502, 503, 504])
async def test_connector_failures_are_retried_until_delivered(
    bot: Bot, fake_teams: FakeTeams, status: int
) -> None:
    fake_teams.fail_next(2, status=status)
    activity = fake_teams.channel_message("health")
    assert (await bot.teams(activity, token=fake_teams.mint_token()))[0] == 200
    conversation = activity["conversation"]["id"]
    names = [name for _, name in CHECKS]

    def delivered() -> bool:
        roots = _roots(fake_teams, conversation)
        return len(roots) == 1 and all(n in _text(roots[0]) for n in names)

    await _until("the status card after the refusals", delivered)
    await _drained(bot)
    assert bot.app is not None
    assert await bot.app.deps.store.outbox_items() == []  # nothing dead
    assert [c.method for c in fake_teams.calls[:2]] == ["POST", "POST"]  # the two refused
    assert len(_roots(fake_teams, conversation)) == 1  # and posted once


# -- a proposal shown in Slack and Teams, clicked in both at once ------------------------------


def _slack_approve(fake: FakeSlack, root: FakeMessage) -> tuple[FakeMessage, dict[str, Any]] | None:
    for m in fake.replies(root.ts):
        for block in m.blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if str(element.get("action_id", "")).startswith(APPROVE):
                    return m, element
    return None


async def test_a_p0_restart_approved_in_slack_and_teams_at_once_runs_once(
    bot: Bot,
    fake_teams: FakeTeams,
    fake_slack: FakeSlack,
    sms_containers: Any,
    tmp_path: Path,
) -> None:
    async with (
        running_alertmanager(
            webhook_url=f"{bot.url}/alerts/alertmanager",
            token=WEBHOOK_TOKEN,
            workdir=tmp_path / "am",
            repeat_interval="1h",
        ) as am,
        aiohttp.ClientSession() as session,
    ):
        alert = {
            "labels": {"alertname": "BackendDown", "instance": "sms-1", "severity": "critical"},
            "annotations": {"summary": "Backend is down"},
        }
        await AlertmanagerClient(am.url, session).post_alerts([alert])
        await _until(
            "the Teams channel thread",
            lambda: [t for t in fake_teams.threads() if "BackendDown" in _text(t)],
        )
        await _until("the Slack thread", lambda: _slack_roots(fake_slack, "[P0] BackendDown"))
        [thread] = [t for t in fake_teams.threads() if "BackendDown" in _text(t)]
        [slack_root] = _slack_roots(fake_slack, "[P0] BackendDown")
        proposal = await _proposal(fake_teams, thread.conversation_id)
        await _until("the proposal in Slack", lambda: _slack_approve(fake_slack, slack_root))
        found = _slack_approve(fake_slack, slack_root)
        assert found is not None
        slack_proposal, element = found
        data = _button(proposal, APPROVE)
        assert data is not None and data["value"] == element["value"]  # one stored proposal
        before = sms_containers.started_at("backend")
        teams_click = fake_teams.card_action(
            APPROVE,
            data,
            user_aad=APPROVER,
            conversation_id=thread.conversation_id,
            reply_to_id=proposal.id,
        )
        slack_status, (teams_status, _) = await asyncio.gather(
            bot.click(
                element["action_id"],
                element["value"],
                user=SLACK_APPROVER,
                fake=fake_slack,
                message_ts=slack_proposal.ts,
            ),
            bot.teams(teams_click, token=fake_teams.mint_token()),
        )
        assert (slack_status, teams_status) == (200, 200)
        assert bot.app is not None
        store = bot.app.deps.store

        async def finished() -> bool:
            p = await store.proposal_get(data["value"])
            return p is not None and p.status in ("done", "failed")

        await wait_until(finished, timeout=90, what="the restart to finish")
    assert sms_containers.started_at("backend") > before
    assert len([e for e in await bot.audit() if e.action == "restart"]) == 1
    claims = [e for e in await bot.audit() if e.action == "click" and e.outcome == "approved"]
    assert len(claims) == 1
    await _until(
        "the proposal without buttons in Teams",
        lambda: _button(fake_teams.activity(proposal.id), APPROVE) is None,
    )
    await _until(
        "the proposal without buttons in Slack",
        lambda: _slack_approve(fake_slack, slack_root) is None,
    )


# -- a personal chat ---------------------------------------------------------------------------


async def test_a_personal_chat_takes_slash_sms_and_is_answered_there(
    bot: Bot, fake_teams: FakeTeams
) -> None:
    activity = fake_teams.personal_message("/sms health", user_aad=OPERATOR)
    conversation = activity["conversation"]["id"]
    assert (await bot.teams(activity, token=fake_teams.mint_token()))[0] == 200
    names = [name for _, name in CHECKS]
    await _until(
        "the status card in the personal chat",
        lambda: any(all(n in _text(a) for n in names) for a in _roots(fake_teams, conversation)),
    )
    await _drained(bot)
    [card] = _roots(fake_teams, conversation)
    assert card.updates, "one status card, updated in place"
    assert fake_teams.threads() == []  # nothing in the channel


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
