"""Runs procedures: steps with status, duration and result, published as they change.

A procedure is a plain async function of a ``Run``. Each ``run.step`` has a
timeout; a failed step is shown as failed and does not raise out of the
procedure, so a diagnostic goes on where the runbook would. The run and its
steps are recorded in the store; the status message is posted once and then
updated in place through the surface that started the run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.errors import SmsBotError, UserError
from bot.events import Command
from bot.messages import (
    CodeBlock,
    Conversation,
    Field,
    Mention,
    Message,
    MessageRef,
    Status,
    StepView,
    Table,
    worst,
)
from bot.proposals import proposal_message
from bot.store.base import Proposal, RunRecord, StepRecord, StoreUnavailable
from bot.threads import ThreadRef

__all__ = ["Engine", "Outcome", "Procedure", "Run"]

log = structlog.get_logger(__name__)

T = TypeVar("T")
Procedure = Callable[["Run"], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """What a check concludes: a status, one line, and optional fields and details.

    A step whose work returns an ``Outcome`` takes its status and summary;
    its details are posted as replies in the run's thread.
    """

    status: Status
    summary: str
    fields: tuple[Field, ...] = ()
    details: tuple[CodeBlock | Table, ...] = ()


@dataclass
class _Step:
    index: int
    name: str
    status: Status = Status.RUNNING
    started_at: datetime | None = None
    duration_s: float | None = None
    summary: str = ""
    error: str | None = None

    def view(self) -> StepView:
        return StepView(self.name, self.status, self.duration_s, self.summary)


@dataclass
class Run:
    """One execution of a procedure, and the thread it reports into."""

    deps: Deps
    surface: ChatSurface
    command: Command
    procedure: str
    title: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    text: str = ""
    fields: list[Field] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    finished: bool = False
    error: str | None = None
    parent: MessageRef | None = None
    proposals: list[Proposal] = field(default_factory=list)
    # Post once finished (scheduled reports) instead of showing progress live.
    deferred: bool = False
    # Who the run calls (an escalation): each surface notifies its own, the text stays text.
    mentions: tuple[Mention, ...] = ()

    def __post_init__(self) -> None:
        self.started_at = self.deps.clock()
        self._t0 = time.monotonic()
        self.duration_s: float | None = None
        self._ref: MessageRef | None = None
        self._last: Message | None = None
        self._publish_lock = asyncio.Lock()
        self._log = log.bind(run_id=self.id, procedure=self.procedure)
        # A deferred run's replies and proposals, sent once its root message is posted.
        self._held: list[Callable[[], Awaitable[object]]] = []

    # -- what procedures call -------------------------------------------------

    async def step(
        self, name: str, work: Awaitable[T], *, timeout: float | None = None
    ) -> T | None:
        """Run ``work`` as a named step; return its result, or None when it failed.

        ``timeout`` defaults to ``SMS_CHECK_TIMEOUT_S``. An ``Outcome`` result
        sets the step's status; any other result means the step passed.
        """
        limit = timeout if timeout is not None else self.deps.settings.sms_check_timeout_s
        step = _Step(index=len(self.steps), name=name, started_at=self.deps.clock())
        self.steps.append(step)
        await self._changed(step)
        t0 = time.monotonic()
        result: T | None = None
        try:
            result = await asyncio.wait_for(work, timeout=limit)
        except TimeoutError:
            step.status, step.summary = Status.FAILED, f"timed out after {limit:g} s"
            step.error = "timeout"
        except SmsBotError as exc:
            step.status, step.summary, step.error = Status.FAILED, str(exc), type(exc).__name__
        except Exception:
            ref = uuid.uuid4().hex[:8]
            self._log.exception("step.crashed", step=name, ref=ref)
            step.status, step.summary = Status.FAILED, f"internal error (ref {ref})"
            step.error = "internal"
        else:
            if isinstance(result, Outcome):
                step.status, step.summary = result.status, result.summary
            else:
                step.status = Status.OK
        step.duration_s = time.monotonic() - t0
        self.deps.metrics.step_finished(self.procedure, step.status.value, step.duration_s)
        if isinstance(result, Outcome):
            self.fields.extend(result.fields)
        await self._changed(step)
        if isinstance(result, Outcome):
            for block in result.details:
                await self.reply(Message(title=block.title, status=step.status, details=(block,)))
        return result

    async def propose(
        self,
        *,
        action: str,
        args: Mapping[str, Any],
        summary: str,
        confirm_label: str,
        note: str = "",
        needed: int = 1,
    ) -> Proposal | None:
        """Store a proposal and show it with buttons in the run's thread.

        The click is handled elsewhere (on any replica, after any restart):
        it claims the stored proposal and runs exactly ``action`` with ``args``.
        """
        if self._holding:
            # Stored and shown once the finished report is posted (its thread is needed).
            self._held.append(
                lambda: self.propose(
                    action=action,
                    args=args,
                    summary=summary,
                    confirm_label=confirm_label,
                    note=note,
                )
            )
            return None
        settings = self.deps.settings
        now = self.deps.clock()
        await self._publish()
        if self._ref is None:
            self._log.error("proposal.no_thread", action=action)
            return None
        proposal = Proposal(
            id=uuid.uuid4().hex,
            action=action,
            args=dict(args),
            summary=summary,
            run_id=self.id,
            conversation=ThreadRef.of(self._ref).encode(),
            message_key="",
            requested_by=self.command.user,
            approver_role="approver",
            created_at=now,
            expires_at=now + timedelta(minutes=settings.sms_proposal_ttl_min),
        )
        msg = proposal_message(
            proposal,
            confirm_label=confirm_label,
            approvers=settings.sms_approvers,
            note=note,
            needed=needed,
        )
        # Stored before the buttons can be seen, so a click always finds it.
        message_key = f"proposal-{proposal.id}"
        proposal = replace(proposal, message_key=message_key)
        await self.deps.store.proposal_add(proposal)
        try:
            await self.surface.reply(self._ref, msg, key=message_key)
        except Exception:
            self._log.exception("surface.reply_failed")
        await self.deps.audit.record(
            at=now,
            actor=self.command.user,
            source=self.command.source,
            action="propose",
            target=summary,
            outcome="pending",
            conversation=self.command.conversation.channel,
            detail={
                "proposal_id": proposal.id,
                "action": action,
                "args": dict(args),
                "thread": self.command.conversation.thread,
            },
        )
        self.proposals.append(proposal)
        return proposal

    async def reply(self, msg: Message) -> MessageRef | None:
        """Post ``msg`` in the run's thread (details: log tails, tables).

        A deferred run holds it until its root message is posted, and returns None.
        """
        if self._holding:
            self._held.append(lambda: self.reply(msg))
            return None
        await self._publish()
        if self._ref is None:
            return None
        try:
            return await self.surface.reply(self._ref, msg)
        except Exception:
            self._log.exception("surface.reply_failed")
            return None

    @property
    def status(self) -> Status:
        if self.error is not None:
            return Status.FAILED
        statuses = [s.status for s in self.steps]
        if not self.finished:
            return Status.RUNNING
        return worst(statuses)

    @property
    def _holding(self) -> bool:
        return self.deferred and not self.finished

    async def _release(self) -> None:
        """Send what a deferred run held back, in the order the procedure asked."""
        held, self._held = self._held, []
        for send in held:
            await send()

    @property
    def ref(self) -> MessageRef | None:
        return self._ref

    def message(self) -> Message:
        """The status message as it stands now."""
        footer = f"run {self.id[:8]} · {self.command.user}"
        if self.duration_s is not None:
            footer += f" · {self.duration_s:.1f} s"
        text = self.text
        if self.error:
            text = f"{text}\n{self.error}".strip()
        return Message(
            title=self.title,
            status=self.status,
            text=text,
            fields=tuple(self.fields),
            steps=tuple(s.view() for s in self.steps),
            footer=footer,
            mentions=self.mentions,
        )

    # -- bookkeeping ----------------------------------------------------------

    async def _changed(self, step: _Step) -> None:
        record = StepRecord(
            run_id=self.id,
            index=step.index,
            name=step.name,
            status=step.status.value,
            started_at=step.started_at,
            duration_s=step.duration_s,
            summary=step.summary,
            error=step.error,
        )
        try:
            await self.deps.store.save_step(record)
        except StoreUnavailable as exc:
            self._log.error("store.save_step_failed", error=str(exc))
        await self._publish()

    async def _publish(self) -> None:
        if self._holding:
            return
        async with self._publish_lock:
            msg = self.message()
            if msg == self._last:
                return
            try:
                if self._ref is None and self.parent is not None:
                    self._ref = await self.surface.reply(self.parent, msg)
                elif self._ref is None:
                    self._ref = await self.surface.post(self.command.conversation, msg)
                else:
                    await self.surface.update(self._ref, msg)
            except Exception:
                self._log.exception("surface.publish_failed")
                return
            self._last = msg


class Engine:
    """Starts runs, records them, and tracks the tasks of runs started in the background."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._tasks: set[asyncio.Task[Any]] = set()

    async def execute(
        self,
        procedure: Procedure,
        *,
        name: str,
        title: str,
        command: Command,
        surface: ChatSurface,
        parent: MessageRef | None = None,
        deferred: bool = False,
    ) -> Run:
        """Run a procedure to the end and return the finished ``Run``.

        With ``parent`` the run reports in that message's thread; ``deferred``
        posts it only once finished (see the module's docstring).
        """
        run = Run(
            deps=self.deps,
            surface=surface,
            command=command,
            procedure=name,
            title=title,
            parent=parent,
            deferred=deferred,
        )
        bound = log.bind(run_id=run.id, procedure=name, user=command.user)
        bound.info("run.started", command=command.text)
        try:
            await self.deps.store.start_run(
                RunRecord(
                    id=run.id,
                    command=command.text,
                    user=command.user,
                    source=command.source,
                    conversation=_conversation_key(command.conversation),
                    started_at=run.started_at,
                )
            )
        except StoreUnavailable as exc:
            bound.error("store.start_run_failed", error=str(exc))
        await run._publish()
        try:
            await procedure(run)
        except UserError as exc:
            run.error = str(exc)
        except SmsBotError as exc:
            run.error = str(exc)
            bound.warning("run.failed", error=str(exc))
        except Exception:
            ref = uuid.uuid4().hex[:8]
            bound.exception("run.crashed", ref=ref)
            run.error = f"Something went wrong inside the bot (ref {ref}); see its log."
        finally:
            run.finished = True
            run.duration_s = time.monotonic() - run._t0
            status = run.status
            self.deps.metrics.run_finished(name, status.value)
            try:
                await self.deps.store.finish_run(
                    run.id, status=status.value, finished_at=self.deps.clock()
                )
            except StoreUnavailable as exc:
                bound.error("store.finish_run_failed", error=str(exc))
            await run._publish()
            await run._release()
            bound.info("run.finished", status=status.value, duration_s=round(run.duration_s, 3))
        return run

    def start(
        self,
        procedure: Procedure,
        *,
        name: str,
        title: str,
        command: Command,
        surface: ChatSurface,
        parent: MessageRef | None = None,
    ) -> asyncio.Task[Run]:
        """Run in the background, as a task the engine keeps and cancels on shutdown."""
        return self.spawn(
            self.execute(
                procedure,
                name=name,
                title=title,
                command=command,
                surface=surface,
                parent=parent,
            ),
            name=f"run:{name}",
        )

    def spawn(self, work: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Track ``work`` as a task: the platform callback acks, the work goes on here."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # ``execute`` answers every failure itself; one that escapes is a bug to log
        # now, not a "Task exception was never retrieved" whenever the task is collected.
        task.add_done_callback(_log_if_failed)
        return task

    async def shutdown(self, *, grace_s: float = 5.0) -> None:
        """Let running procedures finish for ``grace_s``, then cancel them."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _log_if_failed(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("run.task_failed", task=task.get_name(), error=repr(exc), exc_info=exc)


def _conversation_key(conversation: Conversation) -> str:
    parts = [conversation.surface, conversation.channel]
    if conversation.thread:
        parts.append(conversation.thread)
    return ":".join(p for p in parts if p)
