"""Roles from configuration: everyone views, SMS_OPERATORS change, SMS_APPROVERS approve."""

from __future__ import annotations

from bot.catalogue import Role
from bot.config import Settings
from bot.errors import NotAllowed

__all__ = ["LOCAL_SOURCES", "authorize", "roles_of"]

# The terminal surfaces: whoever runs them already has a shell on the bot's host.
LOCAL_SOURCES = frozenset({"console", "cli"})


def roles_of(user: str, source: str, settings: Settings) -> frozenset[Role]:
    roles = {Role.VIEWER}
    if user in settings.sms_operators or user in settings.sms_approvers:
        roles.add(Role.OPERATOR)
    if source in LOCAL_SOURCES:
        roles.add(Role.OPERATOR)
    if user in settings.sms_approvers:
        roles.add(Role.APPROVER)
    return frozenset(roles)


def authorize(user: str, source: str, role: Role, settings: Settings) -> None:
    """Raise ``NotAllowed`` with a line saying which role is missing and how to get it."""
    if role in roles_of(user, source, settings):
        return
    variable = "SMS_APPROVERS" if role is Role.APPROVER else "SMS_OPERATORS"
    raise NotAllowed(f"You ({user}) need the {role.value} role for this; see {variable}.")
