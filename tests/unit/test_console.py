"""The console surface, driven the way the engine drives a chat surface."""

from __future__ import annotations

import asyncio
import io
import re
import sys

from rich.console import Console

from bot.chat.console import ConsoleSurface
from bot.deps import Deps
from bot.engine import Engine, Outcome, Run
from bot.events import Command
from bot.messages import (
    Button,
    CodeBlock,
    Conversation,
    Field,
    Message,
    MessageRef,
    Status,
    StepView,
    Table,
)

HERE = Conversation(surface="console")
TITLE = "Morning health check"
BUTTONS = (
    Button("Restart docker-backend-1", "restart", "backend", "danger"),
    Button("Acknowledge", "ack", "backend"),
)
ANSI = re.compile(r"\x1b")
SGR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain_surface() -> tuple[ConsoleSurface, io.StringIO]:
    buf = io.StringIO()
    return ConsoleSurface(Console(file=buf, force_terminal=False, width=100)), buf


def live_surface() -> tuple[ConsoleSurface, Console, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    return ConsoleSurface(console), console, buf


def running(*steps: StepView) -> Message:
    return Message(title=TITLE, status=Status.RUNNING, steps=steps, footer="run ab12cd34 · alice")


CONTAINERS_RUNNING = StepView("Container health", Status.RUNNING)
DATABASE_RUNNING = StepView("Database", Status.RUNNING)
DATABASE_OK = StepView("Database", Status.OK, 0.4, "connections 12/100")
CONTAINERS_WARN = StepView("Container health", Status.WARN, 125.0, "11/12 running")
FINAL = Message(
    title=TITLE,
    status=Status.WARN,
    text="One container is down.",
    steps=(CONTAINERS_WARN, DATABASE_OK),
    fields=(Field("containers", "11/12", Status.WARN), Field("database", "up")),
    buttons=BUTTONS,
    footer="run ab12cd34 · alice · 125.4 s",
)
TABLE_REPLY = Message(
    title="Containers",
    details=(
        Table(
            "Containers",
            ("name", "state"),
            (("docker-backend-1", "exited"), ("docker-postgres-1", "running")),
        ),
    ),
)
LOG_REPLY = Message(
    title="Backend logs",
    status=Status.WARN,
    details=(CodeBlock("Backend logs", "INFO started\nERROR connection refused"),),
)


async def drive(surface: ConsoleSurface) -> tuple[MessageRef, list[MessageRef]]:
    """Post, two steps running at once finishing out of order, two replies, the end."""
    ref = await surface.post(HERE, running())
    await surface.update(ref, running(CONTAINERS_RUNNING))
    await surface.update(ref, running(CONTAINERS_RUNNING, DATABASE_RUNNING))
    await surface.update(ref, running(CONTAINERS_RUNNING, DATABASE_OK))
    replies = [await surface.reply(ref, TABLE_REPLY), await surface.reply(ref, LOG_REPLY)]
    await surface.update(ref, running(CONTAINERS_WARN, DATABASE_OK))
    await surface.update(ref, running(CONTAINERS_WARN, DATABASE_OK))  # unchanged: silent
    await surface.update(ref, FINAL)
    return ref, replies


async def test_plain_mode_prints_one_line_per_step_event() -> None:
    surface, buf = plain_surface()
    assert surface.live is False
    ref, replies = await drive(surface)

    assert buf.getvalue().splitlines() == [
        "[RUNNING] Morning health check",
        "◔ Container health …",
        "◔ Database …",
        "✓ Database (0.4s): connections 12/100",
        "[OK] Containers",
        "  Containers",
        "    name               state",
        "    docker-backend-1   exited",
        "    docker-postgres-1  running",
        "[WARN] Backend logs",
        "  Backend logs",
        "    INFO started",
        "    ERROR connection refused",
        "! Container health (2m05s): 11/12 running",
        "[WARN] Morning health check",
        "One container is down.",
        "  containers: 11/12 [WARN]",
        "  database: up",
        "  [1] Restart docker-backend-1  [2] Acknowledge",
        "run ab12cd34 · alice · 125.4 s",
    ]
    assert not ANSI.search(buf.getvalue())
    assert ref == MessageRef(HERE, "c1")
    assert [r.id for r in replies] == ["c2", "c3"]
    assert all(r.conversation.thread == "c1" for r in replies)
    assert surface.buttons() == list(BUTTONS)


async def test_plain_mode_handles_coalesced_and_odd_updates() -> None:
    surface, buf = plain_surface()
    ref = await surface.post(HERE, running(CONTAINERS_RUNNING))
    # Coalescing can skip the "running" version of a step entirely.
    await surface.update(ref, running(CONTAINERS_RUNNING, DATABASE_OK))
    # A finished step whose summary is corrected is told again.
    corrected = StepView("Database", Status.OK, 0.4, "connections 13/100")
    await surface.update(ref, running(CONTAINERS_RUNNING, corrected))
    # A running step's progress is not a new event.
    await surface.update(
        ref, running(StepView("Container health", Status.RUNNING, None, "3/12"), corrected)
    )
    # A ref this surface never handed out is shown whole rather than refused.
    stranger = MessageRef(HERE, "elsewhere-7")
    await surface.update(stranger, Message(title="Alert resolved", footer="[bold]x[/bold]"))
    # A message that is already done when posted is a one-shot answer.
    await surface.post(HERE, Message(title="Usage", text="sms health | sms logs SERVICE [N]"))

    assert buf.getvalue().splitlines() == [
        "[RUNNING] Morning health check",
        "◔ Container health …",
        "✓ Database (0.4s): connections 12/100",
        "✓ Database (0.4s): connections 13/100",
        "[OK] Alert resolved",
        "[bold]x[/bold]",
        "[OK] Usage",
        "sms health | sms logs SERVICE [N]",
    ]
    assert surface.buttons() == []


async def test_plain_mode_reprints_the_end_when_a_done_message_changes() -> None:
    surface, buf = plain_surface()
    ref = await surface.post(HERE, running())
    await surface.update(ref, Message(title="BackendDown", status=Status.CRIT, footer="firing"))
    await surface.update(ref, Message(title="BackendDown", status=Status.CRIT, footer="firing"))
    await surface.update(ref, Message(title="BackendDown", status=Status.OK, footer="resolved"))
    assert buf.getvalue().splitlines() == [
        "[RUNNING] Morning health check",
        "[CRIT] BackendDown",
        "firing",
        "[OK] BackendDown",
        "resolved",
    ]


async def test_plain_mode_does_not_wrap_or_interpret_long_lines() -> None:
    surface, buf = plain_surface()
    long_line = "ERROR " + "x" * 300 + " [red]not markup[/red]"
    await surface.reply(
        MessageRef(HERE, "c9"), Message(title="logs", details=(CodeBlock("tail", long_line),))
    )
    assert buf.getvalue().splitlines() == ["[OK] logs", "  tail", "    " + long_line]


async def test_plain_mode_through_the_engine(deps: Deps) -> None:
    """The real engine: two concurrent steps, one finishing with a table reply."""
    surface, buf = plain_surface()
    db_done = asyncio.Event()

    async def containers() -> Outcome:
        await db_done.wait()
        table = Table("Containers", ("name", "state"), (("docker-backend-1", "running"),))
        return Outcome(
            Status.OK, "12/12 running", fields=(Field("containers", "12/12"),), details=(table,)
        )

    async def database() -> Outcome:
        db_done.set()
        return Outcome(Status.WARN, "slow: 3 queries over 5 s")

    async def procedure(run: Run) -> None:
        await asyncio.gather(
            run.step("Container health", containers()), run.step("Database", database())
        )

    command = Command(text="/sms health", user="alice", source="cli", conversation=HERE)
    run = await Engine(deps).execute(
        procedure, name="health", title=TITLE, command=command, surface=surface
    )
    assert run.status is Status.WARN

    lines = buf.getvalue().splitlines()
    assert not ANSI.search(buf.getvalue())
    assert lines[0] == "[RUNNING] Morning health check"
    started = {"◔ Container health …", "◔ Database …"}
    assert started <= set(lines)
    finished_db = [i for i, line in enumerate(lines) if line.startswith("! Database (")]
    finished_ct = [i for i, line in enumerate(lines) if line.startswith("✓ Container health (")]
    assert len(finished_db) == 1 and len(finished_ct) == 1
    assert re.fullmatch(r"! Database \(\d+\.\ds\): slow: 3 queries over 5 s", lines[finished_db[0]])
    # Both were running at once: each was told started before either finished.
    assert max(lines.index(line) for line in started) < min(finished_db[0], finished_ct[0])
    reply_at = lines.index("[OK] Containers")
    assert lines[reply_at + 1 : reply_at + 4] == [
        "  Containers",
        "    name              state",
        "    docker-backend-1  running",
    ]
    assert lines[-3:-1] == ["[WARN] Morning health check", "  containers: 12/12"]
    assert re.fullmatch(rf"run {run.id[:8]} · alice · \d+\.\d s", lines[-1])
    # Each step is told started once and finished once; the end does not repeat them.
    assert sum("Container health" in line for line in lines) == 2
    assert sum("Database" in line for line in lines) == 2


async def test_live_mode_leaves_the_final_state_on_screen() -> None:
    surface, console, buf = live_surface()
    assert surface.live is True
    stdout = sys.stdout
    await drive(surface)

    out = SGR.sub("", buf.getvalue())
    for expected in (
        "Container health",
        "Database",
        "2m05s",
        "11/12 running",
        "connections 12/100",
        "WARN",
        "One container is down.",
        "docker-postgres-1",
        "ERROR connection refused",
        "[1] Restart docker-backend-1",
        "run ab12cd34 · alice · 125.4 s",
    ):
        assert expected in out, expected
    # The Live display is stopped: stdout is restored and later output comes last.
    assert sys.stdout is stdout
    console.print("after")
    assert buf.getvalue().endswith("after\n")
    assert surface.buttons() == list(BUTTONS)


async def test_live_mode_with_two_runs_at_once() -> None:
    surface, console, buf = live_surface()
    first = await surface.post(HERE, running(CONTAINERS_RUNNING))
    second = await surface.post(HERE, Message(title="Database check", status=Status.RUNNING))
    await surface.update(second, Message(title="Database check", status=Status.RUNNING, text="."))
    assert "Database check" in buf.getvalue()
    await surface.update(
        second,
        Message(title="Database check", status=Status.CRIT, footer="second finished"),
    )
    assert "second finished" in buf.getvalue()
    await surface.update(first, running(CONTAINERS_WARN))
    await surface.update(first, FINAL)
    await surface.post(HERE, Message(title="Usage", text="one-shot answer"))

    out = SGR.sub("", buf.getvalue())
    assert "CRIT" in out and "11/12 running" in out and "one-shot answer" in out
    console.print("after")
    assert buf.getvalue().endswith("after\n")


async def test_live_mode_close_stops_an_unfinished_display() -> None:
    surface, console, buf = live_surface()
    stdout = sys.stdout
    await surface.post(HERE, running(CONTAINERS_RUNNING))
    assert sys.stdout is not stdout  # Live redirects prints above its area
    surface.close()
    surface.close()
    assert sys.stdout is stdout
    console.print("after")
    assert buf.getvalue().endswith("after\n")
    assert "Container health" in buf.getvalue()
