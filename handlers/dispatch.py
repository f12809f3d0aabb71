"""From a ``Command`` to an answer: match, authorize, audit, run.

Expected failures (usage, unknown service, not allowed) are answered as
normal replies; the exit code tells ``sms-bot run`` what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from bot.catalogue import Catalogue, CommandContext
from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.errors import NotAllowed, UsageError
from bot.events import Command
from bot.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from bot.incidents import IncidentService
from bot.messages import Conversation, Message, Status
from handlers.auth import authorize
from handlers.registry import match
from procedures.catalogue import CATALOGUE

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "AlertChannel", "Dispatcher", "Handled"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AlertChannel:
    """Where the team is told: SLACK_ALERT_CHANNEL, and Teams' channel where configured.

    The composition root builds it once (a fan-out surface when Teams has a
    channel, as incidents and scheduled reports use), so a command that
    announces something to the team (``change start``) reaches every surface
    the alerts reach, whichever surface took the command.
    """

    surface: ChatSurface
    conversation: Conversation


@dataclass(frozen=True)
class Handled:
    """What became of a command: an exit code, and the run or the answer."""

    exit_code: int
    run: Run | None = None
    message: Message | None = None


class Dispatcher:
    def __init__(
        self,
        deps: Deps,
        engine: Engine,
        *,
        incidents: IncidentService | None = None,
        catalogue: Catalogue = CATALOGUE,
        alert_channel: AlertChannel | None = None,
    ) -> None:
        self.deps = deps
        self.engine = engine
        self.catalogue = catalogue
        # Where manual incidents are opened; None where incidents are not handled.
        self.incidents = incidents
        # The team's alert channel on every chat surface; None without a chat surface.
        self.alert_channel = alert_channel

    async def handle(self, cmd: Command, surface: ChatSurface) -> Handled:
        name = "unknown"
        try:
            spec, args = match(cmd.words, self.catalogue)
            name = spec.name
            authorize(cmd.user, cmd.source, spec.role, self.deps.settings)
            invocation = spec.parse(args, CommandContext(self.deps, self.catalogue))
        except UsageError as exc:
            text = str(exc)
            if exc.usage:
                text += f"\n\nUsage:\n{exc.usage}"
            text += "\n\nType /sms help for every command."
            msg = Message(title="Cannot run that command", status=Status.FAILED, text=text)
            await self._answer(cmd, surface, msg, name=name, outcome="usage_error")
            return Handled(EXIT_USAGE, message=msg)
        except NotAllowed as exc:
            msg = Message(title="Not allowed", status=Status.FAILED, text=str(exc))
            await self._answer(cmd, surface, msg, name=name, outcome="refused")
            return Handled(EXIT_FAILED, message=msg)

        if invocation.direct is not None:
            await self._audit(cmd, name=name, outcome="started")
            await invocation.direct(self, cmd, surface)
            await self._audit(cmd, name=name, outcome="ok")
            self.deps.metrics.command_done(name, "ok")
            return Handled(EXIT_OK)

        if invocation.message is not None:
            await self._answer(cmd, surface, invocation.message, name=name, outcome="ok")
            return Handled(EXIT_OK, message=invocation.message)

        assert invocation.procedure is not None
        await self._audit(cmd, name=name, outcome="started")
        run = await self.engine.execute(
            invocation.procedure,
            name=invocation.name,
            title=invocation.title,
            command=cmd,
            surface=surface,
        )
        status = run.status
        await self._audit(cmd, name=name, outcome=status.value, run_id=run.id)
        self.deps.metrics.command_done(name, status.value)
        return Handled(EXIT_FAILED if status.is_bad else EXIT_OK, run=run)

    async def _answer(
        self, cmd: Command, surface: ChatSurface, msg: Message, *, name: str, outcome: str
    ) -> None:
        self.deps.metrics.command_done(name, outcome)
        await self._audit(cmd, name=name, outcome=outcome)
        await surface.ephemeral(cmd.conversation, cmd.user, msg)

    async def _audit(self, cmd: Command, *, name: str, outcome: str, run_id: str = "") -> None:
        detail = {"command": name}
        if run_id:
            detail["run_id"] = run_id
        await self.deps.audit.record(
            at=self.deps.clock(),
            actor=cmd.user,
            source=cmd.source,
            action="command",
            target=cmd.text,
            outcome=outcome,
            conversation=":".join(
                p for p in (cmd.conversation.channel, cmd.conversation.thread or "") if p
            ),
            detail=detail,
        )
