"""Proposals and clicks through the console surface, with fakes at the adapter boundary."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from functools import partial

from bot.deps import Deps
from bot.engine import Engine
from bot.events import Click, Command
from bot.messages import Conversation, Mention, Status
from bot.proposals import APPROVE, CANCEL
from handlers.actions import ClickHandler
from procedures.restart import restart_action, restart_proposal
from tests.fakes import NOW, FakeSurface
from tests.unit.conftest import make_settings

APPROVER = "console:alice"


def _with_approvers(deps: Deps, tmp_path) -> Deps:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, sms_approvers=(APPROVER,), sms_recovery_timeout_s=2)
    return replace(deps, settings=settings)


async def _propose(deps: Deps, surface: FakeSurface) -> str:
    cmd = Command("restart backend", "console:bob", "console", Conversation("console"))
    run = await Engine(deps).execute(
        partial(restart_proposal, service="backend"),
        name="restart",
        title="Restart backend?",
        command=cmd,
        surface=surface,
    )
    assert run.status is Status.OK, run.message()
    [proposal] = run.proposals
    return proposal.id


def _click(action: str, value: str, user: str = APPROVER) -> Click:
    return Click(action, value, user, "console", Conversation("console"))


async def test_approval_restarts_once_and_verifies(deps: Deps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    deps = _with_approvers(deps, tmp_path)
    surface = FakeSurface()
    pid = await _propose(deps, surface)
    stored = await deps.store.proposal_get(pid)
    assert stored is not None and stored.args == {
        "service": "backend",
        "container": "docker-backend-1",
    }
    handler = ClickHandler(deps, Engine(deps))
    outcomes = await asyncio.gather(
        handler.handle(_click(APPROVE, pid), surface),
        handler.handle(_click(APPROVE, pid), surface),
    )
    assert sorted(outcomes) == ["already_decided", "approved"]
    assert deps.docker.restarts == ["backend"]  # type: ignore[attr-defined]
    done = await deps.store.proposal_get(pid)
    assert done is not None and done.status == "done"
    assert done.result and "recovered" in done.result
    # The proposal's message lost its buttons and shows the outcome.
    last = surface.last(f"proposal-{pid}")
    assert last.buttons == () and "Done" in last.text
    assert (
        await deps.store.count_audit(
            action="restart", target="docker-backend-1", since=NOW - timedelta(hours=1)
        )
        == 1
    )


async def test_a_viewer_cannot_approve(deps: Deps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    deps = _with_approvers(deps, tmp_path)
    surface = FakeSurface()
    pid = await _propose(deps, surface)
    outcome = await ClickHandler(deps, Engine(deps)).handle(
        _click(APPROVE, pid, user="console:mallory"), surface
    )
    assert outcome == "refused"
    assert deps.docker.restarts == []  # type: ignore[attr-defined]
    kind, user, msg = surface.events[-1]
    assert (kind, user) == ("ephemeral", "console:mallory")
    assert "approver role" in msg.text
    stored = await deps.store.proposal_get(pid)
    assert stored is not None and stored.status == "pending"


async def test_no_approvers_configured_says_how_to_configure(deps: Deps) -> None:
    surface = FakeSurface()
    pid = await _propose(deps, surface)
    proposal_msg = surface.last(f"proposal-{pid}")
    assert "set SMS_APPROVERS" in proposal_msg.text
    outcome = await ClickHandler(deps, Engine(deps)).handle(_click(APPROVE, pid), surface)
    assert outcome == "refused"
    assert "set SMS_APPROVERS" in surface.events[-1][2].text


async def test_cancel_and_unknown_buttons(deps: Deps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    deps = _with_approvers(deps, tmp_path)
    surface = FakeSurface()
    pid = await _propose(deps, surface)
    handler = ClickHandler(deps, Engine(deps))
    assert await handler.handle(_click(CANCEL, pid, user="console:bob"), surface) == "cancelled"
    assert await handler.handle(_click(APPROVE, pid), surface) == "already_decided"
    assert await handler.handle(_click("self.destruct", pid), surface) == "unknown_action"
    assert await handler.handle(_click(APPROVE, "nope"), surface) == "unknown_proposal"
    assert deps.docker.restarts == []  # type: ignore[attr-defined]


async def test_unclicked_proposals_expire(deps: Deps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    deps = _with_approvers(deps, tmp_path)
    surface = FakeSurface()
    pid = await _propose(deps, surface)
    handler = ClickHandler(replace(deps, clock=lambda: NOW + timedelta(minutes=31)), Engine(deps))
    assert await handler.expire_due({"console": surface}) == 1
    last = surface.last(f"proposal-{pid}")
    assert last.buttons == () and "Expired" in last.text
    assert await handler.handle(_click(APPROVE, pid), surface) == "already_decided"
    assert deps.docker.restarts == []  # type: ignore[attr-defined]


async def test_backup_and_vacuum_commands_propose_and_bind_the_stored_target(
    deps: Deps,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from handlers.dispatch import Dispatcher
    from procedures.catalogue import CATALOGUE

    deps = _with_approvers(deps, tmp_path)
    dispatcher = Dispatcher(deps, Engine(deps))
    for text, action, args in [
        ("backup", "backup", {"service": "backup", "container": "sms-db-backup"}),
        ("vacuum", "vacuum", {"database": "student_management"}),
    ]:
        handled = await dispatcher.handle(
            Command(text, "console:bob", "console", Conversation("console")), FakeSurface()
        )
        assert handled.run is not None, text
        [proposal] = handled.run.proposals
        assert (proposal.action, dict(proposal.args)) == (action, args)
        spec = CATALOGUE.action(action)
        assert spec is not None
        decoded = spec.decode(proposal.args)
        assert spec.encode(decoded) == args
        assert "argv" not in args


async def test_a_proposal_in_a_thread_on_another_surface_is_shown_there(
    deps: Deps,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """An incident thread in Slack and Teams (FanOut): a Teams click updates both copies."""
    deps = _with_approvers(deps, tmp_path)
    home = FakeSurface(name="fanout")
    cmd = Command("restart backend", "console:bob", "console", Conversation("fanout", "[]"))
    run = await Engine(deps).execute(
        partial(restart_proposal, service="backend"),
        name="restart",
        title="Restart backend?",
        command=cmd,
        surface=home,
    )
    [proposal] = run.proposals
    clicked = FakeSurface(name="teams")
    handler = ClickHandler(deps, Engine(deps))
    handler.surfaces = {"fanout": home}
    assert await handler.handle(_click(APPROVE, proposal.id), clicked) == "approved"
    assert "Done" in home.last(f"proposal-{proposal.id}").text
    assert [kind for kind, _, _ in clicked.events] == []


async def test_a_failed_restart_calls_the_escalation_as_mentions(deps: Deps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The runbook's escalation notifies: mentions in the model, not markup in escaped text."""
    settings = make_settings(
        tmp_path,
        sms_escalation_mention="<!subteam^S0123ABC>",
        teams_escalation_mention="teams:00000000-0000-0000-0000-0000000000aa=On-call lead",
    )
    deps = replace(deps, settings=settings)
    deps.docker.containers = []  # type: ignore[attr-defined]  # gone: the restart fails
    cmd = Command("restart backend", APPROVER, "console", Conversation("console"))
    run = await Engine(deps).execute(
        partial(restart_action, service="backend", container="docker-backend-1"),
        name="restart",
        title="Restart docker-backend-1",
        command=cmd,
        surface=FakeSurface(),
    )
    message = run.message()
    assert "restart of docker-backend-1 failed" in message.text
    assert "<!" not in message.text and "teams:" not in message.text
    assert message.mentions == (
        Mention("!subteam^S0123ABC"),
        Mention("teams:00000000-0000-0000-0000-0000000000aa", "On-call lead"),
    )
