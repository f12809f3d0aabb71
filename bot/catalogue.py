"""The procedure catalogue's types: what a procedure module declares about itself, once.

A procedure module exports one ``ProcedureSpec``: its name and summary, its
chat commands (syntax, parser, role), the alerts it answers, the action it
performs when a proposal is approved (with a typed, frozen argument
dataclass), its schedules and its lines in the runbook table. Chat commands,
alert routing, approved actions, the scheduler, ``help``, ``runbook`` and
``schedule`` read a ``Catalogue`` of these specs, passed in; the core names
no procedure (the list itself is ``procedures/catalogue.py``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bot.alerts import Alert, AlertBatch
from bot.config import Settings
from bot.errors import UsageError
from bot.messages import Message, Status
from bot.routing import PRIORITIES, RouteRule

if TYPE_CHECKING:
    from bot.chat.base import ChatSurface
    from bot.deps import Deps
    from bot.engine import Procedure, Run
    from bot.events import Command

__all__ = [
    "ActionArgsInvalid",
    "ActionSpec",
    "AlertSpec",
    "ApprovedAction",
    "Catalogue",
    "CommandContext",
    "CommandSpec",
    "Invocation",
    "JobContext",
    "Parser",
    "ProcedureSpec",
    "Role",
    "RunbookEntry",
    "Schedule",
    "count_arg",
    "no_more",
    "service_arg",
    "without_args",
]


class Role(StrEnum):
    """Who may do what: viewers read, operators request changes, approvers approve."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"


# -- chat commands -----------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """A parsed command: either a procedure to run, or a message to answer with."""

    name: str
    title: str = ""
    procedure: Procedure | None = None
    message: Message | None = None
    # Anything else: called with the dispatcher, the command and the surface.
    direct: Callable[[Any, Command, ChatSurface], Awaitable[None]] | None = None


@dataclass(frozen=True)
class CommandContext:
    """What a parser may read: the dependencies, and the catalogue (for help and the like)."""

    deps: Deps
    catalogue: Catalogue


Parser = Callable[[list[str], CommandContext], Invocation]


@dataclass(frozen=True)
class CommandSpec:
    """One chat command: ``name`` is the words that select it, ``parse`` binds the rest."""

    name: str  # "logs", "db slow"
    usage: str  # "logs SERVICE [N]"
    summary: str  # one line for help
    parse: Parser
    role: Role = Role.VIEWER
    changes: bool = False  # True when the command changes the system


def no_more(args: Sequence[str], usage: str) -> None:
    """Refuse words past the command's last argument."""
    if args:
        raise UsageError(f"Unexpected argument {' '.join(args)!r}.", usage=f"/sms {usage}")


def without_args(name: str, title: str, procedure: Procedure) -> Parser:
    """The parser of a command that takes no argument: it runs ``procedure`` as ``title``."""

    def parse(args: list[str], ctx: CommandContext) -> Invocation:
        no_more(args, name)
        return Invocation(name=name, title=title, procedure=procedure)

    return parse


def service_arg(args: Sequence[str], deps: Deps, usage: str) -> str:
    """The first word as a service of ``SMS_SERVICES`` (lower-cased), or a usage error."""
    known = sorted(deps.settings.sms_services)
    if not args:
        raise UsageError(
            f"Which service? Known services: {', '.join(known)}.", usage=f"/sms {usage}"
        )
    name = args[0].lower()
    if name not in deps.settings.sms_services:
        raise UsageError(
            f"Unknown service {args[0]!r}. Known services: {', '.join(known)}.",
            usage=f"/sms {usage}",
        )
    return name


def count_arg(raw: str, usage: str) -> int:
    """A positive number of lines, or a usage error."""
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{raw!r} is not a number of lines.", usage=f"/sms {usage}") from None
    if value < 1:
        raise UsageError("The number of lines must be at least 1.", usage=f"/sms {usage}")
    return value


# -- alerts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertSpec:
    """The alerts a procedure answers by default, and the procedure bound to one of them."""

    alertnames: tuple[str, ...]
    priority: str
    title: str  # the run's title in the thread
    bind: Callable[[Alert | None], Procedure]

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority {self.priority!r} is not one of {PRIORITIES}")


