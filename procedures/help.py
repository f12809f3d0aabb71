"""``help``: every command of the catalogue with one line each, and the services."""

from __future__ import annotations

from bot.catalogue import Catalogue, CommandContext, CommandSpec, Invocation, ProcedureSpec
from bot.deps import Deps
from bot.messages import Message, Status, Table

__all__ = ["SPEC", "help_message"]


def help_message(deps: Deps, catalogue: Catalogue) -> Message:
    table = Table(
        title="Commands (type them after /sms in chat, or as they are in the shell)",
        columns=("command", "what it does"),
        rows=tuple((spec.usage, spec.summary) for spec in catalogue.commands()),
    )
    services = ", ".join(
        f"{name} ({container})" for name, container in sorted(deps.settings.sms_services.items())
    )
    return Message(
        title="sms-bot commands",
        status=Status.OK,
        text=f"Services: {services}.",
        details=(table,),
    )


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    return Invocation(name="help", message=help_message(ctx.deps, ctx.catalogue))


SPEC = ProcedureSpec(
    name="help",
    summary="Every command with one line each",
    commands=(
        CommandSpec("help", usage="help", summary="Every command with one line each", parse=_parse),
    ),
)
