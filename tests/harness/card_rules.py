"""The Adaptive Card rules (schema 1.5) that the tests and the fake connector check.

Not the whole schema: the parts a renderer can get wrong. Every element's
``type`` is one of 1.5's, the properties each type requires are there with
the right kind of value, enumerated values (colours, styles, sizes) are the
schema's, actions are well formed (``Action.Execute`` needs a verb to be
useful to a bot, a ``fallback`` is an action or ``"drop"``), Teams'
``msteams.entities`` are mentions whose ``<at>`` text the body shows, and the
serialized activity stays under Teams' 28 KB. ``validate_card`` returns the
list of problems; empty means valid.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ELEMENT_TYPES", "MAX_MESSAGE_BYTES", "validate_card"]

MAX_MESSAGE_BYTES = 28 * 1024

ELEMENT_TYPES = {
    "TextBlock",
    "Image",
    "Media",
    "RichTextBlock",
    "ActionSet",
    "Container",
    "ColumnSet",
    "FactSet",
    "ImageSet",
    "Table",
    "Input.Text",
    "Input.Number",
    "Input.Date",
    "Input.Time",
    "Input.Toggle",
    "Input.ChoiceSet",
}
ACTION_TYPES = {
    "Action.OpenUrl",
    "Action.Submit",
    "Action.ShowCard",
    "Action.ToggleVisibility",
    "Action.Execute",
}
_COLORS = {"default", "dark", "light", "accent", "good", "warning", "attention"}
_SIZES = {"default", "small", "medium", "large", "extralarge"}
_WEIGHTS = {"default", "lighter", "bolder"}
_FONT_TYPES = {"default", "monospace"}
_SPACINGS = {"default", "none", "small", "medium", "large", "extralarge", "padding"}
_CONTAINER_STYLES = {"default", "emphasis", "good", "attention", "warning", "accent"}
_ACTION_STYLES = {"default", "positive", "destructive"}
_CARD_KEYS = {
    "type",
    "$schema",
    "version",
    "body",
    "actions",
    "msteams",
    "fallbackText",
    "speak",
    "lang",
    "minHeight",
    "verticalContentAlignment",
    "backgroundImage",
    "selectAction",
    "refresh",
    "authentication",
    "rtl",
    "metadata",
}


def validate_card(card: Any, *, max_bytes: int = MAX_MESSAGE_BYTES) -> list[str]:
    """Problems of an Adaptive Card (1.5) as Teams would meet them."""
    problems: list[str] = []
    if not isinstance(card, dict):
        return ["the card is not an object"]
    if card.get("type") != "AdaptiveCard":
        problems.append("type must be AdaptiveCard")
    version = card.get("version")
    if not isinstance(version, str) or version not in {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}:
        problems.append(f"version {version!r} is not one Teams renders (1.0-1.5)")
    unknown = set(card) - _CARD_KEYS
    if unknown:
        problems.append(f"unknown card properties {sorted(unknown)}")
    body = card.get("body")
    if not isinstance(body, list):
        problems.append("body must be a list")
    else:
        for i, element in enumerate(body):
            _element(element, f"body[{i}]", problems)
    actions = card.get("actions", [])
    if not isinstance(actions, list):
        problems.append("actions must be a list")
    else:
        for i, action in enumerate(actions):
            _action(action, f"actions[{i}]", problems)
    if "msteams" in card and not isinstance(card["msteams"], dict):
        problems.append("msteams must be an object")
    elif "msteams" in card:
        _msteams(card["msteams"], _texts(body if isinstance(body, list) else []), problems)
    try:
        size = len(json.dumps(card).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        problems.append(f"not JSON: {exc}")
    else:
        if size > max_bytes:
            problems.append(f"{size} bytes is over the {max_bytes}-byte limit")
    return problems


_MSTEAMS_KEYS = {"width", "entities"}


def _msteams(msteams: dict[str, Any], texts: list[str], out: list[str]) -> None:
    """Teams' card extension: a width and mention entities, each shown in a TextBlock."""
    unknown = set(msteams) - _MSTEAMS_KEYS
    if unknown:
        out.append(f"unknown msteams properties {sorted(unknown)}")
    if "width" in msteams and msteams["width"] != "Full":
        out.append(f"msteams.width={msteams['width']!r} is not 'Full'")
    entities = msteams.get("entities", [])
    if not isinstance(entities, list):
        out.append("msteams.entities must be a list")
        return
    for i, entity in enumerate(entities):
        where = f"msteams.entities[{i}]"
        if not isinstance(entity, dict) or entity.get("type") != "mention":
            out.append(f"{where} must be an object of type 'mention'")
            continue
        text = entity.get("text")
        if not (isinstance(text, str) and text.startswith("<at>") and text.endswith("</at>")):
            out.append(f"{where}.text must be '<at>Name</at>'")
        elif not any(text in shown for shown in texts):
            out.append(f"{where}.text {text!r} is in no TextBlock: Teams would not mention")
        mentioned = entity.get("mentioned")
        if not (
            isinstance(mentioned, dict)
            and isinstance(mentioned.get("id"), str)
            and mentioned["id"]
            and isinstance(mentioned.get("name"), str)
        ):
            out.append(f"{where}.mentioned needs a string id and name")