# -- approved actions --------------------------------------------------------------------

A = TypeVar("A")


class ActionArgsInvalid(ValueError):
    """A stored proposal's arguments do not fit the action's argument dataclass."""


@dataclass(frozen=True)
class ApprovedAction:
    """An action bound to a proposal's decoded arguments: what the click handler needs."""

    procedure: Procedure
    title: str
    target: str  # the audit record's target
    confirm_label: str
    approvals: int = 1  # how many different approvers must click before it runs


@dataclass(frozen=True)
class ActionSpec(Generic[A]):
    """What an approved proposal runs, with arguments of the frozen dataclass ``args``.

    Proposals store their arguments as JSON; ``decode`` turns them back into
    ``args`` when the click comes (fields with defaults may be missing, so
    proposals stored by an earlier version stay approvable).
    """

    name: str  # stored in the proposal
    args: type[A]
    run: Callable[[Run, A], Awaitable[None]]
    title: Callable[[A], str]
    target: Callable[[A], str]
    confirm_label: Callable[[A], str]
    # How many different approvers must click; read from the stored arguments so the
    # count the proposal showed is the count the click enforces.
    approvals: Callable[[A], int] = lambda _args: 1

    def __post_init__(self) -> None:
        if not (dataclasses.is_dataclass(self.args) and self.args.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise TypeError(f"{self.name}: action arguments must be a frozen dataclass")

    def encode(self, args: A) -> dict[str, Any]:
        """The JSON-safe arguments a proposal stores."""
        return dataclasses.asdict(args)  # type: ignore[call-overload, no-any-return]

    def decode(self, raw: Mapping[str, Any]) -> A:
        hints = typing.get_type_hints(self.args)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self.args):  # type: ignore[arg-type]
            if f.name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ActionArgsInvalid(f"{self.name}: the proposal has no {f.name!r}")
                continue
            value = raw[f.name]
            kind = hints.get(f.name)
            try:
                values[f.name] = kind(value) if kind in (int, str, float) else value
            except (TypeError, ValueError):
                raise ActionArgsInvalid(f"{self.name}: {f.name}={value!r} is not valid") from None
        return self.args(**values)

    def approve(self, raw: Mapping[str, Any]) -> ApprovedAction:
        """Decode the stored arguments and bind the action to them."""
        args = self.decode(raw)

        async def procedure(run: Run) -> None:
            await self.run(run, args)

        return ApprovedAction(
            procedure=procedure,
            title=self.title(args),
            target=self.target(args),
            confirm_label=self.confirm_label(args),
            approvals=max(1, self.approvals(args)),
        )


# -- schedules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobContext:
    """What a scheduled check may use besides its dependencies: raising alerts of its own."""

    deps: Deps
    receive_alerts: Callable[[AlertBatch], Awaitable[int]]


@dataclass(frozen=True)
class Schedule:
    """A scheduled job: ``sms-bot run JOB`` runs ``procedure``; the scheduler posts it.

    ``check``, when set, is what the scheduler runs instead of posting a
    report (e.g. a check that raises an alert only when something is wrong).
    A report is posted once finished, so its notification shows the verdict;
    ``live`` shows its progress as it runs instead (for a job someone watches).
    """

    job: str  # the job id: "sms-bot run JOB", the schedule table, the job slots
    title: str
    cron_setting: str  # the Settings field holding its cron expression
    procedure: Procedure
    local_time: bool = True  # in SMS_TIMEZONE; False: in UTC
    check: Callable[[JobContext], Awaitable[Status]] | None = None
    live: bool = False

    def __post_init__(self) -> None:
        if self.cron_setting not in Settings.model_fields:
            raise ValueError(f"{self.job}: {self.cron_setting!r} is not a Settings field")

    def cron(self, settings: Settings) -> str:
        return str(getattr(settings, self.cron_setting))

    def timezone(self, settings: Settings) -> str:
        return settings.sms_timezone if self.local_time else "UTC"


