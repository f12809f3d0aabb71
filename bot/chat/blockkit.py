"""Pure renderers of the neutral message model to Slack Block Kit payloads.

The result goes straight into ``chat.postMessage`` / ``chat.update`` (or a
``response_url``) as ``{"text": ..., "blocks": [...]}``. Slack rejects the
whole message (``invalid_blocks``) when one limit is broken, and a rejected
progress update is worse than a shortened one: every limit is therefore
enforced here, for any input, by cutting content and saying so in the
message ("… 310 earlier lines not shown"), never by raising.

Lengths are measured in UTF-16 code units, which is never less than the
character count Slack checks, so an emoji-heavy log line cannot slip past a
limit. Text that Slack parses as mrkdwn has ``&``, ``<`` and ``>`` escaped,
inside code fences too (Slack documents no exception there), so log lines
such as ``<!channel>`` or ``<http://evil|click>`` are shown, not acted on.
The only links in a message are the model's ``Link`` values, made here, and
the only mentions its Slack ``Mention`` values (``<@U0123>``, ``<!channel>``,
``<!subteam^S0123>``), put before the text; Teams mentions are left to Teams.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from rich.cells import cell_len

from bot.chat.render_text import _clean, _link_url, _one_line, _table_cells, format_duration
from bot.messages import (
    SLACK_SPECIAL_MENTIONS,
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
    "ACTION_SEPARATOR",
    "MAX_ACTIONS_PER_BLOCK",
    "MAX_ACTION_ID",
    "MAX_BLOCKS",
    "MAX_BUTTON_TEXT",
    "MAX_BUTTON_VALUE",
    "MAX_CONTEXT_ELEMENTS",
    "MAX_FALLBACK_TEXT",
    "MAX_FIELDS_PER_SECTION",
    "MAX_FIELD_TEXT",
    "MAX_HEADER_TEXT",
    "MAX_SECTION_TEXT",
    "STATUS_EMOJI",
    "base_action",
    "ephemeral_text",
    "escape_mrkdwn",
    "mrkdwn_link",
    "slack_mention",
    "text_length",
    "to_block_kit",
    "to_thread_reply",
]

# -- Slack's limits (Block Kit reference) --------------------------------------

MAX_BLOCKS: Final = 50
"""Blocks in one message (modals and Home tabs allow 100, messages 50)."""
MAX_SECTION_TEXT: Final = 3000
MAX_HEADER_TEXT: Final = 150
MAX_FIELDS_PER_SECTION: Final = 10
MAX_FIELD_TEXT: Final = 2000
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_CONTEXT_TEXT: Final = 3000
MAX_ACTIONS_PER_BLOCK: Final = 25
MAX_BUTTON_TEXT: Final = 75
MAX_BUTTON_VALUE: Final = 2000
MAX_ACTION_ID: Final = 255
MAX_FALLBACK_TEXT: Final = 3000
"""Our own bound on the notification text; Slack only truncates past 40,000."""

ACTION_SEPARATOR: Final = "#"
"""Separates a button's ``action`` from the ``#2`` that keeps action_ids unique."""

STATUS_EMOJI: dict[Status, str] = {
    Status.PENDING: ":white_circle:",
    Status.RUNNING: ":hourglass_flowing_sand:",
    Status.OK: ":white_check_mark:",
    Status.WARN: ":warning:",
    Status.CRIT: ":red_circle:",
    Status.FAILED: ":x:",
}
"""The emoji shortcode shown for each status, in every block that shows one."""

# -- our own layout budget ----------------------------------------------------

_MAX_STEP_SECTIONS = 3
_MAX_FIELD_SECTIONS = 3
_MAX_ACTION_BLOCKS = 2
_MAX_TEXT_LINE = 600  # one step summary, one field label, one code line...
_MAX_STEP_NAME = 200
_MAX_CELL = 40  # a table cell; wider cells would push every other column out
_MAX_FALLBACK_PART = 300  # title, first line: a notification is read at a glance
_NOTE_RESERVE = 200  # room kept in a section for a "… N not shown" note
_ELLIPSIS = "…"
_FENCE = "```"
_ZWSP = "\u200b"
_LABEL_PIPE = "¦"
_LINK_SEPARATOR = " · "
_MAX_MENTIONS = 20
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{1,30}$")
_SLACK_GROUP = re.compile(r"^!subteam\^S[A-Z0-9]{1,30}$")


# -- text helpers ---------------------------------------------------------------


