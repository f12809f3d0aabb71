"""Pure renderer of the neutral message model to an Adaptive Card (1.5) for Teams.

The card goes into an activity's attachment
(``application/vnd.microsoft.card.adaptive``) for a post, an update or an
invoke response. Teams refuses a whole message over 28 KB, and a refused
progress update is worse than a shortened one: the size is therefore
enforced here for any input, by cutting the details first (log tails keep
their last lines, tables their first rows), then the step list, and saying
so in a note on the card, never by raising.

Size is measured the way the connector receives it: ``json.dumps`` with its
defaults (``ensure_ascii``, so one emoji counts as twelve bytes), which is
never less than what Teams counts. The budget leaves room for the activity
around the card (ids, conversation, service URL).

Text shown as markdown (TextBlock, Fact title/value) has every character
that Teams' markdown reads escaped with a backslash, so a log line such as
``**boom**`` or ``[click](http://evil)`` is shown as written. The only links
are the model's ``Link`` values, made here, and only for http(s) URLs.

Mentions are the model's Teams ``Mention`` values (Slack's are left to
Slack), shown as Teams does: ``<at>Name</at>`` before the text, and for each
the card-level ``msteams.entities`` entry naming the AAD object id, without
which Teams shows the name as text and notifies nobody.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from rich.cells import cell_len

from bot.chat.render_text import _clean, _link_url, _one_line, _table_cells, format_duration
from bot.messages import (
    TEAMS_USER_PREFIX,
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

__all__ = [
    "CARD_CONTENT_TYPE",
    "CARD_VERSION",
    "MAX_CARD_BYTES",
    "MAX_MESSAGE_BYTES",
    "STATUS_COLOR",
    "STATUS_STYLE",
    "card_size",
    "escape_markdown",
    "markdown_link",
    "teams_mentions",
    "to_adaptive_card",
]

CARD_VERSION: Final = "1.5"
CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES: Final = 28 * 1024
"""Teams' limit for one message, the whole activity included."""
MAX_CARD_BYTES: Final = MAX_MESSAGE_BYTES - 4 * 1024
"""What the card may use: 4 KB stay for the activity around it."""

# Caps applied before the size budget, so one pathological value cannot
# make every other part of the card disappear.
_MAX_TITLE: Final = 200
_MAX_TEXT: Final = 4000
_MAX_FACT: Final = 500
_MAX_LINE: Final = 300
_MAX_CODE_LINES: Final = 200
_MAX_TABLE_ROWS: Final = 100
_MAX_BUTTON_TITLE: Final = 60
_MAX_FOOTER: Final = 500
_MAX_MENTIONS: Final = 20
_MAX_MENTION_NAME: Final = 100

STATUS_STYLE: dict[Status, str] = {
    Status.PENDING: "emphasis",
    Status.RUNNING: "accent",
    Status.OK: "good",
    Status.WARN: "warning",
    Status.CRIT: "attention",
    Status.FAILED: "attention",
}
"""Container style of the header for each status (Adaptive Card 1.5 styles)."""

STATUS_COLOR: dict[Status, str] = {
    Status.PENDING: "default",
    Status.RUNNING: "accent",
    Status.OK: "good",
    Status.WARN: "warning",
    Status.CRIT: "attention",
    Status.FAILED: "attention",
}
"""TextBlock colour of the header and of a step line for each status."""

_BUTTON_STYLE = {"primary": "positive", "danger": "destructive"}

# Characters Teams' markdown gives a meaning to, anywhere in a line.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]()~<>#|{}!&])")
# At the start of a line: list markers, quotes, headings, numbered lists.
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))", re.MULTILINE)
_NBSP: Final = "\u00a0"
# What a name inside <at>...</at> may not hold: the tag's own brackets and markdown.
_MENTION_NAME_DROP = re.compile(r"[\\`*_\[\]()~<>#|{}!&]")


