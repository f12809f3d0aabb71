"""Teams at the edge: activities normalised, and the delivery against the fake connector."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from microsoft_agents.activity import Activity

from bot.alerts import Alert
from bot.app import build_app
from bot.chat.fanout import FanOut
from bot.chat.teams import Pacer, TeamsDelivery, TeamsSurface, event_from, strip_mentions
from bot.chat.teams_token import TeamsTokenProvider
from bot.cli import main
from bot.events import Click, Command
from bot.messages import Button, Conversation, Message, MessageRef, Status
from bot.outbox import OutboxWorker, RetryLater, Undeliverable, outgoing
from bot.store import Store, open_store
from bot.telemetry import BotMetrics
from handlers.auth import roles_of
from handlers.jobs import job_procedure
from tests.harness.fake_teams import APP_ID, CHANNEL, TENANT_ID, FakeTeams
from tests.unit.conftest import make_settings

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
AAD = "00000000-0000-0000-0000-0000000000aa"


def parse(body: dict[str, Any]) -> Command | Click | None:
    return event_from(Activity.model_validate(body))


# -- normalisation -----------------------------------------------------------------


def test_channel_mention_is_stripped(fake_teams: FakeTeams) -> None:
    body = fake_teams.channel_message("health")
    command = parse(body)
    assert isinstance(command, Command)
    assert command.text == "health"
    assert command.user == f"teams:{AAD}"
    assert command.source == "teams"
    assert command.conversation == Conversation("teams", body["conversation"]["id"])


def test_mentions_tags_and_entities_go() -> None:
    assert strip_mentions("<at>sms-bot</at>&nbsp;logs backend <b>50</b>") == "logs backend 50"
    assert strip_mentions("<at>sms-bot</at>") == ""


@pytest.mark.parametrize("text", ["/sms health", "health", "sms health"])
def test_personal_chat_takes_bare_and_slash_commands(fake_teams: FakeTeams, text: str) -> None:
    command = parse(fake_teams.personal_message(text))
    assert isinstance(command, Command)
    assert command.words == ["health"]


def test_invoke_is_a_click_by_aad_object_id(fake_teams: FakeTeams) -> None:
    body = fake_teams.card_action(
        "approve", {"action": "approve", "value": "p1"}, reply_to_id="1234"
    )
    click = parse(body)
    assert click == Click(
        action="approve",
        value="p1",
        user="teams:00000000-0000-0000-0000-0000000000ab",
        source="teams",
        conversation=Conversation("teams", body["conversation"]["id"], thread="1234"),
    )


def test_action_submit_fallback_is_the_same_click(fake_teams: FakeTeams) -> None:
    body = fake_teams.personal_message("")
    body["value"] = {"action": "approve", "value": "p1"}
    click = parse(body)
    assert isinstance(click, Click)
    assert (click.action, click.value, click.user) == ("approve", "p1", f"teams:{AAD}")


def test_no_aad_object_id_is_refused(fake_teams: FakeTeams) -> None:
    body = fake_teams.personal_message("health")
    del body["from"]["aadObjectId"]
    with pytest.raises(ValueError, match="aadObjectId"):
        parse(body)


def test_other_activities_are_ignored(fake_teams: FakeTeams) -> None:
    body = fake_teams.personal_message("health")
    body["type"] = "conversationUpdate"
    assert parse(body) is None


def test_teams_users_in_role_lists_ignore_case(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sms_approvers=f"U0APPR,teams:{AAD.upper()}")
    assert "approver" in {r.value for r in roles_of(f"teams:{AAD}", "teams", settings)}
    assert "approver" not in {r.value for r in roles_of(AAD, "teams", settings)}


def test_pacer_holds_the_eighth_send_in_a_second() -> None:
    now = [100.0]
    pacer = Pacer(clock=lambda: now[0])
    assert [pacer.wait("c") for _ in range(7)] == [0.0] * 7
    assert pacer.wait("c") == pytest.approx(1.0)
    assert pacer.wait("other") == 0.0
    now[0] += 1.0
    assert pacer.wait("c") == 0.0


def test_pacer_holds_the_sixty_first_send_in_thirty_seconds() -> None:
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0])
    for _ in range(60):
        while pacer.wait("c") > 0:
            now[0] += 0.2
    assert 0 < pacer.wait("c") <= 30.0


# -- delivery against the fake connector ----------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def delivery(fake_teams: FakeTeams, store: Store) -> AsyncIterator[TeamsDelivery]:
    tokens = TeamsTokenProvider(
        app_id=APP_ID,
        password=fake_teams.password,
        tenant_id=TENANT_ID,
        login_url=fake_teams.login_url,
        http_client=fake_teams.requests_session(),
    )
    connector = aiohttp.TCPConnector(ssl=fake_teams.ssl_context())
    d = TeamsDelivery(
        store=store,
        tokens=tokens,
        app_id=APP_ID,
        tenant_id=TENANT_ID,
        service_url=fake_teams.service_url,
        connector=connector,
    )
    yield d
    await d.close()
    await connector.close()


async def _deliver_all(store: Store, delivery: TeamsDelivery) -> None:
    for item in await store.outbox_claim(now=NOW, lease_s=30):
        await delivery.deliver(outgoing(item))
        await store.outbox_done(item.id)


def _card_text(card: dict[str, Any] | None) -> str:
    return str(card)


async def test_channel_post_opens_a_thread_replies_and_updates_in_it(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    root = await surface.post(
        Conversation("teams", CHANNEL), Message(title="BackendDown", status=Status.CRIT)
    )
    await _deliver_all(store, delivery)
    await surface.reply(root, Message(title="Tail backend logs"))
    await surface.update(root, Message(title="BackendDown resolved", status=Status.OK))
    await _deliver_all(store, delivery)
    (thread,) = fake_teams.threads()
    assert "BackendDown resolved" in _card_text(thread.card)
    replies = [a for a in fake_teams.activities(thread.conversation_id) if a.reply_to_id]
    assert len(replies) == 1 and replies[0].reply_to_id == thread.id
    stored = await store.chat_message_get(root.id)
    assert stored is not None and stored.channel == thread.conversation_id


async def test_buttons_arrive_as_action_execute(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    msg = Message(title="Restart?", buttons=(Button("Approve", "approve", "p1"),))
    await surface.post(Conversation("teams", CHANNEL), msg)
    await _deliver_all(store, delivery)
    (thread,) = fake_teams.threads()
    assert "Action.Execute" in _card_text(thread.card)


@pytest.mark.parametrize(
    ("status", "retry_after", "kind", "after"),
    [
        (429, 7.0, RetryLater, 7.0),
        (412, None, RetryLater, None),
        (502, None, RetryLater, None),
        (503, None, RetryLater, None),
        (504, None, RetryLater, None),
        (400, None, Undeliverable, None),
        (403, None, Undeliverable, None),
        (404, None, Undeliverable, None),
        (413, None, Undeliverable, None),
    ],
)
async def test_connector_errors_are_sorted(
    fake_teams: FakeTeams,
    store: Store,
    delivery: TeamsDelivery,
    status: int,
    retry_after: float | None,
    kind: type[Exception],
    after: float | None,
) -> None:
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    await surface.post(Conversation("teams", CHANNEL), Message(title="x"))
    (item,) = await store.outbox_claim(now=NOW, lease_s=30)
    fake_teams.fail_next(status=status, retry_after=retry_after)
    with pytest.raises(kind) as caught:
        await delivery.deliver(outgoing(item))
    if isinstance(caught.value, RetryLater):
        assert caught.value.after == after
        if status == 429:
            assert caught.value.pause == f"teams {CHANNEL}"


async def test_connector_down_is_retry_later(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    await surface.post(Conversation("teams", CHANNEL), Message(title="x"))
    (item,) = await store.outbox_claim(now=NOW, lease_s=30)
    fake_teams.down()
    with pytest.raises(RetryLater):
        await delivery.deliver(outgoing(item))


async def test_stored_service_url_is_used_else_the_setting(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    # A reference stored from a validated activity names where its conversation is served.
    await store.teams_reference_put("a:personal", {"serviceUrl": "https://127.0.0.1:9/"}, now=NOW)
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    await surface.post(Conversation("teams", "a:personal"), Message(title="x"))
    (item,) = await store.outbox_claim(now=NOW, lease_s=30)
    with pytest.raises(RetryLater):  # nothing listens there: refused, not sent to the fake
        await delivery.deliver(outgoing(item))
    assert not fake_teams.calls


async def test_fanout_posts_each_copy_and_updates_them_all(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    teams = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    fanout = FanOut({"teams": teams})
    where = fanout.where([("teams", CHANNEL), ("slack", "C1")])  # no Slack here: left out
    ref = await fanout.post(where, Message(title="BackendDown", status=Status.CRIT))
    await fanout.reply(ref, Message(title="note"))
    await _deliver_all(store, delivery)
    await fanout.update(MessageRef(where, ref.id), Message(title="Acked", status=Status.OK))
    await _deliver_all(store, delivery)
    (thread,) = fake_teams.threads()
    assert "Acked" in _card_text(thread.card)
    assert await store.chat_message_get(f"{ref.id}.teams") is not None


async def test_worker_pauses_the_conversation_on_429(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    worker = OutboxWorker(store, {"teams": delivery}, clock=lambda: NOW)
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    await surface.post(Conversation("teams", CHANNEL), Message(title="x"))
    fake_teams.fail_next(status=429, retry_after=5)
    await worker.drain_once()
    (item,) = await store.outbox_items()
    assert item.next_attempt_at is not None and item.next_attempt_at >= NOW


# -- set-up commands -----------------------------------------------------------------


def _teams_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", f"sqlite:///{tmp_path}/state.db")
    monkeypatch.setenv("TEAMS_APP_ID", APP_ID)
    monkeypatch.setenv("TEAMS_APP_PASSWORD", "secret")
    monkeypatch.setenv("TEAMS_TENANT_ID", TENANT_ID)


def test_teams_package_command_writes_the_zip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _teams_env(monkeypatch, tmp_path)
    out = tmp_path / "out" / "app.zip"
    assert main(["teams-package", "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["id"] == APP_ID


def test_teams_package_needs_the_app_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEAMS_APP_ID", raising=False)
    assert main(["teams-package", "--out", str(tmp_path / "app.zip")]) == 2
    assert "TEAMS_APP_ID" in capsys.readouterr().err


def test_check_config_says_which_teams_settings_are_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _teams_env(monkeypatch, tmp_path)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "missing TEAMS_ALERT_CHANNEL" in out
    assert "TEAMS_REPORTS_CHANNEL not set" in out


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"TEAMS_APP_ID": APP_ID}, "TEAMS_APP_PASSWORD, TEAMS_TENANT_ID needed with TEAMS_APP_ID"),
        ({"TEAMS_ALERT_CHANNEL": CHANNEL}, "TEAMS_APP_ID is needed with TEAMS_ALERT_CHANNEL"),
    ],
)
def test_check_config_names_the_teams_settings_a_partial_set_up_lacks(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    said: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", f"sqlite:///{tmp_path}/state.db")
    for name in ("TEAMS_APP_ID", "TEAMS_APP_PASSWORD", "TEAMS_TENANT_ID", "TEAMS_ALERT_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 2
    assert said in capsys.readouterr().err


async def test_app_fans_incidents_out_by_priority_and_reports_to_both(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        slack_bot_token="xoxb-test",
        slack_signing_secret="s",
        slack_alert_channel="C0ALERTS",
        teams_app_id=APP_ID,
        teams_app_password="secret",
        teams_tenant_id=TENANT_ID,
        teams_alert_channel=CHANNEL,
        teams_reports_channel="19:reports0123@thread.tacv2",
    )
    async with build_app(settings) as app:
        assert app.teams is not None and app.alert_surface.name == "fanout"
        assert app.incidents.places_for is not None
        p0 = json.loads(app.incidents.places_for("P0").channel)
        p2 = json.loads(app.incidents.places_for("P2").channel)
        assert p0 == [["slack", "C0ALERTS"], ["teams", CHANNEL]]
        assert p2 == [["slack", "C0ALERTS"]]
        assert set(app.surfaces) == {"slack", "teams", "fanout"}


async def test_app_without_teams_keeps_slack_alone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, slack_bot_token="xoxb-test", slack_signing_secret="s")
    async with build_app(settings) as app:
        assert app.teams is None and app.alert_surface.name == "slack"
        assert app.incidents.places_for is None


async def test_a_refused_token_is_renewed_once(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    await surface.post(Conversation("teams", CHANNEL), Message(title="first"))
    await _deliver_all(store, delivery)
    fake_teams.issued_tokens.clear()  # the connector no longer takes the cached token
    await surface.post(Conversation("teams", CHANNEL), Message(title="second"))
    await _deliver_all(store, delivery)
    assert len(fake_teams.threads()) == 2
    assert fake_teams.token_requests == 2


async def test_the_worker_sends_seven_a_second_into_a_conversation_edits_included(
    fake_teams: FakeTeams, store: Store
) -> None:
    """Held by the pacer, not by a 429: the eighth send waits for the next second."""
    mono = [100.0]
    wall = [NOW]
    tokens = TeamsTokenProvider(
        app_id=APP_ID,
        password=fake_teams.password,
        tenant_id=TENANT_ID,
        login_url=fake_teams.login_url,
        http_client=fake_teams.requests_session(),
    )
    connector = aiohttp.TCPConnector(ssl=fake_teams.ssl_context())
    delivery = TeamsDelivery(
        store=store,
        tokens=tokens,
        app_id=APP_ID,
        tenant_id=TENANT_ID,
        service_url=fake_teams.service_url,
        connector=connector,
        pacer=Pacer(clock=lambda: mono[0]),
    )
    worker = OutboxWorker(
        store, {"teams": delivery}, clock=lambda: wall[0], min_update_interval_s=0
    )
    surface = TeamsSurface(store=store, clock=lambda: wall[0], wake=lambda: None)
    try:
        root = await surface.post(Conversation("teams", CHANNEL), Message(title="root"))
        await worker.drain_once()
        for n in range(5):
            await surface.reply(root, Message(title=f"reply {n}"))
        await worker.drain_once()
        await surface.update(root, Message(title="root, edited"))  # the seventh send
        await surface.reply(root, Message(title="the eighth"))
        while await worker.drain_once():
            pass
        assert [c.method for c in fake_teams.calls] == ["POST"] * 6 + ["PUT"]
        (held,) = await store.outbox_items()
        assert held.next_attempt_at is not None and held.next_attempt_at > NOW

        mono[0] += 1.0
        wall[0] = NOW + timedelta(seconds=1)
        await worker.drain_once()
        assert len(fake_teams.calls) == 8
        assert await store.outbox_items() == []
    finally:
        await delivery.close()
        await connector.close()


async def test_run_job_post_goes_to_the_teams_reports_channel_without_slack(
    fake_teams: FakeTeams, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``sms-bot run JOB --post`` posts where the scheduler would: Teams alone is enough."""
    reports = "19:reports0123@thread.tacv2"
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SSL_CERT_FILE": str(fake_teams.ca_file),
        "REQUESTS_CA_BUNDLE": str(fake_teams.ca_file),
        "SMS_HEALTH_URL": "http://127.0.0.1:1/health",
        "SMS_PROMETHEUS_URL": "http://127.0.0.1:1",
        "SMS_DATABASE_URL": "postgresql://sms@127.0.0.1:1/sms",
        "SMS_BACKUP_DIR": str(tmp_path / "backups"),
        "SMS_CHECK_TIMEOUT_S": "2",
        "TEAMS_REPORTS_CHANNEL": reports,
        **{key.upper(): value for key, value in fake_teams.settings().items()},
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    # In a worker thread: main runs its own event loop while this one serves the fake.
    code = await asyncio.to_thread(main, ["run", "morning-summary", "--post"])
    assert code in (0, 1)  # posted; 1 as the checks fail here
    (report,) = fake_teams.threads(reports)
    assert job_procedure("morning-summary")[0].title in _card_text(report.card)


