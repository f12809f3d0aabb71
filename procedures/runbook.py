"""``runbook``: the runbook's procedures, what triggers them and how to run them here.

Each line comes from the procedure that automates it (its ``runbook`` entries
and its command); ``MANUAL`` holds the runbook's procedures no module
automates yet.
"""

from __future__ import annotations

from bot.catalogue import (
    Catalogue,
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    RunbookEntry,
    no_more,
)
from bot.messages import Message, Status, Table

__all__ = ["MANUAL", "SPEC", "runbook_message"]

# Restore from backup is automated now (procedures/restore.py).
MANUAL: tuple[RunbookEntry, ...] = ()


def runbook_message(catalogue: Catalogue) -> Message:
    table = Table(
        title="Runbook procedures",
        columns=("procedure", "trigger", "run it with", "what it does"),
        rows=tuple(
            (procedure, trigger, command or "not automated yet: see runbook.md", steps)
            for procedure, trigger, command, steps in catalogue.runbook_rows()
        ),
    )
    return Message(
        title="SMS operations runbook",
        status=Status.OK,
        text="The runbook's procedures and how to run them from chat.",
        details=(table,),
    )


def _parse(args: list[str], ctx: CommandContext) -> Invocation:
    no_more(args, "runbook")
    return Invocation(name="runbook", message=runbook_message(ctx.catalogue))


SPEC = ProcedureSpec(
    name="runbook",
    summary="The runbook's procedures and what triggers them",
    commands=(
        CommandSpec(
            "runbook",
            usage="runbook",
            summary="The runbook's procedures and what triggers them",
            parse=_parse,
        ),
    ),
)
