"""The platform-neutral message model, and where a message lives.

Procedures and the engine speak only this; each surface renders it natively
(Block Kit, Adaptive Card, rich text) with a pure function. Everything is
frozen so a rendered message can be compared, coalesced and stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "SLACK_SPECIAL_MENTIONS",
    "TEAMS_USER_PREFIX",
    "Button",
    "CodeBlock",
    "Conversation",
    "Field",
    "Link",
    "Mention",
    "Message",
    "MessageRef",
    "Status",
    "StepView",
    "Table",
    "worst",
]


class Status(StrEnum):
    """State of a step, a check or a whole run.

    ``CRIT`` means a check ran and found a critical condition; ``FAILED``
    means a step could not do its job (timeout, dependency down). Both make
    ``sms-bot run`` exit 1; ``WARN`` alone does not.
    """

    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    WARN = "warn"
    CRIT = "crit"
    FAILED = "failed"

    @property
    def icon(self) -> str:
        return _ICONS[self]

    @property
    def is_done(self) -> bool:
        return self not in (Status.PENDING, Status.RUNNING)

    @property
    def is_bad(self) -> bool:
        return self in (Status.CRIT, Status.FAILED)


_ICONS = {
    Status.PENDING: "○",
    Status.RUNNING: "◔",
    Status.OK: "✓",
    Status.WARN: "!",
    Status.CRIT: "✗",
    Status.FAILED: "✗",
}

# Order used to pick the overall status of several results.
_SEVERITY = {
    Status.OK: 0,
    Status.PENDING: 1,
    Status.RUNNING: 1,
    Status.WARN: 2,
    Status.CRIT: 3,
    Status.FAILED: 3,
}


def worst(statuses: list[Status] | tuple[Status, ...], default: Status = Status.OK) -> Status:
    """The most severe status; FAILED wins a tie with CRIT (it says less is known)."""
    result = default
    for status in statuses:
        if _SEVERITY[status] > _SEVERITY[result] or (
            status is Status.FAILED and result is Status.CRIT
        ):
            result = status
    return result


@dataclass(frozen=True)
class Link:
    """A link: each surface makes its own (Block Kit ``<url|label>``, ``label: url`` in text).

    Links are part of the model, not markup inside text, because text is
    escaped by every renderer: a ``<url|label>`` built by hand is shown as
    written on Slack and means nothing in a terminal.
    """

    label: str
    url: str

    def __str__(self) -> str:
        return f"{self.label}: {self.url}"


@dataclass(frozen=True)
class Field:
    """A label/value pair, optionally judged (a metric against its threshold).

    The value may be a ``Link`` (a dashboard, a silence), rendered as a link.
    """

    label: str
    value: str | Link
    status: Status | None = None


@dataclass(frozen=True)
class StepView:
    """One step as the user reads it in the status message."""

    name: str
    status: Status
    duration_s: float | None = None
    summary: str = ""


@dataclass(frozen=True)
class CodeBlock:
    """Preformatted text: a log tail, a query. Surfaces truncate, never crash."""

    title: str
    text: str


@dataclass(frozen=True)
class Table:
    """A small table (containers, backups, queries)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


TEAMS_USER_PREFIX = "teams:"
"""How a Teams user id starts (``teams:<AAD object id>``), as in SMS_OPERATORS."""

# Slack's mentions of more than one person, by the id a ``Mention`` gives them.
SLACK_SPECIAL_MENTIONS = ("!channel", "!here", "!everyone")


@dataclass(frozen=True)
class Mention:
    """Someone a message calls for, notified the way their surface notifies.

    A mention is part of the model, not markup inside text, for the same
    reason a ``Link`` is: text is escaped by every renderer, and one message
    fanned out to Slack and Teams needs each surface's own mention. ``user_id``
    follows the bot's user ids: a Slack user ``U0123ABC``, a Teams user
    ``teams:<AAD object id>``; Slack's group mentions are ``!channel``,
    ``!here``, ``!everyone`` and a user group ``!subteam^S0123ABC``. Each
    surface shows only its own mentions; ``name`` is what a reader sees (a
    Teams mention needs it, Slack shows its own names).
    """

    user_id: str
    name: str = ""

    @property
    def surface(self) -> str:
        """``teams`` or ``slack``: the only surface that can notify this person."""
        return "teams" if self.user_id.startswith(TEAMS_USER_PREFIX) else "slack"

    @property
    def label(self) -> str:
        """``@Name`` as a reader without the platform sees it (a terminal, a log)."""
        if self.name:
            return self.name if self.name.startswith("@") else f"@{self.name}"
        return "@" + self.user_id.removeprefix(TEAMS_USER_PREFIX).lstrip("!")


@dataclass(frozen=True)
class Button:
    """A button: ``action`` names what a click does, ``value`` is opaque to surfaces."""

    label: str
    action: str
    value: str
    style: str | None = None  # "primary" | "danger" | None


@dataclass(frozen=True)
class Message:
    """What a surface shows: a status line, steps, fields, details and buttons."""

    title: str
    status: Status = Status.OK
    text: str = ""
    fields: tuple[Field, ...] = ()
    steps: tuple[StepView, ...] = ()
    details: tuple[CodeBlock | Table, ...] = field(default_factory=tuple)
    buttons: tuple[Button, ...] = ()
    footer: str = ""
    links: tuple[Link, ...] = ()  # shown in one line after the text (dashboards, sources)
    # Who is called, shown before the text; each surface shows only its own.
    mentions: tuple[Mention, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """A place to post: a surface, a channel and optionally a thread in it."""

    surface: str  # "console", "slack", "teams"
    channel: str = ""
    thread: str | None = None
    # Where the platform accepts answers to the event that started this (Slack's
    # response_url): used for ephemeral answers and when the bot is not in the channel.
    reply_url: str | None = None


@dataclass(frozen=True)
class MessageRef:
    """A posted message, enough to update it or reply in its thread."""

    conversation: Conversation
    id: str
