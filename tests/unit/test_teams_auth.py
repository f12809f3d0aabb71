"""Inbound Bot Framework token validation against the fake's OpenID metadata and keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest

from bot.chat.teams_auth import TeamsAuthError, TeamsTokenValidator
from tests.harness.fake_teams import APP_ID, FakeTeams


@pytest.fixture
async def session(fake_teams: FakeTeams) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=fake_teams.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


def validator(fake: FakeTeams, session: aiohttp.ClientSession, **kw: object) -> TeamsTokenValidator:
    return TeamsTokenValidator(
        app_id=APP_ID,
        metadata_url=fake.openid_metadata_url,
        session=session,
        **kw,  # type: ignore[arg-type]
    )


async def check(fake: FakeTeams, session: aiohttp.ClientSession, token: str, **kw: str) -> None:
    await validator(fake, session).validate(
        f"Bearer {token}",
        channel_id=kw.get("channel_id", "msteams"),
        service_url=kw.get("service_url", fake.service_url),
    )


async def test_a_valid_token_gives_its_claims(
    fake_teams: FakeTeams, session: aiohttp.ClientSession
) -> None:
    claims = await validator(fake_teams, session).validate(
        f"Bearer {fake_teams.mint_token()}",
        channel_id="msteams",
        service_url=fake_teams.service_url,
    )
    assert claims.app_id == APP_ID
    assert claims.issuer == "https://api.botframework.com"
    assert claims.claims["aud"] == APP_ID
    assert claims.service_url == fake_teams.service_url


async def test_keys_are_cached(fake_teams: FakeTeams, session: aiohttp.ClientSession) -> None:
    v = validator(fake_teams, session)
    for _ in range(3):
        await v.validate(
            f"Bearer {fake_teams.mint_token()}",
            channel_id="msteams",
            service_url=fake_teams.service_url,
        )
    assert fake_teams.metadata_requests == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda f: f.mint_token(expired=True), "expired"),
        (lambda f: f.mint_token(audience="someone-else"), "audience"),
        (lambda f: f.mint_token(issuer="https://evil.example"), "issuer"),
        (lambda f: f.mint_token(wrong_key=True), "Signature verification failed"),
        (lambda f: f.mint_token(kid="nobody-knows"), "unknown signing key"),
        (lambda f: f.mint_token(service_url="https://evil.example/"), "serviceurl"),
        (lambda f: "not.a.jwt", "malformed"),
    ],
)
async def test_bad_tokens_are_refused_with_the_reason(
    fake_teams: FakeTeams, session: aiohttp.ClientSession, make: object, reason: str
) -> None:
    with pytest.raises(TeamsAuthError) as info:
        await check(fake_teams, session, make(fake_teams))  # type: ignore[operator]
    assert reason in info.value.reason


async def test_unsigned_alg_none_is_refused(
    fake_teams: FakeTeams, session: aiohttp.ClientSession
) -> None:
    token = jwt.encode(
        {"iss": "https://api.botframework.com", "aud": APP_ID, "exp": 9999999999},
        key=None,
        algorithm="none",
        headers={"kid": fake_teams.signing_kid},
    )
    with pytest.raises(TeamsAuthError) as info:
        await check(fake_teams, session, token)
    assert "algorithm 'none'" in info.value.reason


async def test_token_without_exp_is_refused(
    fake_teams: FakeTeams, session: aiohttp.ClientSession
) -> None:
    token = jwt.encode(
        {
            "iss": "https://api.botframework.com",
            "aud": APP_ID,
            "serviceurl": fake_teams.service_url,
        },
        fake_teams._signing_key,
        algorithm="RS256",
        headers={"kid": fake_teams.signing_kid},
    )
    with pytest.raises(TeamsAuthError) as info:
        await check(fake_teams, session, token)
    assert "exp" in info.value.reason


async def test_key_not_endorsed_for_the_channel_is_refused(
    fake_teams: FakeTeams, session: aiohttp.ClientSession
) -> None:
    key = fake_teams.add_key("skype-only", endorsements=["skype"])
    token = fake_teams.mint_token(key=key, kid="skype-only")
    with pytest.raises(TeamsAuthError) as info:
        await check(fake_teams, session, token)
    assert "not endorsed for channel 'msteams'" in info.value.reason
    # The endorsed key is not valid for another channel either.
    with pytest.raises(TeamsAuthError):
        await check(fake_teams, session, fake_teams.mint_token(), channel_id="webchat")


async def test_a_new_key_is_fetched_when_a_token_names_it(
    fake_teams: FakeTeams, session: aiohttp.ClientSession
) -> None:
    now = [1_000_000.0]
    v = validator(fake_teams, session, clock=lambda: now[0])
    url = fake_teams.service_url
    await v.validate(f"Bearer {fake_teams.mint_token()}", channel_id="msteams", service_url=url)
    key = fake_teams.add_key("rotated", endorsements=["msteams"])
    token = fake_teams.mint_token(key=key, kid="rotated")
    now[0] += 120  # past the minimum time between fetches
    await v.validate(f"Bearer {token}", channel_id="msteams", service_url=url)
    assert fake_teams.metadata_requests == 2


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer "])
async def test_missing_bearer_is_refused(
    fake_teams: FakeTeams, session: aiohttp.ClientSession, header: str | None
) -> None:
    with pytest.raises(TeamsAuthError, match="no bearer token"):
        await validator(fake_teams, session).validate(
            header, channel_id="msteams", service_url=fake_teams.service_url
        )


async def test_metadata_unreachable_is_an_auth_error(
    fake_teams: FakeTeams, session: aiohttp.ClientSession
) -> None:
    token = fake_teams.mint_token()
    v = TeamsTokenValidator(
        app_id=APP_ID,
        metadata_url="https://127.0.0.1:9/v1/.well-known/openidconfiguration",
        session=session,
        timeout_s=2,
    )
    with pytest.raises(TeamsAuthError) as info:
        await v.validate(
            f"Bearer {token}", channel_id="msteams", service_url=fake_teams.service_url
        )
    assert "unreachable" in info.value.reason
