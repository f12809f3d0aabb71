"""One neutral message on several surfaces at once: an incident in Slack and in Teams.

``FanOut`` is a ``ChatSurface`` whose conversations name their places (a
surface and a channel each, as JSON in ``Conversation.channel``) and whose
message keys are the keys of the copies with the surface's name appended
(``K`` is ``K.slack`` in Slack and ``K.teams`` in Teams). Nothing is kept in
memory: a reference stored with an incident or a proposal (``encode_thread``)
finds every copy again on any replica and after a restart, so an update, a
reply or a click's outcome is shown on every surface the thread lives on.

The alert lifecycle picks the places of each incident by its priority
(``places_for``: Slack for SLACK_ALERT_PRIORITIES, Teams for
TEAMS_ALERT_PRIORITIES); everything else it does goes through this surface
unchanged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from bot.messages import Conversation, Message, MessageRef

__all__ = ["FANOUT", "FanOut", "KeyedSurface"]

log = structlog.get_logger(__name__)

FANOUT = "fanout"


class KeyedSurface(Protocol):
    """A surface whose posts take the key they are stored under (the outbox surfaces)."""

    name: str

    async def post(
        self, where: Conversation, msg: Message, *, key: str | None = None
    ) -> MessageRef:
        """Post ``msg``; ``key``, when given, becomes the new ref's id."""
        ...

    async def update(self, ref: MessageRef, msg: Message) -> None: ...

    async def reply(
        self, ref: MessageRef, msg: Message, *, key: str | None = None
    ) -> MessageRef: ...

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None: ...


class FanOut:
    """Posts, updates and replies on every place a conversation names."""

    def __init__(self, surfaces: Mapping[str, KeyedSurface], *, name: str = FANOUT) -> None:
        self.name = name
        self._surfaces = dict(surfaces)

    def where(self, places: Sequence[tuple[str, str]]) -> Conversation:
        """The conversation of these (surface, channel) places, in this order."""
        known = [[s, c] for s, c in places if s in self._surfaces and c]
        return Conversation(surface=self.name, channel=json.dumps(known))

    def _places(self, conversation: Conversation) -> list[tuple[KeyedSurface, str]]:
        try:
            raw = json.loads(conversation.channel or "[]")
        except ValueError:
            raw = []
        found: list[tuple[KeyedSurface, str]] = []
        for entry in raw if isinstance(raw, list) else []:
            surface = self._surfaces.get(str(entry[0]))
            if surface is None:
                log.info("fanout.surface_unavailable", surface=entry[0])
                continue
            found.append((surface, str(entry[1])))
        return found

    @staticmethod
    def _copy(surface: KeyedSurface, channel: str, key: str) -> MessageRef:
        return MessageRef(
            Conversation(surface=surface.name, channel=channel), f"{key}.{surface.name}"
        )

    async def post(self, where: Conversation, msg: Message) -> MessageRef:
        key = uuid.uuid4().hex
        for surface, channel in self._places(where):
            await surface.post(
                Conversation(surface=surface.name, channel=channel),
                msg,
                key=f"{key}.{surface.name}",
            )
        return MessageRef(where, key)

    async def update(self, ref: MessageRef, msg: Message) -> None:
        for surface, channel in self._places(ref.conversation):
            await surface.update(self._copy(surface, channel, ref.id), msg)

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        new_key = key or uuid.uuid4().hex
        for surface, channel in self._places(ref.conversation):
            await surface.reply(
                self._copy(surface, channel, ref.id), msg, key=f"{new_key}.{surface.name}"
            )
        return MessageRef(ref.conversation, new_key)

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        """To the clicker's own surface (``teams:`` users are in Teams), else the first."""
        places = self._places(where)
        if not places:
            return
        teams_user = user.startswith("teams:")
        mine = [p for p in places if (p[0].name == "teams") == teams_user]
        surface, channel = (mine or places)[0]
        await surface.ephemeral(Conversation(surface=surface.name, channel=channel), user, msg)