def _incident_alert(priority: str) -> Alert:
    return Alert(
        fingerprint=f"fp-{priority}",
        status="firing",
        labels={"alertname": f"Drill{priority}", "priority": priority},
        annotations={"summary": f"a {priority} drill"},
    )


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        # Slack alone, P0 and P1 only: a P2 incident is in the log, never in Slack.
        (
            {"slack_bot_token": "xoxb-test", "slack_signing_secret": "s"},
            {"P1": [["slack", "C0ALERTS"]], "P2": [["log", "C0ALERTS"]]},
        ),
        # Teams alone, P0 only: a P1 incident is in the log rather than nowhere.
        (
            {
                "teams_app_id": APP_ID,
                "teams_app_password": "secret",
                "teams_tenant_id": TENANT_ID,
                "teams_alert_channel": CHANNEL,
            },
            {"P0": [["teams", CHANNEL]], "P1": [["log", "C0ALERTS"]]},
        ),
    ],
)
async def test_an_incident_no_chat_takes_is_shown_in_the_log(
    tmp_path: Path, chat: dict[str, str], expected: dict[str, list[list[str]]]
) -> None:
    """SLACK_ALERT_PRIORITIES holds without Teams too, and no incident is shown nowhere."""
    settings = make_settings(
        tmp_path,
        slack_alert_channel="C0ALERTS",
        slack_alert_priorities="P0,P1",
        **chat,
    )
    async with build_app(settings) as app:
        assert app.incidents.places_for is not None
        for priority, places in expected.items():
            assert json.loads(app.incidents.places_for(priority).channel) == places
        before = await app.deps.store.outbox_pending()
        await app.incidents.handle(_incident_alert("P2" if "slack_bot_token" in chat else "P1"))
        assert await app.deps.store.outbox_pending() == before  # nothing queued for a chat
        [incident] = await app.deps.store.incidents_open()
        assert incident.root_key  # its thread is the log's


async def test_a_token_refused_after_renewal_is_undeliverable_and_counted(
    fake_teams: FakeTeams, store: Store, delivery: TeamsDelivery
) -> None:
    metrics = BotMetrics()
    worker = OutboxWorker(store, {"teams": delivery}, clock=lambda: NOW, metrics=metrics)
    surface = TeamsSurface(store=store, clock=lambda: NOW, wake=lambda: None)
    await surface.post(Conversation("teams", CHANNEL), Message(title="x"))
    fake_teams.fail_next(2, status=401)  # the cached token, then the renewed one
    assert await worker.drain_once() == 1
    [dead] = await store.outbox_items()
    assert "HTTP 401" in (dead.last_error or "")
    value = metrics.registry.get_sample_value
    failed = {"platform": "teams", "reason": "unauthorized"}
    assert value("smsbot_delivery_failures_total", failed) == 1
    assert value("smsbot_token_refused_total", {"platform": "teams"}) == 1
    assert value("smsbot_token_refused_total", {"platform": "slack"}) == 0
