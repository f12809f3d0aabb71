"""Inbound events, normalised at the edge: nothing past a surface sees a raw payload."""

from __future__ import annotations

from dataclasses import dataclass

from bot.messages import Conversation

__all__ = ["Click", "Command"]


@dataclass(frozen=True)
class Command:
    """A command as typed (``/sms logs backend 50``), with who typed it and where."""

    text: str
    user: str
    source: str  # "console", "cli", "slack", "teams", "scheduler"
    conversation: Conversation
    proposal_id: str = ""  # set when an approved proposal started the run

    @property
    def words(self) -> list[str]:
        """The words after an optional leading ``/sms`` or ``sms``."""
        words = self.text.split()
        if words and words[0].lower() in {"/sms", "sms"}:
            words = words[1:]
        return words


@dataclass(frozen=True)
class Click:
    """A button click: which action, the opaque value the button carried, who, where.

    ``conversation.thread`` is the platform id of the message the button was on.
    """

    action: str
    value: str
    user: str
    source: str
    conversation: Conversation
