"""The command registry: ``@command`` records metadata and a parser, nothing more.

Matching words to a command, authorizing the user and running the
procedure are separate layers (``handlers.dispatch``) that read this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.engine import Procedure
from bot.errors import UsageError
from bot.events import Command
from bot.messages import Message

__all__ = [
    "REGISTRY",
    "CommandSpec",
    "Invocation",
    "Parser",
    "Role",
    "command",
    "match",
]


class Role(StrEnum):
    """Who may do what: viewers read, operators request changes, approvers approve."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"


@dataclass(frozen=True)
class Invocation:
    """A parsed command: either a procedure to run, or a message to answer with."""

    name: str
    title: str = ""
    procedure: Procedure | None = None
    message: Message | None = None
    # Anything else: called with the dispatcher, the command and the surface.
    direct: Callable[[Any, Command, ChatSurface], Awaitable[None]] | None = None


Parser = Callable[[list[str], Deps], Invocation]


@dataclass(frozen=True)
class CommandSpec:
    name: str  # "logs", "db slow"
    usage: str  # "logs SERVICE [N]"
    summary: str  # one line for help
    role: Role
    changes: bool  # True when the command changes the system
    parse: Parser


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def add(self, spec: CommandSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"command {spec.name!r} registered twice")
        self._specs[spec.name] = spec

    def get(self, name: str) -> CommandSpec | None:
        return self._specs.get(name)

    def all(self) -> list[CommandSpec]:
        return list(self._specs.values())

    def groups(self) -> set[str]:
        return {name.split()[0] for name in self._specs if " " in name}


REGISTRY = Registry()


def command(
    name: str,
    *,
    usage: str,
    summary: str,
    role: Role = Role.VIEWER,
    changes: bool = False,
) -> Callable[[Parser], Parser]:
    """Register ``parse`` as the parser of command ``name``."""

    def register(parse: Parser) -> Parser:
        REGISTRY.add(CommandSpec(name, usage, summary, role, changes, parse))
        return parse

    return register


def match(words: list[str], registry: Registry = REGISTRY) -> tuple[CommandSpec, list[str]]:
    """Find the command the words name (longest name first) and the remaining words."""
    if not words:
        spec = registry.get("help")
        if spec is None:
            raise UsageError("No command given.")
        return spec, []
    lowered = [w.lower() for w in words]
    if len(lowered) >= 2:
        spec = registry.get(f"{lowered[0]} {lowered[1]}")
        if spec is not None:
            return spec, words[2:]
    spec = registry.get(lowered[0])
    if spec is not None:
        return spec, words[1:]
    if lowered[0] in registry.groups():
        subs = [s for s in registry.all() if s.name.split()[0] == lowered[0]]
        given = f" {words[1]!r}" if len(words) > 1 else ""
        raise UsageError(
            f"Unknown {lowered[0]} command{given}.",
            usage="\n".join(f"/sms {s.usage}  — {s.summary}" for s in subs),
        )
    raise UsageError(
        f"Unknown command {words[0]!r}.",
        usage="\n".join(f"/sms {s.usage}" for s in registry.all()),
    )
