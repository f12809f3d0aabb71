"""The fake Bot Framework services themselves: ids as Teams gives them, token checks, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.chat.adaptive_card import to_adaptive_card
from bot.chat.teams_token import TeamsTokenProvider
from bot.messages import Message
from tests.harness.fake_teams import APP_ID, CARD_TYPE, CHANNEL, PASSWORD, TENANT_ID, FakeTeams


@pytest.fixture
async def http(fake_teams: FakeTeams) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=fake_teams.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
async def headers(fake_teams: FakeTeams) -> dict[str, str]:
    tokens = TeamsTokenProvider(
        app_id=APP_ID,
        password=PASSWORD,
        tenant_id=TENANT_ID,
        login_url=fake_teams.login_url,
        http_client=fake_teams.requests_session(),
    )
    return {"Authorization": f"Bearer {await tokens.token()}"}


def card_activity(title: str = "Health") -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_TYPE, "content": to_adaptive_card(Message(title))}],
    }


async def test_new_channel_thread_then_reply_and_update(
    fake_teams: FakeTeams, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    base = fake_teams.service_url
    body = {
        "isGroup": True,
        "channelData": {"channel": {"id": CHANNEL}},
        "activity": card_activity(),
    }
    async with http.post(f"{base}v3/conversations", json=body, headers=headers) as r:
        assert r.status == 201
        created = await r.json()
    assert created["id"] == f"{CHANNEL};messageid={created['activityId']}"
    (thread,) = fake_teams.threads()
    assert thread.id == created["activityId"]

    conversation = created["id"]
    url = f"{base}v3/conversations/{conversation}/activities/{created['activityId']}"
    async with http.post(url, json=card_activity("detail"), headers=headers) as r:
        reply = await r.json()
    assert fake_teams.activity(reply["id"]).reply_to_id == created["activityId"]

    async with http.put(url, json=card_activity("Health: done"), headers=headers) as r:
        assert r.status == 200
    card = fake_teams.activity(created["activityId"]).card
    assert card is not None and "Health: done" in card["body"][0]["items"][0]["text"]

    async with http.post(
        f"{base}v3/conversations/{conversation}/activities", json=card_activity(), headers=headers
    ) as r:
        assert (await r.json())["id"].isdigit()
    assert len(fake_teams.activities(conversation)) == 3


async def test_connector_checks_the_token_it_issued(
    fake_teams: FakeTeams, http: aiohttp.ClientSession
) -> None:
    url = f"{fake_teams.service_url}v3/conversations/x/activities"
    for auth in ({}, {"Authorization": "Bearer made-up"}):
        async with http.post(url, json=card_activity(), headers=auth) as r:
            assert r.status == 401


async def test_invalid_card_is_refused(
    fake_teams: FakeTeams, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    bad = {"type": "message", "attachments": [{"contentType": CARD_TYPE, "content": {"type": "X"}}]}
    url = f"{fake_teams.service_url}v3/conversations/x/activities"
    async with http.post(url, json=bad, headers=headers) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "BadSyntax"


@pytest.mark.parametrize(("status", "retry_after"), [(429, 2.0), (412, None), (502, None)])
async def test_injected_failures(
    fake_teams: FakeTeams,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    retry_after: float | None,
) -> None:
    fake_teams.fail_next(status=status, retry_after=retry_after)
    url = f"{fake_teams.service_url}v3/conversations/x/activities"
    async with http.post(url, json=card_activity(), headers=headers) as r:
        assert r.status == status
        if retry_after:
            assert r.headers["Retry-After"] == "2"
    async with http.post(url, json=card_activity(), headers=headers) as r:
        assert r.status == 201


async def test_down_drops_connections(
    fake_teams: FakeTeams, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    fake_teams.down()
    url = f"{fake_teams.service_url}v3/conversations/x/activities"
    with pytest.raises(aiohttp.ClientError):
        async with http.post(url, json=card_activity(), headers=headers) as r:
            await r.read()
    fake_teams.up()
    async with http.post(url, json=card_activity(), headers=headers) as r:
        assert r.status == 201


def test_inbound_activities_look_like_teams(fake_teams: FakeTeams) -> None:
    message = fake_teams.channel_message("health")
    assert message["text"] == "<at>sms-bot</at> health"
    assert message["entities"][0]["type"] == "mention"
    assert message["entities"][0]["mentioned"]["id"] == f"28:{APP_ID}"
    assert message["conversation"]["id"].startswith(f"{CHANNEL};messageid=")
    assert message["conversation"]["tenantId"] == TENANT_ID
    assert message["channelId"] == "msteams"
    personal = fake_teams.personal_message("health")
    assert personal["conversation"]["conversationType"] == "personal"
    click = fake_teams.card_action("approve", {"action": "approve", "value": "p-1"})
    assert click["type"] == "invoke" and click["name"] == "adaptiveCard/action"
    assert click["value"]["action"]["verb"] == "approve"
    assert click["from"]["aadObjectId"]
