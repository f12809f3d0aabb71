"""The bot's outbound token for the Bot Connector (client credentials, via MSAL).

MSAL is synchronous and its first call discovers the authority over the
network: every MSAL call runs in a worker thread, never on the event loop.
The token is kept until five minutes before it expires, so a busy outbox
asks MSAL about once an hour, and one lock makes concurrent senders share a
single request.

The SDK's ``MsalAuth`` always asks Microsoft's public instance discovery
about the login host, which fails for other clouds and for tests; here,
for a ``TEAMS_LOGIN_URL`` that is not the public one, instance discovery and
authority validation are off and MSAL reads the OpenID configuration under
the given authority instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msal

__all__ = [
    "BOT_FRAMEWORK_SCOPE",
    "PUBLIC_LOGIN_URL",
    "TeamsToken",
    "TeamsTokenError",
    "TeamsTokenProvider",
]

BOT_FRAMEWORK_SCOPE: Final = "https://api.botframework.com/.default"
PUBLIC_LOGIN_URL: Final = "https://login.microsoftonline.com"
_RENEW_BEFORE_S: Final = 300.0


class TeamsTokenError(Exception):
    """No token could be had (wrong secret, tenant, login host down); ``reason`` says why."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class TeamsToken:
    value: str
    expires_at: float

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - _RENEW_BEFORE_S


# MSAL errors that a retry will not cure: the configuration is wrong.
_PERMANENT = {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_request"}


class TeamsTokenProvider:
    """Client-credentials tokens for ``TEAMS_APP_ID`` in ``TEAMS_TENANT_ID``.

    ``http_client`` is handed to MSAL as is (a ``requests.Session``); the
    tests pass one that trusts their fake login host's certificate.
    """

    def __init__(
        self,
        *,
        app_id: str,
        password: str,
        tenant_id: str,
        login_url: str = PUBLIC_LOGIN_URL,
        scope: str = BOT_FRAMEWORK_SCOPE,
        http_client: Any = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app_id = app_id
        self._password = password
        self._authority = f"{login_url.rstrip('/')}/{tenant_id}"
        self._public = login_url.rstrip("/").lower() == PUBLIC_LOGIN_URL
        self._scope = scope
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._clock = clock
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: TeamsToken | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A bearer token valid for at least five more minutes."""
        async with self._lock:
            now = self._clock()
            if self._token is None or not self._token.fresh(now):
                self._token = await asyncio.wait_for(
                    asyncio.to_thread(self._acquire, now), self._timeout_s * 3
                )
            return self._token.value

    def invalidate(self) -> None:
        """Forget the token (the connector answered 401 to it)."""
        self._token = None

    def _client(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            options: dict[str, Any] = {}
            if not self._public:
                options.update(instance_discovery=False, validate_authority=False)
            if self._http_client is not None:
                options["http_client"] = self._http_client
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._app_id,
                    client_credential=self._password,
                    authority=self._authority,
                    timeout=self._timeout_s,
                    **options,
                )
            except ValueError as exc:  # authority discovery failed or was refused
                raise TeamsTokenError(
                    f"login authority {self._authority}: {exc}", retryable=True
                ) from exc
            except OSError as exc:  # requests' connection errors are OSErrors
                raise TeamsTokenError(
                    f"login authority {self._authority} unreachable: {exc!r}", retryable=True
                ) from exc
        return self._app

    def _acquire(self, now: float) -> TeamsToken:
        """Runs in a worker thread: MSAL blocks on the network."""
        app = self._client()
        try:
            result = app.acquire_token_for_client(scopes=[self._scope])
        except (OSError, ValueError) as exc:
            raise TeamsTokenError(f"token request failed: {exc!r}", retryable=True) from exc
        if not isinstance(result, dict) or "access_token" not in result:
            error = str((result or {}).get("error", "no answer"))
            description = str((result or {}).get("error_description", "")).split("\n")[0]
            raise TeamsTokenError(
                f"token refused: {error} {description}".strip(),
                retryable=error not in _PERMANENT,
            )
        # This class is the cache: MSAL's copy would hand the old token back
        # when ours is due for renewal or was refused.
        cache = app.token_cache
        for entry in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(entry)
        expires_in = float(result.get("expires_in", 3600))
        return TeamsToken(value=str(result["access_token"]), expires_at=now + expires_in)
