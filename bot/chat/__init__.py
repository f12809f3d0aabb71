"""Chat surfaces: console (terminal), Slack, and later Teams."""

from bot.chat.base import ChatSurface

__all__ = ["ChatSurface"]
