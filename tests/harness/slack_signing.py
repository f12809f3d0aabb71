"""Requests as Slack sends them: signed bodies for slash commands and button clicks.

Tests POST these to ``/slack/events`` so the bot's real signature check
(Bolt's) runs, instead of being switched off. The bodies carry every field
Slack sends, so the parsing at the edge is exercised on the real shape.

Signing follows Slack's v0 scheme: ``X-Slack-Signature`` is ``v0=`` and the
hex HMAC-SHA256, keyed by the signing secret, of ``v0:{timestamp}:{body}``;
``X-Slack-Request-Timestamp`` is the Unix time in seconds, and receivers
reject one more than five minutes away from their clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

__all__ = [
    "API_APP_ID",
    "FORM_CONTENT_TYPE",
    "block_actions_body",
    "block_actions_payload",
    "sign",
    "signed_headers",
    "slash_command_body",
]

API_APP_ID = "A0SMSBOT"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_TEAM_ID = "T0001"
_TEAM_DOMAIN = "sms"
_VERIFICATION_TOKEN = "legacy-verification-token"  # Slack still sends it; nothing checks it
_BOT_USER_ID = "U0BOT"
_BOT_ID = "B0001"


def sign(body: bytes | str, *, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The two headers Slack adds to a request with this exact ``body``.

    ``timestamp`` defaults to now; pass an old one to test replay rejection.
    """
    raw = body.encode() if isinstance(body, str) else body
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + raw
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def signed_headers(
    body: bytes | str,
    *,
    secret: str,
    timestamp: int | None = None,
    content_type: str = FORM_CONTENT_TYPE,
) -> dict[str, str]:
    """``sign`` plus the ``Content-Type`` Slack uses for commands and interactivity."""
    return {"Content-Type": content_type, **sign(body, secret=secret, timestamp=timestamp)}


def _trigger_id() -> str:
    return f"{int(time.time())}.{_TEAM_ID[1:]}.{secrets.token_hex(16)}"


def slash_command_body(
    text: str,
    *,
    command: str = "/sms",
    user_id: str = "U1",
    user_name: str = "oncall",
    channel_id: str = "C1",
    channel_name: str = "sms-alerts",
    team_id: str = _TEAM_ID,
    team_domain: str = _TEAM_DOMAIN,
    response_url: str = "https://hooks.slack.com/commands/T0001/1000/abcdef",
    trigger_id: str | None = None,
    api_app_id: str = API_APP_ID,
) -> bytes:
    """The form body of ``/sms <text>`` typed by ``user_id`` in ``channel_id``."""
    fields = {
        "token": _VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
    }
    return urlencode(fields).encode()


def block_actions_payload(
    action_id: str,
    value: str,
    *,
    user_id: str = "U1",
    user_name: str = "oncall",
    channel_id: str = "C1",
    channel_name: str = "sms-alerts",
    message_ts: str = "1764140000.000100",
    thread_ts: str | None = None,
    response_url: str = "https://hooks.slack.com/actions/T0001/1000/abcdef",
    block_id: str = "actions",
    button_text: str = "Button",
    message_text: str = "",
    message_blocks: list[dict[str, Any]] | None = None,
    trigger_id: str | None = None,
    api_app_id: str = API_APP_ID,
    team_id: str = _TEAM_ID,
) -> dict[str, Any]:
    """The JSON Slack sends when ``user_id`` clicks a button in a bot message."""
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    message: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "user": _BOT_USER_ID,
        "bot_id": _BOT_ID,
        "app_id": api_app_id,
        "team": team_id,
        "ts": message_ts,
        "text": message_text,
        "blocks": message_blocks or [],
    }
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
        message["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": _VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": _TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def block_actions_body(action_id: str, value: str, **kwargs: Any) -> bytes:
    """``payload=<json>``, form-encoded, as Slack posts interactivity requests.

    Takes the keyword arguments of ``block_actions_payload``.
    """
    payload = block_actions_payload(action_id, value, **kwargs)
    return urlencode({"payload": json.dumps(payload)}).encode()