def escape_mrkdwn(text: str) -> str:
    """``&``, ``<`` and ``>`` as HTML entities: the only escaping Slack asks for.

    Slack reads ``<...>`` as links and mentions and ``&`` as the start of an
    entity; everything else (``*``, ``_``) stays as written so a procedure can
    still format its text.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_link(link: Link, *, limit: int = _MAX_TEXT_LINE) -> str:
    """``<url|label>``, escaped the way Slack reads it, within ``limit`` units.

    ``&``, ``<`` and ``>`` become entities in both parts. A ``|`` would end
    the url early or split the label, and Slack has no escape for it: in the
    url it is percent-encoded (the same address), in the label it becomes
    ``¦``. A url cannot be cut, so one too long for ``limit`` is shown as its
    label alone rather than as a broken link.
    """
    url = _link_url(link).replace("|", "%7C")
    label = _one_line(link.label).replace("|", _LABEL_PIPE) or url
    markup = f"<{escape_mrkdwn(url)}|{escape_mrkdwn(label)}>"
    if url and text_length(markup) <= limit:
        return markup
    return _clip(label, limit)


def slack_mention(mention: Mention) -> str | None:
    """``<@U0123>``, ``<!channel>``, ``<!subteam^S0123>``; None for anyone Slack cannot notify.

    Only ids of Slack's shapes are made markup, so a mention can never carry
    a link or another mention into the message.
    """
    if _SLACK_USER.match(mention.user_id):
        return f"<@{mention.user_id}>"
    if mention.user_id in SLACK_SPECIAL_MENTIONS or _SLACK_GROUP.match(mention.user_id):
        return f"<{mention.user_id}>"
    return None


def _mentions_markup(mentions: tuple[Mention, ...]) -> str:
    seen: list[str] = []
    for mention in mentions:
        markup = slack_mention(mention)
        if markup is not None and markup not in seen:
            seen.append(markup)
    return " ".join(seen[:_MAX_MENTIONS])


def text_length(text: str) -> int:
    """Length in UTF-16 code units: an upper bound of what Slack counts."""
    return len(text.encode("utf-16-le")) // 2


def base_action(action_id: str) -> str:
    """The button's ``action`` from an ``action_id`` (``restart#2`` -> ``restart``)."""
    return action_id.split(ACTION_SEPARATOR, 1)[0]


def _clip(text: str, limit: int, *, escape: bool = True, keep_end: bool = False) -> str:
    """``text`` (escaped for mrkdwn unless ``escape`` is false) in ``limit`` units.

    The cut is marked with ``…`` and happens on the raw text, so an entity
    such as ``&amp;`` is never split in half. ``keep_end`` keeps the tail.
    """
    convert = escape_mrkdwn if escape else _identity
    whole = convert(text)
    if text_length(whole) <= limit:
        return whole
    budget = limit - text_length(_ELLIPSIS)

    def piece(n: int) -> str:
        return convert(text[len(text) - n :] if keep_end else text[:n])

    # The longest raw prefix (or suffix) whose converted form fits. Each raw
    # character costs at least one unit, so no more than ``budget`` of them.
    low, high = 0, min(len(text), max(budget, 0))
    if convert is _identity and text.isascii():
        # Exactly one unit per character: no search needed (table cells, every
        # render of a long table; the search costs a UTF-16 encoding per step).
        low = high
    while low < high:
        mid = (low + high + 1) // 2
        if text_length(piece(mid)) <= budget:
            low = mid
        else:
            high = mid - 1
    return _ELLIPSIS + piece(low) if keep_end else piece(low) + _ELLIPSIS