def _texts(elements: list[Any]) -> list[str]:
    """Every TextBlock text in ``elements``, containers and columns included."""
    found: list[str] = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        if element.get("type") == "TextBlock" and isinstance(element.get("text"), str):
            found.append(element["text"])
        found.extend(_texts(element.get("items", [])))
        for column in element.get("columns", []):
            if isinstance(column, dict):
                found.extend(_texts(column.get("items", [])))
    return found


def _enum(element: dict[str, Any], key: str, allowed: set[str], where: str, out: list[str]) -> None:
    if key in element and str(element[key]).lower() not in allowed:
        out.append(f"{where}.{key}={element[key]!r} is not one of {sorted(allowed)}")


def _element(element: Any, where: str, out: list[str]) -> None:
    if not isinstance(element, dict):
        out.append(f"{where} is not an object")
        return
    kind = element.get("type")
    if kind not in ELEMENT_TYPES:
        out.append(f"{where}.type {kind!r} is not an Adaptive Card 1.5 element")
        return
    _enum(element, "spacing", _SPACINGS, where, out)
    if "separator" in element and not isinstance(element["separator"], bool):
        out.append(f"{where}.separator must be a boolean")
    if kind == "TextBlock":
        if not isinstance(element.get("text"), str) or not element["text"]:
            out.append(f"{where}: a TextBlock needs a non-empty text")
        _enum(element, "color", _COLORS, where, out)
        _enum(element, "size", _SIZES, where, out)
        _enum(element, "weight", _WEIGHTS, where, out)
        _enum(element, "fontType", _FONT_TYPES, where, out)
        for flag in ("wrap", "isSubtle"):
            if flag in element and not isinstance(element[flag], bool):
                out.append(f"{where}.{flag} must be a boolean")
    elif kind == "FactSet":
        facts = element.get("facts")
        if not isinstance(facts, list) or not facts:
            out.append(f"{where}: a FactSet needs a non-empty facts list")
        else:
            for j, fact in enumerate(facts):
                if not (
                    isinstance(fact, dict)
                    and isinstance(fact.get("title"), str)
                    and isinstance(fact.get("value"), str)
                ):
                    out.append(f"{where}.facts[{j}] needs string title and value")
    elif kind == "Container":
        _enum(element, "style", _CONTAINER_STYLES, where, out)
        items = element.get("items")
        if not isinstance(items, list):
            out.append(f"{where}: a Container needs items")
        else:
            for j, item in enumerate(items):
                _element(item, f"{where}.items[{j}]", out)
    elif kind == "ColumnSet":
        for j, column in enumerate(element.get("columns", [])):
            if not isinstance(column, dict) or column.get("type", "Column") != "Column":
                out.append(f"{where}.columns[{j}] must be a Column")
                continue
            for k, item in enumerate(column.get("items", [])):
                _element(item, f"{where}.columns[{j}].items[{k}]", out)
    elif kind == "ActionSet":
        for j, action in enumerate(element.get("actions", [])):
            _action(action, f"{where}.actions[{j}]", out)
    elif kind == "Image" and not isinstance(element.get("url"), str):
        out.append(f"{where}: an Image needs a url")


def _action(action: Any, where: str, out: list[str], *, in_fallback: bool = False) -> None:
    if not isinstance(action, dict):
        out.append(f"{where} is not an object")
        return
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        out.append(f"{where}.type {kind!r} is not an Adaptive Card 1.5 action")
        return
    if not isinstance(action.get("title"), str) or not action["title"]:
        out.append(f"{where}: a button needs a title")
    _enum(action, "style", _ACTION_STYLES, where, out)
    if kind == "Action.Execute" and not isinstance(action.get("verb"), str):
        out.append(f"{where}: Action.Execute needs a verb")
    data_ok = isinstance(action.get("data", {}), dict | str)
    if kind in {"Action.Execute", "Action.Submit"} and not data_ok:
        out.append(f"{where}.data must be an object or a string")
    if kind == "Action.OpenUrl" and not isinstance(action.get("url"), str):
        out.append(f"{where}: Action.OpenUrl needs a url")
    if "fallback" in action:
        fallback = action["fallback"]
        if fallback == "drop":
            return
        if in_fallback:
            out.append(f"{where}.fallback nested too deep")
        elif isinstance(fallback, dict) and fallback.get("type") == "Action.Execute":
            out.append(f"{where}.fallback must be an older action, not Action.Execute")
        else:
            _action(fallback, f"{where}.fallback", out, in_fallback=True)
