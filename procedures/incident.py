"""``incident TITLE``: open an incident thread by hand, handled like an alert's."""

from __future__ import annotations

from functools import partial
from typing import Any

from bot.catalogue import CommandContext, CommandSpec, Invocation, ProcedureSpec, Role
from bot.chat.base import ChatSurface
from bot.errors import UsageError
from bot.events import Command

__all__ = ["SPEC"]

_USAGE = "/sms incident TITLE"


async def _open_incident(
    dispatcher: Any, cmd: Command, surface: ChatSurface, *, title: str
) -> None:
    incidents = dispatcher.incidents
    if incidents is None:
        raise UsageError("Incidents are not handled by this bot process.")
    await incidents.open_manual(title=title, by=cmd.user, where=cmd.conversation, surface=surface)


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    title = " ".join(args).strip()
    if not title:
        raise UsageError("What is the incident? Give it a title.", usage=_USAGE)
    if len(title) > 200:
        raise UsageError("The title is longer than 200 characters.", usage=_USAGE)
    return Invocation(name="incident", direct=partial(_open_incident, title=title))


SPEC = ProcedureSpec(
    name="incident",
    summary="An incident thread opened by hand",
    commands=(
        CommandSpec(
            "incident",
            usage="incident TITLE",
            summary="Open an incident thread by hand (acknowledge, resolve, record)",
            parse=_parse,
            role=Role.OPERATOR,
        ),
    ),
)
