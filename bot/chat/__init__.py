"""Chat surfaces: console (terminal), and later Slack and Teams."""

from bot.chat.base import ChatSurface, Conversation, MessageRef

__all__ = ["ChatSurface", "Conversation", "MessageRef"]
