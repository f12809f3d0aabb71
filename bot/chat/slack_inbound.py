"""Slack's inbound requests checked and normalised into ``Command`` and ``Click``.

A request whose signature is valid still comes from the network: a JSON list
where an object belongs, an action with no id, a ``user`` that is a string.
Each is refused here, with one reason, before anything runs (a 400 over
HTTP; over Socket Mode the envelope is acknowledged and dropped), instead of
failing half-way inside a listener with a 500 and a traceback.

The body is parsed exactly as Bolt parses it (``parse_body``), so what is
checked here is what Bolt's listeners will see.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_bolt.request.internals import (
    build_normalized_headers,
    extract_content_type,
    parse_body,
)

from bot.chat.blockkit import base_action
from bot.events import Click, Command
from bot.messages import Conversation

__all__ = [
    "MalformedPayload",
    "check_payload",
    "click_from",
    "command_from",
    "parse_slack_body",
]


class MalformedPayload(ValueError):
    """A Slack request whose content is not what Slack sends; the message says what."""


def parse_slack_body(text: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The body as Bolt will see it (a form, or ``payload=`` JSON), or ``MalformedPayload``."""
    content_type = extract_content_type(build_normalized_headers(dict(headers)))
    try:
        body = parse_body(text, content_type)
    except ValueError as exc:
        raise MalformedPayload(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload("body is nested too deeply") from None
    if not isinstance(body, dict):
        raise MalformedPayload(f"payload is a JSON {type(body).__name__}, not an object")
    return body


def check_payload(body: Mapping[str, Any]) -> None:
    """Refuse a slash command or button click the listeners could not read.

    Other kinds (Slack's ``ssl_check``, ``url_verification``) are Bolt's to
    answer and pass as they are.
    """
    if "command" in body:
        command_from(body)
    elif body.get("type") == "block_actions":
        click_from(body)


def command_from(body: Mapping[str, Any]) -> Command:
    """``/sms TEXT`` as a ``Command``; who typed it and where are required."""
    if not _text(body, "command"):
        raise MalformedPayload("slash command: command is missing")
    return Command(
        text=_text(body, "text", required=False),
        user=_text(body, "user_id"),
        source="slack",
        conversation=Conversation(
            surface="slack",
            channel=_text(body, "channel_id"),
            reply_url=_text(body, "response_url", required=False) or None,
        ),
    )


def click_from(body: Mapping[str, Any]) -> Click:
    """The first action of a ``block_actions`` payload as a ``Click``."""
    user = _object(body, "user")
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions:
        raise MalformedPayload("block_actions: actions is not a non-empty list")
    if not all(isinstance(a, dict) for a in actions):
        raise MalformedPayload("block_actions: an action is not an object")
    action = actions[0]
    container = _object(body, "container", required=False)
    channel = _object(body, "channel", required=False)
    channel_id = _text(channel, "id", required=False) or _text(
        container, "channel_id", required=False
    )
    if not channel_id:
        raise MalformedPayload("block_actions: no channel id")
    return Click(
        action=base_action(_text(action, "action_id")),
        value=_text(action, "value", required=False),
        user=_text(user, "id"),
        source="slack",
        conversation=Conversation(
            surface="slack",
            channel=channel_id,
            thread=_text(container, "message_ts", required=False) or None,
            reply_url=_text(body, "response_url", required=False) or None,
        ),
    )


def _text(body: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise MalformedPayload(f"{key} is not a string")
    if required and not value:
        raise MalformedPayload(f"{key} is empty")
    return value


def _object(body: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = body.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise MalformedPayload(f"{key} is not an object")
    return value
