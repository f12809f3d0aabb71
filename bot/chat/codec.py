"""The neutral ``Message`` as JSON, and back, exactly.

The outbox stores what a procedure said, not what one platform makes of it:
each delivery renders the message when it sends it (Block Kit for Slack, an
Adaptive Card for Teams), so an update looks the same on any replica and
after a restart. This codec is the stored form. It is plain JSON (the store
refuses anything else), leaves out what equals the model's defaults (updates
are stored often) and ignores keys it does not know, so a replica one version
behind can still read what a newer one queued. ``v`` names the format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bot.messages import (
    Button,
    CodeBlock,
    Field,
    Link,
    Mention,
    Message,
    Status,
    StepView,
    Table,
)

__all__ = ["FORMAT_VERSION", "MessageDecodeError", "message_from_json", "message_to_json"]

FORMAT_VERSION = 1

# JSON has no NaN or infinities (the store refuses them): such a duration is
# stored under these names instead.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class MessageDecodeError(ValueError):
    """Stored JSON that is not a message this version can read."""


# -- encoding ----------------------------------------------------------------------------


def message_to_json(msg: Message) -> dict[str, Any]:
    """A JSON object (only dicts, lists, strings, numbers, null) for ``msg``."""
    out: dict[str, Any] = {"v": FORMAT_VERSION, "title": msg.title, "status": msg.status.value}
    if msg.text:
        out["text"] = msg.text
    if msg.fields:
        out["fields"] = [_field_out(f) for f in msg.fields]
    if msg.steps:
        out["steps"] = [_step_out(s) for s in msg.steps]
    if msg.details:
        out["details"] = [_detail_out(d) for d in msg.details]
    if msg.buttons:
        out["buttons"] = [_button_out(b) for b in msg.buttons]
    if msg.footer:
        out["footer"] = msg.footer
    if msg.links:
        out["links"] = [_link_out(link) for link in msg.links]
    if msg.mentions:
        out["mentions"] = [_mention_out(m) for m in msg.mentions]
    return out


def _mention_out(m: Mention) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": m.user_id}
    if m.name:
        out["name"] = m.name
    return out


def _link_out(link: Link) -> dict[str, Any]:
    return {"label": link.label, "url": link.url}


def _field_out(f: Field) -> dict[str, Any]:
    value: Any = _link_out(f.value) if isinstance(f.value, Link) else f.value
    out: dict[str, Any] = {"label": f.label, "value": value}
    if f.status is not None:
        out["status"] = f.status.value
    return out


def _step_out(s: StepView) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "status": s.status.value}
    if s.duration_s is not None:
        out["duration_s"] = _number_out(s.duration_s)
    if s.summary:
        out["summary"] = s.summary
    return out


def _number_out(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _detail_out(d: CodeBlock | Table) -> dict[str, Any]:
    if isinstance(d, CodeBlock):
        return {"kind": "code", "title": d.title, "text": d.text}
    return {
        "kind": "table",
        "title": d.title,
        "columns": list(d.columns),
        "rows": [list(row) for row in d.rows],
    }


def _button_out(b: Button) -> dict[str, Any]:
    out: dict[str, Any] = {"label": b.label, "action": b.action, "value": b.value}
    if b.style is not None:
        out["style"] = b.style
    return out


# -- decoding ----------------------------------------------------------------------------


def message_from_json(d: Mapping[str, Any]) -> Message:
    """The message ``message_to_json`` was given; ``MessageDecodeError`` if unreadable."""
    obj = _obj(d, "message")
    version = obj.get("v", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise MessageDecodeError(f"message format {version!r} is not {FORMAT_VERSION}")
    return Message(
        title=_str(obj, "title"),
        status=_status(obj.get("status", Status.OK.value), "status"),
        text=_str(obj, "text", ""),
        fields=tuple(_field_in(x) for x in _list(obj, "fields")),
        steps=tuple(_step_in(x) for x in _list(obj, "steps")),
        details=tuple(_detail_in(x) for x in _list(obj, "details")),
        buttons=tuple(_button_in(x) for x in _list(obj, "buttons")),
        footer=_str(obj, "footer", ""),
        links=tuple(_link_in(x) for x in _list(obj, "links")),
        mentions=tuple(_mention_in(x) for x in _list(obj, "mentions")),
    )


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MessageDecodeError(f"{what} is not an object: {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise MessageDecodeError(f"{key!r} is not a string: {value!r:.80}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key)


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise MessageDecodeError(f"{key!r} is not a list: {type(value).__name__}")
    return value


def _strings(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = _list(obj, key)
    if not all(isinstance(v, str) for v in values):
        raise MessageDecodeError(f"{key!r} holds something other than strings")
    return tuple(values)


def _status(value: Any, what: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise MessageDecodeError(f"{what} {value!r:.80} is not a status") from None


def _link_in(value: Any) -> Link:
    obj = _obj(value, "link")
    return Link(label=_str(obj, "label"), url=_str(obj, "url"))


def _mention_in(value: Any) -> Mention:
    obj = _obj(value, "mention")
    return Mention(user_id=_str(obj, "user_id"), name=_str(obj, "name", ""))


def _field_in(value: Any) -> Field:
    obj = _obj(value, "field")
    raw = obj.get("value")
    field_value: str | Link = raw if isinstance(raw, str) else _link_in(raw)
    status = obj.get("status")
    return Field(
        label=_str(obj, "label"),
        value=field_value,
        status=None if status is None else _status(status, "field status"),
    )


def _step_in(value: Any) -> StepView:
    obj = _obj(value, "step")
    return StepView(
        name=_str(obj, "name"),
        status=_status(obj.get("status"), "step status"),
        duration_s=_number_in(obj.get("duration_s")),
        summary=_str(obj, "summary", ""),
    )


def _number_in(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageDecodeError(f"duration {value!r:.80} is not a number")
    return value


def _detail_in(value: Any) -> CodeBlock | Table:
    obj = _obj(value, "detail")
    kind = obj.get("kind")
    if kind == "code":
        return CodeBlock(title=_str(obj, "title"), text=_str(obj, "text"))
    if kind == "table":
        rows = _list(obj, "rows")
        if not all(isinstance(r, list) for r in rows):
            raise MessageDecodeError("a table row is not a list")
        return Table(
            title=_str(obj, "title"),
            columns=_strings(obj, "columns"),
            rows=tuple(_strings({"row": r}, "row") for r in rows),
        )
    raise MessageDecodeError(f"unknown detail kind {kind!r:.80}")


def _button_in(value: Any) -> Button:
    obj = _obj(value, "button")
    return Button(
        label=_str(obj, "label"),
        action=_str(obj, "action"),
        value=_str(obj, "value"),
        style=_optional_str(obj, "style"),
    )
