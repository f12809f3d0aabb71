"""The terminal surface behind ``sms-bot shell`` and ``sms-bot run``.

A chat platform edits the status message in place; a terminal can do the
same with a rich ``Live`` display, but a pipe or a cron mail cannot. So the
surface has two modes: live (a terminal), where the status message is
redrawn until the run is done and then left on screen, and plain, where
every step event becomes one line of escape-free text that reads well in a
log. Rendering is done by the pure functions of ``render_text``; this module
only decides what to print when.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import replace

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from bot.chat.render_text import (
    STATUS_STYLES,
    status_line,
    step_event_line,
    to_plain_lines,
    to_rich,
)
from bot.messages import Button, Conversation, Message, MessageRef, StepView

__all__ = ["ConsoleSurface"]

_MAX_TRACKED = 256
"""Messages remembered for updates; a long shell session must not grow without bound."""


def _default_console() -> Console:
    """A console on stdout that adds no colour or highlighting when stdout is piped."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(no_color=True, highlight=False)


def _step_changed(before: StepView | None, after: StepView) -> bool:
    """Whether a step deserves a new event line.

    A running step whose summary changes is not an event (it would repeat
    the "started" line); a finished step that changes again is.
    """
    if before is None or before.status != after.status:
        return True
    return after.status.is_done and before != after


class ConsoleSurface:
    """``ChatSurface`` for a terminal (live redraw) or a pipe (one line per event)."""

    name = "console"

    def __init__(self, console: Console | None = None, *, live: bool | None = None) -> None:
        self.console = console if console is not None else _default_console()
        self.live = self.console.is_terminal if live is None else live
        self._ids = itertools.count(1)
        self._shown: OrderedDict[str, Message] = OrderedDict()
        self._live: Live | None = None
        self._live_id: str | None = None
        self._buttons: tuple[Button, ...] = ()

    # -- ChatSurface ------------------------------------------------------------

    async def post(self, where: Conversation, msg: Message) -> MessageRef:
        ref = MessageRef(conversation=where, id=self._next_id())
        self._show_new(ref.id, msg)
        return ref

    async def update(self, ref: MessageRef, msg: Message) -> None:
        previous = self._shown.get(ref.id)
        if previous is None:
            # Not ours or forgotten: showing it whole loses nothing.
            self._show_new(ref.id, msg)
            return
        self._remember(ref.id, msg)
        if msg == previous:
            return
        if self.live:
            self._update_live(ref.id, previous, msg)
        else:
            self._update_plain(previous, msg)

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        thread = ref.conversation.thread or ref.id
        new = MessageRef(
            conversation=replace(ref.conversation, thread=thread), id=key or self._next_id()
        )
        self._remember(new.id, msg)
        if self.live:
            self._print_rich(to_rich(msg))
        else:
            self._print_lines(to_plain_lines(msg))
        return new

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        """In a terminal everything is seen by its one user: print like a post."""
        await self.post(where, msg)

    # -- for the shell -------------------------------------------------------------

    def buttons(self) -> list[Button]:
        """Buttons of the latest message that had any, numbered from 1 as shown."""
        return list(self._buttons)

    def close(self) -> None:
        """Stop a live display left running (a run that never finished), restoring stdout."""
        self._stop_live()

    # -- state ---------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"c{next(self._ids)}"

    def _remember(self, message_id: str, msg: Message) -> None:
        self._shown[message_id] = msg
        self._shown.move_to_end(message_id)
        while len(self._shown) > _MAX_TRACKED:
            self._shown.popitem(last=False)
        if msg.buttons:
            self._buttons = msg.buttons

    def _show_new(self, message_id: str, msg: Message) -> None:
        self._remember(message_id, msg)
        if msg.status.is_done:
            # A one-shot answer (help, usage, a finished summary): nothing to follow.
            if self.live:
                self._print_rich(to_rich(msg))
            else:
                self._print_lines(to_plain_lines(msg))
            return
        if not self.live:
            self._print_lines([status_line(msg), *(step_event_line(s) for s in msg.steps)])
        elif self._live is None:
            self._live_id = message_id
            self._live = Live(to_rich(msg), console=self.console, auto_refresh=False)
            self._live.start(refresh=True)
        else:
            # One live display at a time; this one is printed when it is done.
            self._print_rich(Text(status_line(msg), style=STATUS_STYLES[msg.status]))

    # -- live mode -------------------------------------------------------------------

    def _update_live(self, message_id: str, previous: Message, msg: Message) -> None:
        if self._live is not None and message_id == self._live_id:
            self._live.update(to_rich(msg), refresh=True)
            if msg.status.is_done:
                self._stop_live()
            return
        if msg.status.is_done:
            self._print_rich(to_rich(msg))

    def _stop_live(self) -> None:
        live, self._live, self._live_id = self._live, None, None
        if live is not None:
            live.stop()

    def _print_rich(self, renderable: RenderableType) -> None:
        # Printing through the live console puts the output above the live area.
        console = self._live.console if self._live is not None else self.console
        console.print(renderable)

    # -- plain mode ------------------------------------------------------------------

    def _update_plain(self, previous: Message, msg: Message) -> None:
        lines = [
            step_event_line(step)
            for i, step in enumerate(msg.steps)
            if _step_changed(previous.steps[i] if i < len(previous.steps) else None, step)
        ]
        if msg.status.is_done and replace(msg, steps=()) != replace(previous, steps=()):
            # The steps were already told one event at a time.
            lines.extend(to_plain_lines(replace(msg, steps=())))
        self._print_lines(lines)

    def _print_lines(self, lines: list[str]) -> None:
        # ``out`` skips markup, emoji codes, wrapping and cropping: a log line
        # containing "[bold]" or wider than the console is printed as is.
        for line in lines:
            self.console.out(line, highlight=False)
