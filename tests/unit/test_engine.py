from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from bot.adapters.docker import DockerUnavailable
from bot.deps import Deps
from bot.engine import Engine, Outcome, Run
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Message, Status
from tests.fakes import FakeSurface


def _command(text: str = "health") -> Command:
    return Command(
        text=text, user="console:alice", source="console", conversation=Conversation("console")
    )


async def test_steps_are_published_as_they_start_and_finish(deps: Deps) -> None:
    surface = FakeSurface()

    async def procedure(run: Run) -> None:
        await run.step("First", _ok("one done"))
        await run.step("Second", _value(42))

    run = await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    assert run.status is Status.OK
    kinds = [kind for kind, _ref, _msg in surface.events]
    assert kinds[0] == "post" and set(kinds[1:]) == {"update"}
    # Each step shows up running, then finished with a duration.
    seen = [(s.name, s.status) for _k, _r, m in surface.events for s in m.steps]
    assert ("First", Status.RUNNING) in seen and ("First", Status.OK) in seen
    final = surface.last()
    assert final.status is Status.OK
    assert [s.summary for s in final.steps] == ["one done", ""]
    assert all(s.duration_s is not None for s in final.steps)
    assert "alice" in final.footer


async def test_a_failed_step_does_not_stop_the_procedure(deps: Deps) -> None:
    surface = FakeSurface()

    async def boom() -> None:
        raise DockerUnavailable("Docker engine not reachable at unix:///x")

    async def procedure(run: Run) -> None:
        await run.step("Check container", boom())
        await run.step("Then this", _ok("ran"))

    run = await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    final = surface.last()
    assert [s.status for s in final.steps] == [Status.FAILED, Status.OK]
    assert final.steps[0].summary == "Docker engine not reachable at unix:///x"
    assert run.status is Status.FAILED


async def test_a_step_times_out_with_a_clear_summary(deps: Deps) -> None:
    surface = FakeSurface()

    async def procedure(run: Run) -> None:
        await run.step("Hangs", asyncio.Event().wait(), timeout=0.05)

    await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    step = surface.last().steps[0]
    assert step.status is Status.FAILED
    assert step.summary == "timed out after 0.05 s"


async def test_a_bug_is_logged_and_shown_with_a_reference(deps: Deps) -> None:
    surface = FakeSurface()

    async def broken() -> None:
        raise KeyError("oops")

    async def procedure(run: Run) -> None:
        await run.step("Buggy", broken())

    await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    step = surface.last().steps[0]
    assert step.status is Status.FAILED
    assert step.summary.startswith("internal error (ref ")
    assert "KeyError" not in step.summary


async def test_a_crashing_procedure_ends_the_run_failed(deps: Deps) -> None:
    surface = FakeSurface()

    async def procedure(run: Run) -> None:
        raise RuntimeError("bug")

    run = await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    assert run.status is Status.FAILED
    assert "Something went wrong inside the bot (ref " in surface.last().text


async def test_outcome_details_are_replies_in_the_thread(deps: Deps) -> None:
    surface = FakeSurface()

    async def with_details() -> Outcome:
        return Outcome(Status.WARN, "2 slow", details=(CodeBlock("log", "line"),))

    async def procedure(run: Run) -> None:
        await run.step("Look", with_details())

    run = await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    assert run.status is Status.WARN
    replies = [(kind, ref) for kind, ref, _m in surface.events if kind == "reply"]
    assert replies == [("reply", "m1")]
    assert surface.replies()[0].details == (CodeBlock("log", "line"),)


async def test_runs_and_steps_are_recorded_in_the_store(deps: Deps) -> None:
    async def procedure(run: Run) -> None:
        await run.step("Only", _ok("fine"))

    run = await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command("status"), surface=FakeSurface()
    )
    record = await deps.store.get_run(run.id)
    assert record is not None
    assert record.status == "ok" and record.command == "status"
    assert record.user == "console:alice" and record.finished_at is not None
    steps = await deps.store.list_steps(run.id)
    assert [(s.name, s.status, s.summary) for s in steps] == [("Only", "ok", "fine")]


async def test_background_runs_are_tracked_and_cancelled_on_shutdown(deps: Deps) -> None:
    engine = Engine(deps)
    started = asyncio.Event()

    async def procedure(run: Run) -> None:
        started.set()
        await asyncio.Event().wait()

    task = engine.start(
        procedure, name="demo", title="Demo", command=_command(), surface=FakeSurface()
    )
    await started.wait()
    await engine.shutdown(grace_s=0.01)
    assert task.done()


async def _ok(summary: str) -> Outcome:
    return Outcome(Status.OK, summary)


async def _value(value: int) -> int:
    return value


async def test_a_background_task_that_fails_is_logged_when_it_ends(deps: Deps) -> None:
    async def escapes() -> None:
        raise RuntimeError("escaped execute")

    engine = Engine(deps)
    with capture_logs() as logs:
        task = engine.spawn(escapes(), name="run:x")
        await asyncio.wait({task})
        await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    [failed] = [e for e in logs if e["event"] == "run.task_failed"]
    assert failed["task"] == "run:x"
    assert isinstance(failed["exc_info"], RuntimeError)


async def test_a_deferred_run_posts_once_finished_then_its_thread(deps: Deps) -> None:
    """A scheduled report's one post carries the verdict; replies and proposals follow it."""
    surface = FakeSurface()

    async def procedure(run: Run) -> None:
        await run.step("First", _ok("one done"))
        await run.reply(Message(title="details"))
        await run.propose(action="vacuum", args={}, summary="do it", confirm_label="Do it")
        run.text = "All fine"

    run = await Engine(deps).execute(
        procedure,
        name="demo",
        title="Demo",
        command=_command(),
        surface=surface,
        deferred=True,
    )
    kinds = [kind for kind, _ref, _msg in surface.events]
    assert kinds == ["post", "reply", "reply"]
    posted = surface.events[0][2]
    assert posted.status is Status.OK and posted.text == "All fine"
    assert [s.status for s in posted.steps] == [Status.OK]
    assert surface.events[1][2].title == "details"
    [proposal] = run.proposals
    assert surface.events[2][1] == "m1"  # in the report's thread
    assert proposal.message_key in surface.keys


async def test_a_live_run_shows_running_first(deps: Deps) -> None:
    surface = FakeSurface()

    async def procedure(run: Run) -> None:
        await run.step("First", _ok("one done"))

    await Engine(deps).execute(
        procedure, name="demo", title="Demo", command=_command(), surface=surface
    )
    assert surface.events[0][2].status is Status.RUNNING
