"""Restore's checks before any proposal, and clicks on a proposal needing two approvers."""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from bot.catalogue import ActionSpec, Catalogue, CommandContext, ProcedureSpec
from bot.chat.base import Conversation
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.errors import UsageError
from bot.events import Click, Command
from bot.messages import Status
from bot.proposals import APPROVE
from bot.store.base import Proposal
from handlers.actions import ClickHandler
from procedures import help as help_
from procedures.catalogue import CATALOGUE
from procedures.restore import (
    RESTORE,
    RESTORE_ACTION,
    BackupRefused,
    _inspect_sync,
    format_rto,
    pg_tools,
    restore_action,
)
from tests.fakes import NOW, FakeSurface
from tests.unit.conftest import make_settings

DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.users (id integer);\n"
    b"--\n-- PostgreSQL database dump complete\n--\n"
)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_complete_plain_dump_and_its_gzip_pass(tmp_path: Path) -> None:
    assert _inspect_sync(_write(tmp_path, "a.sql", DUMP)) is False
    assert _inspect_sync(_write(tmp_path, "a.sql.gz", gzip.compress(DUMP))) is True


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("empty.sql", b"", "is empty"),
        ("custom.dump", b"PGDMP\x01\x0e\x00" + b"\x00" * 64, "pg_restore -f custom.sql"),
        ("enc.sql.enc", bytes(range(256)) * 8, "encrypted or of an unknown format"),
        ("zip.zip", b"PK\x03\x04" + b"\x00" * 64, "zip archive"),
        ("text.sql", b"CREATE TABLE x (id int);\n", "no '-- PostgreSQL database dump' header"),
        ("cut.sql", DUMP[: DUMP.index(b"CREATE")], "truncated"),
        ("bad.sql.gz", gzip.compress(DUMP)[:-12], "corrupt gzip"),
    ],
)
def test_unusable_backups_are_refused_with_what_to_do(
    tmp_path: Path, name: str, data: bytes, why: str
) -> None:
    with pytest.raises(BackupRefused, match=why.replace("(", r"\(").replace(")", r"\)")):
        _inspect_sync(_write(tmp_path, name, data))


def test_the_rto_line() -> None:
    assert format_rto(372) == "6 m 12 s (RTO 15 min: met)"
    assert format_rto(42) == "42 s (RTO 15 min: met)"
    assert format_rto(16 * 60) == "16 m 0 s (RTO 15 min: missed)"


def test_restore_takes_a_name_never_a_path(deps: Deps) -> None:
    parse = CATALOGUE.command("restore")
    assert parse is not None
    ctx = CommandContext(deps, CATALOGUE)
    for word in ("../backup.sql", "/etc/passwd", ".hidden.sql"):
        with pytest.raises(UsageError, match="looks like a path"):
            parse.parse([word], ctx)
    assert parse.parse(["backup_20261130_020000.sql"], ctx).name == "restore"
    assert parse.role.value == "operator"


# -- two different approvers ----------------------------------------------------------


@dataclass(frozen=True)
class TwoArgs:
    what: str
    approvals: int = 2


@dataclass
class Calls:
    runs: list[str]


def _catalogue(calls: Calls) -> Catalogue:
    async def run(run: Run, args: TwoArgs) -> None:
        calls.runs.append(f"{args.what} by {run.command.user}")
        run.text = "done"

    action: ActionSpec[TwoArgs] = ActionSpec(
        name="dangerous",
        args=TwoArgs,
        run=run,
        title=lambda a: f"Doing {a.what}",
        target=lambda a: a.what,
        confirm_label=lambda a: f"Do {a.what}",
        approvals=lambda a: a.approvals,
    )
    return Catalogue(
        specs=(help_.SPEC, ProcedureSpec(name="dangerous", summary="x", action=action)),
        default_command="help",
    )


async def _proposal(deps: Deps, surface: FakeSurface, needed: int) -> str:
    async def propose(run: Run) -> None:
        await run.propose(
            action="dangerous",
            args={"what": "it", "approvals": needed},
            summary="do it",
            confirm_label="Do it",
            needed=needed,
        )

    run = await Engine(deps).execute(
        propose,
        name="dangerous",
        title="Do it?",
        command=Command("dangerous", "console:ann", "console", Conversation("console")),
        surface=surface,
    )
    [proposal] = run.proposals
    return proposal.id


def _click(value: str, user: str) -> Click:
    return Click(APPROVE, value, user, "console", Conversation("console"))


async def test_two_different_approvers_start_it_once(deps: Deps, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sms_approvers=("console:ann", "console:bob", "console:cy"))
    deps = replace(deps, settings=settings)
    surface = FakeSurface()
    calls = Calls([])
    pid = await _proposal(deps, surface, 2)
    shown = surface.first_versions[f"proposal-{pid}"]
    assert "0 of 2 approvals" in shown.text
    handler = ClickHandler(deps, Engine(deps), catalogue=_catalogue(calls))

    assert await handler.handle(_click(pid, "console:ann"), surface) == "recorded"
    assert calls.runs == []
    updated = surface.last(f"proposal-{pid}")
    assert "1 of 2 approvals: console:ann" in updated.text and updated.buttons
    assert any(m.title == "1 of 2 approvals: console:ann" for m in surface.replies())
    # The same person again: refused, privately, nothing runs.
    assert await handler.handle(_click(pid, "console:ann"), surface) == "duplicate_approver"
    assert surface.events[-1][0] == "ephemeral" and calls.runs == []

    assert await handler.handle(_click(pid, "console:bob"), surface) == "approved"
    assert calls.runs == ["it by console:bob"]
    assert await handler.handle(_click(pid, "console:cy"), surface) == "already_decided"
    assert calls.runs == ["it by console:bob"]
    finished = await deps.store.proposal_get(pid)
    assert finished is not None and finished.status == "done"
    assert "Approvals: console:ann, console:bob." in surface.last(f"proposal-{pid}").text


