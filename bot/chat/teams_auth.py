"""Validation of the Bot Framework JWT on every request to ``POST /api/messages``.

Done here with PyJWT rather than by the SDK's middleware, which takes its key
URL from a private table, does not require ``exp``, does not check the key's
endorsements and does not compare the ``serviceurl`` claim with the
activity: a token Teams issued for one channel or connector must not let a
caller point the bot's replies (which carry the bot's own token) elsewhere.

Keys come from the OpenID metadata at ``TEAMS_OPENID_METADATA_URL``: the
document names the ``jwks_uri`` and the issuer; the keys are cached and
fetched again, at most once a minute, when a token names an unknown ``kid``.
Every fetch is bounded by a timeout. Any failure is one ``TeamsAuthError``
with the reason (logged, never shown to the caller, who gets a bare 401).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import jwt

__all__ = [
    "BOT_FRAMEWORK_ISSUER",
    "LEEWAY_S",
    "TeamsAuthError",
    "TeamsClaims",
    "TeamsTokenValidator",
]

BOT_FRAMEWORK_ISSUER: Final = "https://api.botframework.com"
LEEWAY_S: Final = 300
"""Clock skew allowed on ``exp`` and ``nbf`` (the Bot Framework's 5 minutes)."""
_REFRESH_EVERY_S: Final = 24 * 3600
_MIN_REFETCH_S: Final = 60.0
_ALGORITHMS: Final = ["RS256"]


class TeamsAuthError(Exception):
    """The request's token is missing or not valid; ``reason`` says why (for the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TeamsClaims:
    """The claims of a valid token: the SDK's ClaimsIdentity is built from ``claims``."""

    app_id: str  # the audience: our TEAMS_APP_ID
    issuer: str
    service_url: str
    channel_id: str
    claims: Mapping[str, Any] = field(repr=False)


@dataclass
class _Keys:
    issuers: tuple[str, ...]
    by_kid: dict[str, dict[str, Any]]
    fetched_at: float


class TeamsTokenValidator:
    """Validates ``Authorization: Bearer ...`` against the Bot Framework's published keys."""

    def __init__(
        self,
        *,
        app_id: str,
        metadata_url: str,
        session: aiohttp.ClientSession,
        issuers: tuple[str, ...] = (BOT_FRAMEWORK_ISSUER,),
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app_id = app_id
        self._metadata_url = metadata_url
        self._session = session
        self._issuers = issuers
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._keys: _Keys | None = None
        self._lock = asyncio.Lock()

    async def validate(
        self, authorization: str | None, *, channel_id: str, service_url: str
    ) -> TeamsClaims:
        """The claims of the request's token, or ``TeamsAuthError``."""
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TeamsAuthError(f"malformed token: {exc}") from exc
        if header.get("alg") not in _ALGORITHMS:
            raise TeamsAuthError(f"algorithm {header.get('alg')!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TeamsAuthError("the token names no signing key (kid)")
        keys = await self._keys_with(kid)
        jwk = keys.by_kid.get(kid)
        if jwk is None:
            raise TeamsAuthError(f"unknown signing key {kid!r}")
        endorsements = jwk.get("endorsements")
        if not isinstance(endorsements, list) or channel_id not in endorsements:
            raise TeamsAuthError(f"signing key {kid!r} is not endorsed for channel {channel_id!r}")
        try:
            key = jwt.PyJWK.from_dict(jwk).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=_ALGORITHMS,
                audience=self._app_id,
                issuer=list(keys.issuers),
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TeamsAuthError("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TeamsAuthError("the token is for another app (audience)") from exc
        except jwt.InvalidIssuerError as exc:
            raise TeamsAuthError("the token's issuer is not the Bot Framework") from exc
        except jwt.PyJWTError as exc:
            raise TeamsAuthError(f"invalid token: {exc}") from exc
        claimed_url = claims.get("serviceurl") or claims.get("serviceUrl")
        if not isinstance(claimed_url, str) or _norm_url(claimed_url) != _norm_url(service_url):
            raise TeamsAuthError("the token's serviceurl is not the activity's serviceUrl")
        return TeamsClaims(
            app_id=self._app_id,
            issuer=str(claims["iss"]),
            service_url=service_url,
            channel_id=channel_id,
            claims=claims,
        )

    async def _keys_with(self, kid: str) -> _Keys:
        """Cached keys, fetched again when old or when ``kid`` is new (rate-limited)."""
        async with self._lock:
            now = self._clock()
            keys = self._keys
            stale = keys is None or now - keys.fetched_at > _REFRESH_EVERY_S
            unknown = keys is not None and kid not in keys.by_kid
            may_refetch = keys is None or now - keys.fetched_at >= _MIN_REFETCH_S
            if stale or (unknown and may_refetch):
                self._keys = keys = await self._fetch(now)
            assert keys is not None
            return keys

    async def _fetch(self, now: float) -> _Keys:
        metadata = await self._get_json(self._metadata_url, "OpenID metadata")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise TeamsAuthError("the OpenID metadata names no jwks_uri")
        issuer = metadata.get("issuer")
        issuers = tuple(dict.fromkeys([*self._issuers, *([issuer] if issuer else [])]))
        jwks = await self._get_json(jwks_uri, "signing keys")
        by_kid = {
            str(k["kid"]): k
            for k in jwks.get("keys", [])
            if isinstance(k, dict) and isinstance(k.get("kid"), str)
        }
        return _Keys(issuers=issuers, by_kid=by_kid, fetched_at=now)

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if response.status != 200:
                    raise TeamsAuthError(f"{what} at {url} answered {response.status}")
                body = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TeamsAuthError(f"{what} at {url} unreachable: {exc!r}") from exc
        except ValueError as exc:
            raise TeamsAuthError(f"{what} at {url} is not JSON") from exc
        if not isinstance(body, dict):
            raise TeamsAuthError(f"{what} at {url} is not a JSON object")
        return body


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TeamsAuthError("no bearer token")
    return token.strip()


def _norm_url(url: str) -> str:
    return url.strip().rstrip("/").lower()
