"""The bot's exception tree.

Two families: ``UserError`` is an expected failure that is shown to the user
as written (bad command, unknown service, not allowed); ``AdapterError`` is an
external system that failed (Docker down, query timed out), raised by adapters
chained ``from`` the library's own exception. Anything else is a bug: it is
logged with its traceback and the user sees a short line with a reference id.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "ConfigError",
    "NotAllowed",
    "SmsBotError",
    "UnknownService",
    "UsageError",
    "UserError",
]


class SmsBotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(SmsBotError):
    """The configuration is invalid; the message names the variable."""


class UserError(SmsBotError):
    """An expected failure whose message is the answer to the user."""


class UsageError(UserError):
    """The command could not be parsed; ``usage`` says how to write it."""

    def __init__(self, message: str, *, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class UnknownService(UserError):
    """A service name that is not in ``SMS_SERVICES``."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"Unknown service {name!r}. Known services: {', '.join(sorted(known)) or '(none)'}."
        )
        self.name = name
        self.known = known


class NotAllowed(UserError):
    """The user lacks the role the command or button needs."""


class AdapterError(SmsBotError):
    """An external system failed. Each adapter subclasses this once or more."""
