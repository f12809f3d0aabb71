"""What every chat surface offers the engine, and where a message lives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.messages import Message

__all__ = ["ChatSurface", "Conversation", "MessageRef"]


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


class ChatSurface(Protocol):
    """A surface renders the neutral model natively; nothing else knows the platform."""

    name: str

    async def post(self, where: Conversation, msg: Message) -> MessageRef: ...

    async def update(self, ref: MessageRef, msg: Message) -> None: ...

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        """Post ``msg`` in ``ref``'s thread; ``key``, when given, becomes the new ref's id."""
        ...

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        """Show ``msg`` to ``user`` only (usage errors, refusals, help)."""
        ...