def escape_markdown(text: str, *, line_start: bool = True) -> str:
    """``text`` shown as written by a TextBlock with markdown (backslash escapes).

    ``line_start=False`` for a piece placed after other text on its line,
    where a leading ``1.`` or ``-`` means nothing and needs no escape.
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", text)
    if not line_start and "\n" not in text:
        return escaped
    return _MD_LINE_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", escaped)


def markdown_link(link: Link) -> str:
    """``[label](url)``; a URL that is not http(s) is shown as text, never made a link."""
    url = _link_url(link)
    label = _clip(_one_line(link.label), _MAX_FACT) or url
    if not re.match(r"^https?://[^\s]+$", url, re.IGNORECASE):
        return escape_markdown(f"{label}: {url}" if url and url != label else label)
    # Characters that would end the link destination or break the markdown are encoded.
    safe_url = quote(url, safe="/:?#[]@!$&'*+,;=%-._~")
    safe_url = safe_url.replace("(", "%28").replace(")", "%29")
    safe_url = safe_url.replace("[", "%5B").replace("]", "%5D")
    return f"[{escape_markdown(label)}]({safe_url})"


def teams_mentions(mentions: tuple[Mention, ...]) -> tuple[str, list[dict[str, Any]]]:
    """``<at>Name</at> ...`` for the text, and the ``msteams.entities`` that make them mentions.

    Teams pairs a tag with its entity by the exact tag text, so the name is
    made one plain line (no brackets, no markdown) used in both. Slack
    mentions, and a Teams mention without an id, are left out.
    """
    tags: list[str] = []
    entities: list[dict[str, Any]] = []
    seen: set[str] = set()
    for mention in mentions:
        if mention.surface != "teams":
            continue
        aad_id = mention.user_id.removeprefix(TEAMS_USER_PREFIX).strip()
        if not aad_id or aad_id in seen or len(entities) >= _MAX_MENTIONS:
            continue
        seen.add(aad_id)
        name = _one_line(_MENTION_NAME_DROP.sub("", mention.name.removeprefix("@")))
        tag = f"<at>{_clip(name, _MAX_MENTION_NAME) or aad_id}</at>"
        tags.append(tag)
        entities.append(
            {
                "type": "mention",
                "text": tag,
                "mentioned": {"id": aad_id, "name": _one_line(mention.name) or aad_id},
            }
        )
    return " ".join(tags), entities


def card_size(card: dict[str, Any]) -> int:
    """Bytes of the card as the connector receives it (an upper bound)."""
    return len(json.dumps(card).encode("utf-8"))


@dataclass(frozen=True)
class _Budget:
    """How much of the message a rendering keeps; smaller until the card fits."""

    detail_lines: int  # per code block / table; -1 drops the details
    steps: int
    text: int = _MAX_TEXT
    facts: int = 100


def to_adaptive_card(msg: Message) -> dict[str, Any]:
    """The message as an Adaptive Card 1.5 that always fits ``MAX_CARD_BYTES``."""
    longest = max(
        [
            0,
            *(
                len(_code_lines(d)) if isinstance(d, CodeBlock) else len(d.rows) + 1
                for d in msg.details
            ),
        ]
    )
    full = _Budget(detail_lines=min(longest, _MAX_CODE_LINES), steps=len(msg.steps))
    card = _render(msg, full)
    if card_size(card) <= MAX_CARD_BYTES:
        return card
    # 1. Details: the largest number of lines per block that fits (binary search).
    fitting = _largest(
        lambda n: _render(msg, _Budget(detail_lines=n, steps=len(msg.steps))),
        full.detail_lines,
    )
    if fitting is not None:
        return fitting
    # 2. Without details, the largest number of steps that fits.
    fitting = _largest(lambda n: _render(msg, _Budget(detail_lines=-1, steps=n)), len(msg.steps))
    if fitting is not None:
        return fitting
    # 3. A huge text or field list: cut those too; the title and a note always fit.
    for text, facts in ((1000, 20), (200, 5), (0, 0)):
        card = _render(msg, _Budget(detail_lines=-1, steps=0, text=text, facts=facts))
        if card_size(card) <= MAX_CARD_BYTES:
            return card
    return _render(msg, _Budget(detail_lines=-1, steps=0, text=0, facts=0), minimal=True)


def _largest(render: Callable[[int], dict[str, Any]], upper: int) -> dict[str, Any] | None:
    """The card for the largest ``n`` in ``0..upper`` whose rendering fits, or None."""
    low, high, best = 0, upper, None
    while low <= high:
        middle = (low + high) // 2
        card = render(middle)
        if card_size(card) <= MAX_CARD_BYTES:
            best, low = card, middle + 1
        else:
            high = middle - 1
    return best


def _render(msg: Message, budget: _Budget, *, minimal: bool = False) -> dict[str, Any]:
    body: list[dict[str, Any]] = [_header(msg)]
    notes: list[str] = []
    tags, entities = teams_mentions(msg.mentions)
    if not minimal:
        text = _clean(msg.text).strip()
        shown = escape_markdown(_clip(text, budget.text)) if text and budget.text > 0 else ""
        if tags or shown:
            body.append(_text_block(f"{tags} {shown}".strip()))
        if msg.links:
            body.append(_text_block(" · ".join(markdown_link(link) for link in msg.links)))
        if msg.fields and budget.facts > 0:
            body.append(
                {"type": "FactSet", "facts": [_fact(f) for f in msg.fields[: budget.facts]]}
            )
            if len(msg.fields) > budget.facts:
                notes.append(f"{len(msg.fields) - budget.facts} fields not shown")
        body.extend(_steps(msg.steps, budget.steps, notes))
        body.extend(_details(msg.details, budget.detail_lines, notes))
    else:
        if tags:
            body.append(_text_block(tags))
        notes.append("the message is too large for Teams; see the bot's log or the terminal")
    footer = _one_line(msg.footer)
    if footer:
        body.append(
            _text_block(escape_markdown(_clip(footer, _MAX_FOOTER)), size="Small", subtle=True)
        )
    if notes:
        body.append(
            _text_block(
                "Details truncated to fit Teams' 28 KB message limit: "
                + escape_markdown("; ".join(notes))
                + ".",
                size="Small",
                subtle=True,
                italic=True,
            )
        )
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full", **({"entities": entities} if entities else {})},
    }
    if msg.buttons:
        card["actions"] = [_action(b) for b in msg.buttons]
    return card


def _header(msg: Message) -> dict[str, Any]:
    title = escape_markdown(_clip(_one_line(msg.title), _MAX_TITLE), line_start=False) or "\u2014"
    return {
        "type": "Container",
        "style": STATUS_STYLE[msg.status],
        "bleed": True,
        "items": [
            {
                "type": "TextBlock",
                "text": f"{msg.status.icon} {title}",
                "weight": "Bolder",
                "size": "Medium",
                "color": STATUS_COLOR[msg.status],
                "wrap": True,
            },
            {
                "type": "TextBlock",
                "text": msg.status.value.upper(),
                "size": "Small",
                "isSubtle": True,
                "spacing": "None",
                "wrap": True,
            },
        ],
    }


def _text_block(
    text: str,
    *,
    size: str | None = None,
    subtle: bool = False,
    italic: bool = False,
    color: str | None = None,
) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "TextBlock", "text": text, "wrap": True}
    if size:
        block["size"] = size
    if subtle:
        block["isSubtle"] = True
    if italic:
        block["text"] = f"_{text}_"
    if color:
        block["color"] = color
    return block


def _fact(f: Field) -> dict[str, str]:
    if isinstance(f.value, Link):
        value = markdown_link(f.value)
    else:
        value = escape_markdown(_clip(_one_line(f.value), _MAX_FACT))
    if f.status is not None:
        value = f"{value} {f.status.icon} {f.status.value.upper()}".strip()
    return {
        "title": escape_markdown(_clip(_one_line(f.label), _MAX_FACT)) or "\u2014",
        "value": value or "\u2014",
    }


def _steps(steps: tuple[StepView, ...], keep: int, notes: list[str]) -> list[dict[str, Any]]:
    """One line per step; consecutive steps of one colour share a TextBlock.

    A block per step costs about 100 bytes of JSON around a 30-byte line,
    which would let a 200-step run alone fill the 28 KB; sharing keeps the
    colour of warning and failed steps at a fraction of that.
    """
    if not steps:
        return []
    shown = steps[max(len(steps) - keep, 0) :] if keep > 0 else ()
    if len(shown) < len(steps):
        notes.append(f"{len(steps) - len(shown)} earlier steps not shown")
    blocks: list[dict[str, Any]] = []
    run: list[str] = []
    run_color: str | None = None
    for step in shown:
        color = _step_color(step.status)
        if run and color != run_color:
            blocks.append(_text_block("\n".join(run), color=run_color))
            run = []
        run.append(_step_line(step))
        run_color = color
    if run:
        blocks.append(_text_block("\n".join(run), color=run_color))
    for i, block in enumerate(blocks):
        block["spacing"] = "Small" if i == 0 else "None"
    if blocks:
        blocks[0]["separator"] = True
    return blocks


def _step_line(step: StepView) -> str:
    name = escape_markdown(_clip(_one_line(step.name), _MAX_LINE), line_start=False)
    parts = [f"{step.status.icon} **{name}**"]
    if step.duration_s is not None:
        parts.append(format_duration(step.duration_s))
    summary = _one_line(step.summary)
    if summary:
        parts.append(escape_markdown(_clip(summary, _MAX_LINE), line_start=False))
    return " \u00b7 ".join(parts)


def _step_color(status: Status) -> str | None:
    return STATUS_COLOR[status] if status in (Status.WARN, Status.CRIT, Status.FAILED) else None


def _details(
    details: tuple[CodeBlock | Table, ...], lines: int, notes: list[str]
) -> list[dict[str, Any]]:
    if not details:
        return []
    if lines < 0:
        notes.append(f"{len(details)} detail blocks not shown")
        return []
    blocks: list[dict[str, Any]] = []
    cut = 0
    for detail in details:
        title = _one_line(detail.title)
        if title:
            blocks.append(
                _text_block(f"**{escape_markdown(_clip(title, _MAX_LINE), line_start=False)}**")
            )
        if isinstance(detail, CodeBlock):
            all_lines = _code_lines(detail)
            kept = all_lines[max(len(all_lines) - lines, 0) :] if lines > 0 else []
            if len(kept) < len(all_lines):
                cut += 1
                kept = [f"… {len(all_lines) - len(kept)} earlier lines not shown", *kept]
        else:
            all_lines = _table_lines(detail)
            kept = all_lines[:lines] if lines > 0 else []
            if len(kept) < len(all_lines):
                cut += 1
                kept = [*kept, f"… {len(all_lines) - len(kept)} more rows not shown"]
        if kept:
            blocks.append(_monospace(kept))
    if cut:
        notes.append(f"{cut} detail blocks shortened")
    return blocks


def _code_lines(block: CodeBlock) -> list[str]:
    text = _clean(block.text).expandtabs(4).rstrip("\n")
    lines = text.split("\n") if text else []
    if len(lines) > _MAX_CODE_LINES:
        lines = lines[-_MAX_CODE_LINES:]
    return [_clip(line.rstrip(), _MAX_LINE) for line in lines]


def _table_lines(table: Table) -> list[str]:
    header, rows = _table_cells(table)
    if not header:
        return []
    rows = rows[:_MAX_TABLE_ROWS]
    cells = [[_clip(c, _MAX_LINE // max(len(header), 1)) for c in row] for row in [header, *rows]]
    widths = [max(cell_len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [c + " " * (w - cell_len(c)) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return lines


def _monospace(lines: list[str]) -> dict[str, Any]:
    """Preformatted lines: markdown escaped, spaces kept (non-breaking), one line each."""
    shown = [escape_markdown(line).replace(" ", _NBSP) or _NBSP for line in lines]
    return {
        "type": "TextBlock",
        "text": "\n".join(shown),
        "fontType": "Monospace",
        "size": "Small",
        "wrap": True,
    }


def _action(button: Button) -> dict[str, Any]:
    """``Action.Execute`` (Universal Actions) with an ``Action.Submit`` fallback.

    The data carries only the action and the value (a proposal id): the
    click is judged against the stored proposal, never against the card.
    Clients without Universal Actions send the fallback as a message
    activity whose ``value`` is the same data.
    """
    title = _clip(_one_line(button.label), _MAX_BUTTON_TITLE) or button.action
    data = {"action": button.action, "value": button.value}
    action: dict[str, Any] = {
        "type": "Action.Execute",
        "title": title,
        "verb": button.action,
        "data": data,
        "fallback": {"type": "Action.Submit", "title": title, "data": dict(data)},
    }
    style = _BUTTON_STYLE.get(button.style or "")
    if style:
        action["style"] = style
        action["fallback"]["style"] = style
    return action


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"
