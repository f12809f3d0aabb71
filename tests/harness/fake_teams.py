"""A fake of the Bot Framework services Teams uses, on loopback (HTTPS with its own certificate).

What the bot reaches, and only through the ``TEAMS_*`` settings:

- the Bot Connector: ``POST /v3/conversations`` (a new channel thread,
  answered ``{"id": "19:…;messageid=N", "activityId": "N"}``),
  ``POST /v3/conversations/{id}/activities`` (answered ``{"id": "N"}``),
  ``POST .../activities/{activityId}`` (a reply) and ``PUT`` (an update);
  each checks the bearer token the fake issued, and Adaptive Cards are
  checked by ``card_rules.validate_card`` (400 as Teams answers bad cards,
  413 over 28 KB);
- the OpenID metadata and the JWKS with one key the fake generated,
  endorsed for ``msteams`` (``TEAMS_OPENID_METADATA_URL``);
- a login host: ``/{tenant}/v2.0/.well-known/openid-configuration`` (what
  MSAL reads first) and ``/{tenant}/oauth2/v2.0/token``
  (``TEAMS_LOGIN_URL``).

Failures on demand: ``fail_next`` (429 with Retry-After, 412, 502, 503),
``down`` (connections dropped without an answer). MSAL accepts only https
authorities, so the fake serves TLS: clients trust ``ca_file`` (an
``ssl_context()`` for aiohttp, ``requests_session()`` for MSAL, or
``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` for a bot process).

It also mints inbound tokens (valid, expired, other audience, unknown key)
and builds inbound activities the way Teams sends them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import ssl
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import jwt
import pytest
import requests
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.harness.card_rules import MAX_MESSAGE_BYTES, validate_card

__all__ = [
    "APP_ID",
    "BOT_NAME",
    "CARD_TYPE",
    "PASSWORD",
    "TENANT_ID",
    "ConnectorCall",
    "FakeActivity",
    "FakeTeams",
    "fake_teams",
]

APP_ID = "11111111-2222-3333-4444-555555555555"
PASSWORD = "fake-teams-secret"
TENANT_ID = "66666666-7777-8888-9999-000000000000"
BOT_NAME = "sms-bot"
ISSUER = "https://api.botframework.com"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CHANNEL = "19:fakeOpsChannel0123@thread.tacv2"
TEAM = "19:fakeTeam0123@thread.tacv2"


class ConnectorCall(NamedTuple):
    method: str
    path: str
    body: dict[str, Any]


@dataclass
class FakeActivity:
    """An activity the bot sent, as the connector stored it."""

    id: str
    conversation_id: str
    activity: dict[str, Any]
    reply_to_id: str | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current(self) -> dict[str, Any]:
        return self.updates[-1] if self.updates else self.activity

    @property
    def card(self) -> dict[str, Any] | None:
        for attachment in self.current.get("attachments") or []:
            if attachment.get("contentType") == CARD_TYPE:
                content: dict[str, Any] = attachment["content"]
                return content
        return None


class _Failure(NamedTuple):
    status: int
    retry_after: float | None


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-teams")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class FakeTeams:
    """Bot Connector, OpenID metadata, JWKS and login host for one bot, on 127.0.0.1."""

    def __init__(
        self,
        *,
        app_id: str = APP_ID,
        password: str = PASSWORD,
        tenant_id: str = TENANT_ID,
        token_lifetime_s: int = 3599,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self.password = password
        self.tenant_id = tenant_id
        self.token_lifetime_s = token_lifetime_s
        self._clock = clock
        self.calls: list[ConnectorCall] = []
        self.token_requests = 0
        self.discovery_requests = 0
        self.metadata_requests = 0
        self.issued_tokens: set[str] = set()
        self._activities: dict[str, FakeActivity] = {}
        self._conversations: dict[str, list[str]] = {}
        self._next_id = 1000
        self._failures: deque[_Failure] = deque()
        self._down = False
        # Inbound signing: the published, endorsed key and one nobody published.
        self.signing_kid = "fake-teams-key-1"
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._jwks: list[dict[str, Any]] = [
            self._jwk(self._signing_key, self.signing_kid, ["msteams"])
        ]
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-teams-")
        self.ca_file, self._key_file = _self_signed(Path(self._tmp.name))
        self._runner: web.AppRunner | None = None
        self._url = ""

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> FakeTeams:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._openid_metadata)
        app.router.add_get("/v1/.well-known/keys", self._keys)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post("/v3/conversations", self._create_conversation)
        app.router.add_post("/v3/conversations/{cid}/activities", self._send)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._reply)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(self.ca_file, self._key_file)
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_ssl).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"https://{host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._tmp.cleanup()

    async def __aenter__(self) -> FakeTeams:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- where the bot is pointed ---------------------------------------------------

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("FakeTeams is not started")
        return self._url

    @property
    def service_url(self) -> str:
        """``TEAMS_SERVICE_URL`` and the ``serviceUrl`` of inbound activities."""
        return f"{self.url}/"

    @property
    def openid_metadata_url(self) -> str:
        return f"{self.url}/v1/.well-known/openidconfiguration"

    @property
    def login_url(self) -> str:
        return self.url

    def settings(self) -> dict[str, str]:
        """The ``TEAMS_*`` settings (lower-case field names) that point a bot here."""
        return {
            "teams_app_id": self.app_id,
            "teams_app_password": self.password,
            "teams_tenant_id": self.tenant_id,
            "teams_service_url": self.service_url,
            "teams_alert_channel": CHANNEL,
            "teams_openid_metadata_url": self.openid_metadata_url,
            "teams_login_url": self.login_url,
        }

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the fake's certificate (for an aiohttp connector)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def requests_session(self) -> requests.Session:
        """A ``requests`` session (MSAL's http_client) that trusts the fake."""
        session = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment would override ``verify`` otherwise.
        session.trust_env = False
        session.verify = str(self.ca_file)
        return session

    # -- failures -------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, retry_after: float | None = None) -> None:
        """The next ``n`` connector requests answer ``status`` (429 with Retry-After, 412...)."""
        self._failures.extend(_Failure(status, retry_after) for _ in range(n))

    def down(self) -> None:
        """Connector requests are dropped without an answer until ``up()``."""
        self._down = True

    def up(self) -> None:
        self._down = False

    # -- what the bot sent ----------------------------------------------------------

    def activity(self, activity_id: str) -> FakeActivity:
        return self._activities[activity_id]

    def activities(self, conversation_id: str) -> list[FakeActivity]:
        return [self._activities[a] for a in self._conversations.get(conversation_id, [])]

    def threads(self, channel_id: str = CHANNEL) -> list[FakeActivity]:
        """Root activities of the channel threads the bot created in ``channel_id``."""
        return [
            a
            for a in self._activities.values()
            if a.conversation_id.startswith(f"{channel_id};messageid=") and a.reply_to_id is None
        ]

    # -- inbound: tokens and activities ---------------------------------------------

    def add_key(self, kid: str, *, endorsements: list[str]) -> rsa.RSAPrivateKey:
        """Publish another key (e.g. one not endorsed for msteams); returns its private key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._jwks.append(self._jwk(key, kid, endorsements))
        return key

    def mint_token(
        self,
        *,
        service_url: str | None = None,
        audience: str | None = None,
        issuer: str = ISSUER,
        expired: bool = False,
        wrong_key: bool = False,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """A Bot Framework token as Teams sends it in ``Authorization: Bearer ...``.

        ``wrong_key`` signs with a key that is not in the JWKS (same kid);
        ``expired`` sets ``exp`` an hour ago, past any leeway.
        """
        now = int(self._clock())
        payload: dict[str, Any] = {
            "iss": issuer,
            "aud": audience or self.app_id,
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now - 3600 if expired else now + 3600,
            "serviceurl": service_url or self.service_url,
            **(claims or {}),
        }
        signer = key or (self._other_key if wrong_key else self._signing_key)
        return jwt.encode(
            payload, signer, algorithm="RS256", headers={"kid": kid or self.signing_kid}
        )

    def channel_message(
        self,
        command: str,
        *,
        user_aad: str = "00000000-0000-0000-0000-0000000000aa",
        user_name: str = "Op Erator",
        channel_id: str = CHANNEL,
        thread_id: str | None = None,
    ) -> dict[str, Any]:
        """``@sms-bot command`` in a channel: text with ``<at>`` and the mention entity."""
        mention = f"<at>{BOT_NAME}</at>"
        conversation = f"{channel_id};messageid={thread_id or self._new_id()}"
        activity = self._inbound("message", conversation, user_aad, user_name)
        activity.update(
            text=f"{mention} {command}",
            textFormat="plain",
            entities=[
                {
                    "type": "mention",
                    "text": mention,
                    "mentioned": {"id": f"28:{self.app_id}", "name": BOT_NAME},
                },
                {"type": "clientInfo", "locale": "en-US", "platform": "Web"},
            ],
            channelData={
                "teamsChannelId": channel_id,
                "teamsTeamId": TEAM,
                "channel": {"id": channel_id},
                "team": {"id": TEAM},
                "tenant": {"id": self.tenant_id},
            },
        )
        activity["conversation"].update(conversationType="channel", isGroup=True)
        return activity

    def personal_message(
        self,
        text: str,
        *,
        user_aad: str = "00000000-0000-0000-0000-0000000000aa",
        user_name: str = "Op Erator",
    ) -> dict[str, Any]:
        """A message in the bot's personal chat (no mention)."""
        activity = self._inbound("message", f"a:personal-{user_aad}", user_aad, user_name)
        activity.update(
            text=text,
            textFormat="plain",
            channelData={"tenant": {"id": self.tenant_id}},
        )
        activity["conversation"].update(conversationType="personal")
        return activity

    def card_action(
        self,
        verb: str,
        data: dict[str, Any],
        *,
        user_aad: str = "00000000-0000-0000-0000-0000000000ab",
        user_name: str = "App Rover",
        conversation_id: str | None = None,
        reply_to_id: str | None = None,
    ) -> dict[str, Any]:
        """An ``adaptiveCard/action`` invoke: a click on an Action.Execute button."""
        conversation = conversation_id or f"{CHANNEL};messageid={self._new_id()}"
        activity = self._inbound("invoke", conversation, user_aad, user_name)
        activity.update(
            name="adaptiveCard/action",
            value={
                "action": {"type": "Action.Execute", "verb": verb, "data": data},
                "trigger": "manual",
            },
            channelData={"channel": {"id": CHANNEL}, "tenant": {"id": self.tenant_id}},
        )
        if reply_to_id:
            activity["replyToId"] = reply_to_id
        return activity

    # -- internals ------------------------------------------------------------------

    def _inbound(
        self, kind: str, conversation_id: str, user_aad: str, user_name: str
    ) -> dict[str, Any]:
        return {
            "type": kind,
            "id": self._new_id(),
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {"id": f"29:{user_aad}", "name": user_name, "aadObjectId": user_aad},
            "conversation": {"id": conversation_id, "tenantId": self.tenant_id},
            "recipient": {"id": f"28:{self.app_id}", "name": BOT_NAME},
            "locale": "en-US",
        }

    def _new_id(self) -> str:
        self._next_id += 1
        return str(int(self._clock() * 1000) * 1000 + self._next_id)

    @staticmethod
    def _jwk(key: rsa.RSAPrivateKey, kid: str, endorsements: list[str]) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        public.update(kid=kid, use="sig", endorsements=endorsements)
        return public

    async def _openid_metadata(self, request: web.Request) -> web.Response:
        self.metadata_requests += 1
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": f"{self.url}/v1/.well-known/authorize",
                "jwks_uri": f"{self.url}/v1/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": self._jwks})

    async def _discovery(self, request: web.Request) -> web.Response:
        self.discovery_requests += 1
        tenant = request.match_info["tenant"]
        base = f"{self.url}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if request.match_info["tenant"] != self.tenant_id:
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found"},
                status=400,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_id") != self.app_id or form.get("client_secret") != self.password:
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid secret"},
                status=401,
            )
        if "https://api.botframework.com/.default" not in str(form.get("scope", "")).split():
            return web.json_response({"error": "invalid_scope"}, status=400)
        token = "fake-bf-" + secrets.token_urlsafe(16)
        self.issued_tokens.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.token_lifetime_s, "access_token": token}
        )

    async def _connector(
        self, request: web.Request
    ) -> tuple[dict[str, Any], web.StreamResponse | None]:
        """Common checks of a connector call: down, injected failures, token, body, card."""
        if self._down:
            if request.transport is not None:
                request.transport.close()
            return {}, web.Response(status=503)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued_tokens:
            return {}, web.json_response(
                {"message": "Authorization has been denied for this request."}, status=401
            )
        try:
            body = await request.json()
        except ValueError:
            return {}, _error(400, "BadSyntax", "body is not JSON")
        self.calls.append(ConnectorCall(request.method, request.path, body))
        if self._failures:
            failure = self._failures.popleft()
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = f"{failure.retry_after:g}"
            return body, _error(
                failure.status,
                "Throttled" if failure.status == 429 else "Error",
                "injected",
                headers,
            )
        activity = body.get("activity", body) if request.path == "/v3/conversations" else body
        if len(json.dumps(activity).encode()) > MAX_MESSAGE_BYTES:
            return body, _error(413, "MessageSizeTooBig", "Message size too big")
        for attachment in activity.get("attachments") or []:
            if attachment.get("contentType") == CARD_TYPE:
                problems = validate_card(attachment.get("content"))
                if problems:
                    return body, _error(400, "BadSyntax", "; ".join(problems))
        return body, None

    def _store(
        self, conversation_id: str, activity: dict[str, Any], reply_to: str | None
    ) -> FakeActivity:
        activity_id = self._new_id()
        stored = FakeActivity(activity_id, conversation_id, activity, reply_to)
        self._activities[activity_id] = stored
        self._conversations.setdefault(conversation_id, []).append(activity_id)
        return stored

    async def _create_conversation(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._connector(request)
        if failed is not None:
            return failed
        channel = ((body.get("channelData") or {}).get("channel") or {}).get("id")
        if not channel or not body.get("isGroup") or not isinstance(body.get("activity"), dict):
            return _error(
                400,
                "BadArgument",
                "a channel thread needs channelData.channel.id, isGroup and activity",
            )
        root_id = self._new_id()
        conversation_id = f"{channel};messageid={root_id}"
        stored = FakeActivity(root_id, conversation_id, body["activity"])
        self._activities[root_id] = stored
        self._conversations.setdefault(conversation_id, []).append(root_id)
        return web.json_response({"id": conversation_id, "activityId": root_id}, status=201)

    async def _send(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._connector(request)
        if failed is not None:
            return failed
        cid = request.match_info["cid"]
        stored = self._store(cid, body, body.get("replyToId"))
        return web.json_response({"id": stored.id}, status=201)

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._connector(request)
        if failed is not None:
            return failed
        stored = self._store(request.match_info["cid"], body, request.match_info["aid"])
        return web.json_response({"id": stored.id}, status=201)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._connector(request)
        if failed is not None:
            return failed
        aid = request.match_info["aid"]
        stored = self._activities.get(aid)
        if (
            stored is None
            or stored.conversation_id.split(";")[0] != request.match_info["cid"].split(";")[0]
        ):
            return _error(404, "ActivityNotFound", "Unknown activity")
        stored.updates.append(body)
        return web.json_response({"id": aid})


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


@pytest.fixture
async def fake_teams() -> AsyncIterator[FakeTeams]:
    """A started fake of the Bot Framework services for the bot ``APP_ID``."""
    async with FakeTeams() as fake:
        yield fake