# -- the runbook table -------------------------------------------------------------------


@dataclass(frozen=True)
class RunbookEntry:
    """A line of the ``runbook`` table; the command column comes from the spec's command."""

    procedure: str
    trigger: str
    steps: str
    command: str = ""  # which of the spec's commands runs it ("" for the first, if any)


# -- the spec and the catalogue ----------------------------------------------------------


@dataclass(frozen=True)
class ProcedureSpec:
    """Everything the bot knows about one procedure module."""

    name: str  # also the name alert routes use (SMS_ALERT_ROUTES)
    summary: str
    commands: tuple[CommandSpec, ...] = ()
    alert: AlertSpec | None = None
    action: ActionSpec[Any] | None = None
    schedules: tuple[Schedule, ...] = ()
    runbook: tuple[RunbookEntry, ...] = ()

    def runbook_command(self, entry: RunbookEntry) -> str:
        """How to run a runbook line from chat, or "" when no command runs it."""
        for cmd in self.commands:
            if not entry.command or cmd.name == entry.command:
                return f"/sms {cmd.usage}"
        return ""


@dataclass(frozen=True)
class Catalogue:
    """Every procedure, in the order help, runbook and schedule list them."""

    specs: tuple[ProcedureSpec, ...]
    default_command: str  # what an empty command runs
    # Runbook lines no procedure automates yet, shown after the others.
    manual: tuple[RunbookEntry, ...] = ()
    _commands: dict[str, CommandSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        commands: dict[str, CommandSpec] = {}
        seen: dict[str, set[str]] = {"procedure": set(), "action": set(), "job": set()}

        def once(kind: str, name: str) -> None:
            if name in seen[kind]:
                raise ValueError(f"{kind} {name!r} declared twice")
            seen[kind].add(name)

        for spec in self.specs:
            once("procedure", spec.name)
            for cmd in spec.commands:
                if cmd.name in commands:
                    raise ValueError(f"command {cmd.name!r} declared twice")
                commands[cmd.name] = cmd
            if spec.action is not None:
                once("action", spec.action.name)
            for schedule in spec.schedules:
                once("job", schedule.job)
        if self.default_command not in commands:
            raise ValueError(f"the default command {self.default_command!r} is not declared")
        object.__setattr__(self, "_commands", commands)

    # commands
    def commands(self) -> list[CommandSpec]:
        return list(self._commands.values())

    def command(self, name: str) -> CommandSpec | None:
        return self._commands.get(name)

    def groups(self) -> set[str]:
        """First words of the commands that have two ("db" of "db slow")."""
        return {name.split()[0] for name in self._commands if " " in name}

    # alerts
    def alert(self, name: str) -> AlertSpec | None:
        """The alert facet of procedure ``name`` (a route's procedure)."""
        return next((s.alert for s in self.specs if s.name == name and s.alert), None)

    def alert_procedures(self) -> list[str]:
        return [s.name for s in self.specs if s.alert is not None]

    def routes(self) -> tuple[RouteRule, ...]:
        """The default routes: every declared alertname to its procedure and priority."""
        return tuple(
            RouteRule(alertname, spec.name, spec.alert.priority)
            for spec in self.specs
            if spec.alert is not None
            for alertname in spec.alert.alertnames
        )

    # actions
    def action(self, name: str) -> ActionSpec[Any] | None:
        return next((s.action for s in self.specs if s.action and s.action.name == name), None)

    # schedules
    def schedules(self) -> list[Schedule]:
        return [schedule for spec in self.specs for schedule in spec.schedules]

    def schedule(self, job: str) -> Schedule | None:
        return next((s for s in self.schedules() if s.job == job), None)

    # runbook
    def runbook_rows(self) -> list[tuple[str, str, str, str]]:
        """The runbook table: procedure, trigger, how to run it, what it does."""
        rows = [
            (e.procedure, e.trigger, spec.runbook_command(e), e.steps)
            for spec in self.specs
            for e in spec.runbook
        ]
        rows += [(e.procedure, e.trigger, "", e.steps) for e in self.manual]
        return rows
