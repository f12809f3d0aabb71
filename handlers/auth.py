"""Roles from configuration: everyone views, SMS_OPERATORS change, SMS_APPROVERS approve."""

from __future__ import annotations

from bot.catalogue import Role
from bot.config import Settings
from bot.errors import NotAllowed

__all__ = ["LOCAL_SOURCES", "TEAMS_PREFIX", "authorize", "roles_of"]

# The terminal surfaces: whoever runs them already has a shell on the bot's host.
LOCAL_SOURCES = frozenset({"console", "cli"})
# How SMS_OPERATORS and SMS_APPROVERS name a Teams user: teams:<aadObjectId>.
TEAMS_PREFIX = "teams:"


def _key(user: str) -> str:
    """Teams users (``teams:<aadObjectId>``) compared without case: a GUID has none."""
    return user.lower() if user.lower().startswith(TEAMS_PREFIX) else user


def roles_of(user: str, source: str, settings: Settings) -> frozenset[Role]:
    roles = {Role.VIEWER}
    me = _key(user)
    operators = {_key(u) for u in settings.sms_operators}
    approvers = {_key(u) for u in settings.sms_approvers}
    if me in operators or me in approvers:
        roles.add(Role.OPERATOR)
    if source in LOCAL_SOURCES:
        roles.add(Role.OPERATOR)
    if me in approvers:
        roles.add(Role.APPROVER)
    return frozenset(roles)


def authorize(user: str, source: str, role: Role, settings: Settings) -> None:
    """Raise ``NotAllowed`` with a line saying which role is missing and how to get it."""
    if role in roles_of(user, source, settings):
        return
    variable = "SMS_APPROVERS" if role is Role.APPROVER else "SMS_OPERATORS"
    raise NotAllowed(f"You ({user}) need the {role.value} role for this; see {variable}.")
