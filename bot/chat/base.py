"""What every chat surface offers the engine.

Where a message lives (``Conversation``, ``MessageRef``) belongs to the
message model in ``bot.messages``.
"""

from __future__ import annotations

from typing import Protocol

from bot.messages import Conversation, Message, MessageRef

__all__ = ["ChatSurface"]


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