async def test_one_approval_when_configured_so(deps: Deps, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sms_approvers=("console:ann",))
    deps = replace(deps, settings=settings)
    surface = FakeSurface()
    calls = Calls([])
    pid = await _proposal(deps, surface, 1)
    handler = ClickHandler(deps, Engine(deps), catalogue=_catalogue(calls))
    assert await handler.handle(_click(pid, "console:ann"), surface) == "approved"
    assert calls.runs == ["it by console:ann"]
    assert (await deps.store.proposal_get(pid)).status == "done"  # type: ignore[union-attr]


# -- the approved restore: its RTO clock --------------------------------------------


APPROVED = NOW - timedelta(minutes=20)


async def _approved_restore(deps: Deps, *, decided_at: datetime) -> Proposal:
    """A restore proposal as the store holds it once an approver's click claimed it."""
    database = pg_tools(deps.settings).target.database
    proposal = Proposal(
        id=uuid.uuid4().hex,
        action=RESTORE_ACTION,
        args={"backup": "backup_20261125_020000.sql", "database": database, "approvals": 1},
        summary="restore",
        run_id=uuid.uuid4().hex,
        conversation="console:console",
        message_key="proposal-x",
        requested_by="console:ann",
        approver_role="approver",
        created_at=decided_at - timedelta(minutes=5),
        expires_at=decided_at + timedelta(hours=1),
    )
    await deps.store.proposal_add(proposal)
    claimed = await deps.store.proposal_claim(proposal.id, by="console:bob", now=decided_at)
    assert claimed is not None
    return claimed


async def _run_restore(deps: Deps, proposal: Proposal, surface: FakeSurface) -> Run:
    args = RESTORE.decode(proposal.args)
    return await Engine(deps).execute(
        partial(restore_action, args=args),
        name=RESTORE_ACTION,
        title="Restoring",
        command=Command(
            "restore", "console:bob", "console", Conversation("console"), proposal_id=proposal.id
        ),
        surface=surface,
    )


async def test_the_rto_clock_starts_at_the_approval(deps: Deps, tmp_path: Path) -> None:
    # Approved 20 minutes before the action runs (a busy replica): the RTO counts those.
    deps = replace(deps, settings=make_settings(tmp_path, sms_incidents_dir=str(tmp_path / "inc")))
    proposal = await _approved_restore(deps, decided_at=APPROVED)
    run = await _run_restore(deps, proposal, FakeSurface())
    # The backup is gone, so it stops at its first check; the record still times it.
    assert "Stopped before any change" in run.text
    [record] = (tmp_path / "inc").glob("restore_*.md")
    text = record.read_text()
    assert f"Approved at: {APPROVED:%Y-%m-%d %H:%M:%S} UTC" in text
    assert "Took: 20 m 0 s (RTO 15 min: missed)" in text


# -- one restore at a time -----------------------------------------------------------


async def test_a_second_restore_is_refused_while_one_runs(deps: Deps, tmp_path: Path) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_incidents_dir=str(tmp_path / "inc")))
    backups = Path(deps.settings.sms_backup_dir)
    _write(backups, "backup_20261125_020000.sql", DUMP)
    # A restore approved a minute ago runs on another replica.
    earlier = NOW - timedelta(minutes=1)
    claimed = await deps.store.job_claim(
        RESTORE_ACTION, slot=earlier, runner="bot-b:7", now=earlier, exclusive=True
    )
    assert claimed
    proposal = await _approved_restore(deps, decided_at=NOW)
    surface = FakeSurface()
    run = await Engine(deps).execute(
        partial(RESTORE.run, args=RESTORE.decode(proposal.args)),
        name=RESTORE_ACTION,
        title="Restoring",
        command=Command(
            "restore", "console:bob", "console", Conversation("console"), proposal_id=proposal.id
        ),
        surface=surface,
    )
    assert run.status is Status.FAILED
    text = surface.last().text
    assert "another restore is running" in text, text
    assert "approved at 2026-11-26 07:29:00 UTC, on bot-b:7" in text
    assert "Nothing was changed" in text
    # Nothing ran: no step, no safety dump, no record; the running restore keeps its slot.
    assert run.steps == []
    assert not list(backups.glob("pre_restore_*")) and not (tmp_path / "inc").exists()
    assert [(r.slot, r.status) for r in await deps.store.job_runs(RESTORE_ACTION)] == [
        (earlier, "running")
    ]


async def test_a_restore_holds_the_slot_only_while_it_runs(deps: Deps, tmp_path: Path) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_incidents_dir=str(tmp_path / "inc")))
    proposal = await _approved_restore(deps, decided_at=APPROVED)
    args = RESTORE.decode(proposal.args)
    run = await Engine(deps).execute(
        partial(RESTORE.run, args=args),
        name=RESTORE_ACTION,
        title="Restoring",
        command=Command(
            "restore", "console:bob", "console", Conversation("console"), proposal_id=proposal.id
        ),
        surface=FakeSurface(),
    )
    assert "Stopped before any change" in run.text  # no backup file: it ran and ended
    [slot] = await deps.store.job_runs(RESTORE_ACTION)
    assert (slot.slot, slot.status) == (APPROVED, "ok")
