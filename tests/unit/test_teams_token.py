"""Outbound client-credentials tokens via MSAL against the fake login host."""

from __future__ import annotations

import pytest

from bot.chat.teams_token import TeamsTokenError, TeamsTokenProvider
from tests.harness.fake_teams import APP_ID, PASSWORD, TENANT_ID, FakeTeams


def provider(fake: FakeTeams, **kw: object) -> TeamsTokenProvider:
    options: dict[str, object] = {
        "app_id": APP_ID,
        "password": PASSWORD,
        "tenant_id": TENANT_ID,
        "login_url": fake.login_url,
        "http_client": fake.requests_session(),
        **kw,
    }
    return TeamsTokenProvider(**options)  # type: ignore[arg-type]


async def test_token_is_fetched_once_and_cached_until_near_expiry(fake_teams: FakeTeams) -> None:
    now = [1_000_000.0]
    tokens = provider(fake_teams, clock=lambda: now[0])
    first = await tokens.token()
    assert first in fake_teams.issued_tokens
    assert fake_teams.discovery_requests == 1  # MSAL read the authority's metadata, not Microsoft's
    now[0] += 3000
    assert await tokens.token() == first
    assert fake_teams.token_requests == 1
    now[0] += 400  # within five minutes of expires_in=3599
    second = await tokens.token()
    assert second != first
    assert fake_teams.token_requests == 2


async def test_invalidate_gets_a_new_token(fake_teams: FakeTeams) -> None:
    tokens = provider(fake_teams)
    first = await tokens.token()
    tokens.invalidate()
    assert await tokens.token() != first


async def test_wrong_secret_is_a_permanent_error(fake_teams: FakeTeams) -> None:
    with pytest.raises(TeamsTokenError) as info:
        await provider(fake_teams, password="wrong").token()
    assert "invalid_client" in info.value.reason
    assert not info.value.retryable


async def test_login_host_down_is_retryable(fake_teams: FakeTeams) -> None:
    tokens = provider(fake_teams, login_url="https://127.0.0.1:9", timeout_s=2)
    with pytest.raises(TeamsTokenError) as info:
        await tokens.token()
    assert info.value.retryable