def _identity(text: str) -> str:
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str) -> dict[str, Any]:
    # emoji=True turns ":warning:" into the emoji in plain_text objects.
    return {"type": "plain_text", "text": text, "emoji": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _pack(lines: list[str], limit: int) -> list[str]:
    """Consecutive lines joined into as few texts of at most ``limit`` units as fit."""
    chunks: list[list[str]] = []
    size = 0
    for line in lines:
        length = text_length(line)
        if chunks and size + 1 + length <= limit:
            chunks[-1].append(line)
            size += 1 + length
        else:
            chunks.append([line])
            size = length
    return ["\n".join(chunk) for chunk in chunks]


# -- pieces -----------------------------------------------------------------------


def _title_line(msg: Message) -> str:
    """The title as one clean line; the status word stands in for an empty one."""
    return _one_line(msg.title) or msg.status.value.upper()


def _header(msg: Message) -> dict[str, Any]:
    emoji = STATUS_EMOJI[msg.status]
    title = _clip(_title_line(msg), MAX_HEADER_TEXT - len(emoji) - 1, escape=False)
    return {"type": "header", "text": _plain(f"{emoji} {title}")}


def _title_section(msg: Message) -> dict[str, Any]:
    emoji = STATUS_EMOJI[msg.status]
    title = _clip(_title_line(msg), _MAX_TEXT_LINE)
    return _section(f"{emoji} *{title}*")


def _text_section(text: str, *, lead: str = "") -> dict[str, Any] | None:
    """The text, escaped, after ``lead`` (mentions: markup, never escaped) on its first line."""
    cleaned = _clean(text).strip("\n").rstrip()
    if not cleaned.strip():
        return _section(lead) if lead else None
    prefix = f"{lead} " if lead else ""
    escaped = prefix + escape_mrkdwn(cleaned)
    if text_length(escaped) <= MAX_SECTION_TEXT:
        return _section(escaped)
    # Cut at a line boundary when there is one, and say how much is missing.
    lines = cleaned.split("\n")
    kept: list[str] = []
    used = 0
    budget = MAX_SECTION_TEXT - _NOTE_RESERVE - text_length(prefix)
    for line in lines:
        piece = _clip(line, budget - used) if not kept else escape_mrkdwn(line)
        size = text_length(piece) + (1 if kept else 0)
        if used + size > budget:
            break
        kept.append(piece)
        used += size
    hidden = len(lines) - len(kept)
    note = f"_{_ELLIPSIS} {_plural(hidden, 'more line')} not shown_" if hidden else ""
    return _section(prefix + ("\n".join([*kept, note]) if note else "\n".join(kept)))


def _step_line(step: StepView) -> str:
    parts = [f"{STATUS_EMOJI[step.status]} *{_clip(_one_line(step.name), _MAX_STEP_NAME)}*"]
    if step.duration_s is not None:
        parts.append(format_duration(step.duration_s))
    elif step.status is Status.RUNNING:
        parts.append(_ELLIPSIS)
    summary = _one_line(step.summary)
    if summary:
        parts.append(_clip(summary, _MAX_TEXT_LINE))
    return " · ".join(parts)


def _hidden_steps_note(hidden: Iterable[StepView]) -> str:
    """``… 12 earlier steps not shown: 10 :white_check_mark: 2 :x:``.

    The counts per status keep an early failure visible after it scrolled out.
    """
    steps = list(hidden)
    counts = Counter(step.status for step in steps)
    tally = " ".join(f"{counts[s]} {STATUS_EMOJI[s]}" for s in Status if counts[s])
    return f"_{_ELLIPSIS} {_plural(len(steps), 'earlier step')} not shown:_ {tally}"


def _step_sections(steps: tuple[StepView, ...]) -> list[dict[str, Any]]:
    """One line per step, in as few sections as fit; newest steps win when cut."""
    if not steps:
        return []
    lines = [_step_line(step) for step in steps]
    packed = _pack(lines, MAX_SECTION_TEXT)
    if len(packed) <= _MAX_STEP_SECTIONS:
        return [_section(text) for text in packed]
    # Fill sections from the end, leaving room for the note in each.
    budget = MAX_SECTION_TEXT - _NOTE_RESERVE
    chunks: list[list[str]] = [[]]
    size = 0
    kept = 0
    for line in reversed(lines):
        length = text_length(line)
        if chunks[0] and size + 1 + length > budget:
            if len(chunks) == _MAX_STEP_SECTIONS:
                break
            chunks.insert(0, [])
            size = 0
        chunks[0].insert(0, line)
        size += length + (1 if len(chunks[0]) > 1 else 0)
        kept += 1
    if kept < len(steps):
        chunks[0].insert(0, _hidden_steps_note(steps[: len(steps) - kept]))
    return [_section("\n".join(chunk)) for chunk in chunks]


def _field_text(f: Field) -> str:
    label = f"*{_clip(_one_line(f.label), _MAX_TEXT_LINE)}*"
    emoji = f" {STATUS_EMOJI[f.status]}" if f.status is not None else ""
    room = MAX_FIELD_TEXT - text_length(label) - 1 - text_length(emoji)
    if isinstance(f.value, Link):
        value = mrkdwn_link(f.value, limit=room) or " "
    else:
        value = _clip(_one_line(f.value), room) or " "
    return f"{label}\n{value}{emoji}"


def _field_sections(fields: tuple[Field, ...]) -> list[dict[str, Any]]:
    if not fields:
        return []
    capacity = MAX_FIELDS_PER_SECTION * _MAX_FIELD_SECTIONS
    texts = [_field_text(f) for f in fields[:capacity]]
    if len(fields) > capacity:
        hidden = len(fields) - (capacity - 1)
        texts[-1] = f"_{_ELLIPSIS} {_plural(hidden, 'more field')} not shown_"
    return [
        {"type": "section", "fields": [_mrkdwn(t) for t in texts[i : i + MAX_FIELDS_PER_SECTION]]}
        for i in range(0, len(texts), MAX_FIELDS_PER_SECTION)
    ]


def _links_section(links: tuple[Link, ...]) -> dict[str, Any] | None:
    """All links in one line (``Grafana · Prometheus · Alertmanager``), as many as fit."""
    shown: list[str] = []
    used = 0
    budget = MAX_SECTION_TEXT - _NOTE_RESERVE
    for link in links:
        piece = mrkdwn_link(link, limit=budget)
        size = text_length(piece) + (text_length(_LINK_SEPARATOR) if shown else 0)
        if used + size > budget:
            break
        shown.append(piece)
        used += size
    if not shown:
        return None
    hidden = len(links) - len(shown)
    note = f" _{_ELLIPSIS} {_plural(hidden, 'more link')} not shown_" if hidden else ""
    return _section(_LINK_SEPARATOR.join(shown) + note)


def _fenced(lines: list[str]) -> str:
    return f"{_FENCE}\n" + "\n".join(lines) + f"\n{_FENCE}"


def _code_line(line: str) -> str:
    """One line for inside a fence: tabs expanded, escaped, no fence of its own."""
    clipped = _clip(line.expandtabs(4).rstrip(), _MAX_TEXT_LINE)
    # A "```" in a log line would close our fence early; a zero-width space breaks it.
    return clipped.replace(_FENCE, f"``{_ZWSP}`") or " "


def _code_section(block: CodeBlock) -> dict[str, Any]:
    """The last lines that fit (log tails: the newest line says what went wrong)."""
    title = _one_line(block.title)
    head = f"*{_clip(title, _MAX_TEXT_LINE)}*\n" if title else ""
    lines = _clean(block.text).rstrip("\n").split("\n")
    if lines == [""]:
        return _section(head + _fenced(["(empty)"]))
    budget = MAX_SECTION_TEXT - text_length(head) - text_length(_fenced([])) - _NOTE_RESERVE
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        piece = _code_line(line)
        size = text_length(piece) + (1 if kept else 0)
        if used + size > budget:
            break
        kept.insert(0, piece)
        used += size
    hidden = len(lines) - len(kept)
    note = f"_{_ELLIPSIS} {_plural(hidden, 'earlier line')} not shown_\n" if hidden else ""
    return _section(head + note + _fenced(kept))


def _table_section(table: Table) -> dict[str, Any]:
    """A monospace table in a fence (Slack has no table block to rely on); first rows win."""
    title = _one_line(table.title)
    head = f"*{_clip(title, _MAX_TEXT_LINE)}*\n" if title else ""
    header, rows = _table_cells(table)
    if not header:
        return _section(head + _fenced(["(empty)"]))
    header = [_clip(c, _MAX_CELL, escape=False) for c in header]
    rows = [[_clip(c, _MAX_CELL, escape=False) for c in row] for row in rows]
    widths = [max(cell_len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        padded = (c + " " * (w - cell_len(c)) for c, w in zip(cells, widths, strict=True))
        return _code_line("  ".join(padded))

    shown = [fmt(header), _code_line("  ".join("─" * w for w in widths))] if any(header) else []
    budget = MAX_SECTION_TEXT - text_length(head) - text_length(_fenced([])) - _NOTE_RESERVE
    used = sum(text_length(line) + 1 for line in shown)
    kept = 0
    for row in rows:
        line = fmt(row)
        if used + text_length(line) + 1 > budget:
            break
        shown.append(line)
        used += text_length(line) + 1
        kept += 1
    hidden = len(rows) - kept
    note = f"\n_{_ELLIPSIS} {_plural(hidden, 'more row')} not shown_" if hidden else ""
    return _section(head + _fenced(shown or ["(empty)"]) + note)


def _unique_action_ids(buttons: Iterable[Button]) -> list[str]:
    """``restart``, ``restart#2``, ``restart#3``: unique, and each within 255 units."""
    used: set[str] = set()
    result: list[str] = []
    for button in buttons:
        base = button.action or "button"
        candidate = _clip(base, MAX_ACTION_ID, escape=False)
        n = 1
        while candidate in used:
            n += 1
            suffix = f"{ACTION_SEPARATOR}{n}"
            candidate = _clip(base, MAX_ACTION_ID - len(suffix), escape=False) + suffix
        used.add(candidate)
        result.append(candidate)
    return result


def _button(button: Button, action_id: str) -> dict[str, Any]:
    label = _one_line(button.label) or base_action(action_id) or action_id
    label = _clip(label, MAX_BUTTON_TEXT, escape=False)
    element: dict[str, Any] = {"type": "button", "text": _plain(label), "action_id": action_id}
    if button.value:
        element["value"] = _clip(button.value, MAX_BUTTON_VALUE, escape=False)
    if button.style in ("primary", "danger"):
        element["style"] = button.style
    return element


def _action_blocks(buttons: tuple[Button, ...]) -> tuple[list[dict[str, Any]], int]:
    """Actions blocks of at most 25 buttons, and how many buttons did not fit."""
    capacity = MAX_ACTIONS_PER_BLOCK * _MAX_ACTION_BLOCKS
    shown = buttons[:capacity]
    elements = [_button(b, a) for b, a in zip(shown, _unique_action_ids(shown), strict=True)]
    blocks = [
        {"type": "actions", "elements": elements[i : i + MAX_ACTIONS_PER_BLOCK]}
        for i in range(0, len(elements), MAX_ACTIONS_PER_BLOCK)
    ]
    return blocks, len(buttons) - len(shown)


def _fallback(msg: Message) -> str:
    """Notification text: status word, title and the first line of the text."""
    title = _one_line(msg.title)
    line = msg.status.value.upper()
    if title:
        line += f": {_clip(title, _MAX_FALLBACK_PART)}"
    first = next((ln for ln in _clean(msg.text).split("\n") if ln.strip()), "")
    if first:
        line += f" — {_clip(_one_line(first), _MAX_FALLBACK_PART)}"
    return line


# -- public renderers ----------------------------------------------------------------


def _render(msg: Message, *, title: dict[str, Any]) -> dict[str, Any]:
    top: list[dict[str, Any]] = [title]
    text = _text_section(msg.text, lead=_mentions_markup(msg.mentions))
    if text is not None:
        top.append(text)
    links = _links_section(msg.links)
    if links is not None:
        top.append(links)
    top.extend(_step_sections(msg.steps))
    top.extend(_field_sections(msg.fields))
    actions, hidden_buttons = _action_blocks(msg.buttons)

    notes: list[str] = []
    if hidden_buttons:
        notes.append(f"{_ELLIPSIS} {_plural(hidden_buttons, 'more action')} not shown")
    # The context block (notes and footer) always gets its place in the budget.
    room = MAX_BLOCKS - len(top) - len(actions) - 1
    details = msg.details[: max(room, 0)]
    hidden_details = len(msg.details) - len(details)
    if hidden_details:
        notes.insert(0, f"{_ELLIPSIS} {_plural(hidden_details, 'more detail')} not shown")
    blocks = top + [
        _table_section(d) if isinstance(d, Table) else _code_section(d) for d in details
    ]
    blocks.extend(actions)

    context = [_mrkdwn(f"_{note}_") for note in notes]
    footer = _one_line(msg.footer)
    if footer:
        context.append(_mrkdwn(_clip(footer, MAX_CONTEXT_TEXT)))
    if context:
        blocks.append({"type": "context", "elements": context[:MAX_CONTEXT_ELEMENTS]})
    return {"text": _fallback(msg), "blocks": blocks}


def to_block_kit(msg: Message) -> dict[str, Any]:
    """``{"text", "blocks"}`` for a root message: a header with the status and title.

    Within every Slack limit whatever the message holds; what had to be cut
    is announced where it was cut.
    """
    return _render(msg, title=_header(msg))


def to_thread_reply(msg: Message) -> dict[str, Any]:
    """Like ``to_block_kit`` with a bold first line instead of a header.

    A thread fills with replies (step results, proposals); a large header on
    each would shout over the root message that carries the run's status.
    """
    return _render(msg, title=_title_section(msg))


def ephemeral_text(text: str) -> dict[str, Any]:
    """A short answer only its asker sees (usage, "not allowed"): one mrkdwn section."""
    section = _text_section(text)
    if section is None:
        section = _section(_ELLIPSIS)
    first = next((ln for ln in _clean(text).split("\n") if ln.strip()), _ELLIPSIS)
    return {"text": _clip(_one_line(first), _MAX_FALLBACK_PART), "blocks": [section]}
