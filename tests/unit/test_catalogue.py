"""The procedure catalogue: one spec per procedure module, read by every entry point.

Also holds the guard that keeps DESIGN.md's promise: no procedure, command,
action or job name appears in ``bot/``.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bot.catalogue import (
    ActionArgsInvalid,
    ActionSpec,
    Catalogue,
    CommandContext,
    CommandSpec,
    Invocation,
    ProcedureSpec,
    Schedule,
    without_args,
)
from bot.deps import Deps
from bot.engine import Engine, Run
from bot.errors import UsageError
from bot.proposals import APPROVE
from handlers.actions import ClickHandler
from procedures.backup import BackupArgs
from procedures.catalogue import CATALOGUE
from procedures.restart import RestartArgs
from procedures.terminate import TerminateArgs
from procedures.vacuum import VacuumArgs
from tests.fakes import FakeSurface
from tests.unit.test_actions import _click, _propose, _with_approvers

BOT = Path(__file__).resolve().parents[2] / "bot"

# What bot/ may contain although it matches a catalogued name, and why.
ALLOWED_IN_BOT = {
    # Settings fields DESIGN.md fixes (SMS_MORNING_SUMMARY_CRON); the schedule names
    # its field, the core only declares it.
    "sms_morning_summary_cron": "Settings field / env variable fixed by DESIGN.md",
    # The example in `sms-bot run --help`, an external text kept as it was.
    "or a scheduled job, e.g. morning-summary": "sms-bot run --help text",
}
# Plain words that are catalogued command names but are also ordinary data keys in the
# core: only an exact string literal would name the command, and these are used as keys.
ORDINARY_WORDS = {
    "status": "the status key of alerts, runs, proposals and incidents",
    "incident": "the file name of an incident record without a title",
    "runbook": "Alertmanager's runbook annotation, linked from an incident",
}


def _catalogued_names() -> set[str]:
    names: set[str] = set()
    for spec in CATALOGUE.specs:
        names.add(spec.name)
        names.update(cmd.name for cmd in spec.commands)
        if spec.action is not None:
            names.add(spec.action.name)
        names.update(s.job for s in spec.schedules)
    return names


def _tokens(path: Path) -> list[tuple[int, str, bool]]:
    """Identifiers and string literals (line, text, is a string); comments and docstrings
    are prose."""
    out = []
    source = path.read_text()
    docstrings = {
        node.body[0].lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.start[0] in docstrings:
            continue
        if tok.type == tokenize.NAME:
            out.append((tok.start[0], tok.string, False))
        elif tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):  # f-strings: check their text
                value = tok.string
            out.append((tok.start[0], str(value), True))
    return out


def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")


def test_no_catalogued_name_appears_in_bot() -> None:
    names = _catalogued_names()
    distinctive = {n for n in names if re.search(r"[_\- ]", n)}
    plain = names - distinctive - set(ORDINARY_WORDS)
    found = []
    for path in sorted(BOT.rglob("*.py")):
        for line, text, literal in _tokens(path):
            for allowed in ALLOWED_IN_BOT:
                text = text.replace(allowed, "")
            hits = {n for n in distinctive if _word(n).search(text)}
            # A plain word names a command only as a whole string literal ("vacuum").
            if literal and text in plain:
                hits.add(text)
            found += [f"{path.relative_to(BOT.parent)}:{line}: {n}" for n in sorted(hits)]
    assert not found, "catalogued names in bot/:\n" + "\n".join(found)


def test_the_guard_sees_a_procedure_name() -> None:
    planted = BOT / f"_planted_{uuid.uuid4().hex}.py"
    planted.write_text('ROUTE = "backend_down"\nJOB = "weekly-report"\nCMD = "vacuum"\n')
    try:
        with pytest.raises(AssertionError) as failed:
            test_no_catalogued_name_appears_in_bot()
    finally:
        planted.unlink()
    text = str(failed.value)
    assert "backend_down" in text and "weekly-report" in text and "vacuum" in text


def test_the_catalogue_declares_every_entry_point() -> None:
    assert [c.name for c in CATALOGUE.commands()] == [
        "help",
        "health",
        "status",
        "logs",
        "db check",
        "db slow",
        "metrics",
        "backups",
        "restart",
        "incident",
        "silence",
        "backup",
        "vacuum",
        "schedule",
        "runbook",
        "sla",
        "capacity",
        "compliance",
        "rotated",
        "change start",
        "change done",
        "change abort",
        "restore",
        "diagnose",
        "memory",
        "perf",
    ]
    assert [(r.alertname, r.procedure, r.priority) for r in CATALOGUE.routes()] == [
        ("BackupStale", "backup_freshness", "P1"),
        ("BackendDown", "backend_down", "P0"),
        ("BackendHTTP500", "backend_down", "P0"),
        ("SlowResponses", "slow_responses", "P1"),
        ("HighLatency", "slow_responses", "P1"),
        ("HighErrorRate", "high_error_rate", "P2"),
        ("ContainerRestarting", "diagnose", "P1"),
        ("HighMemoryUsage", "memory", "P1"),
        ("HighMemory", "memory", "P1"),
        ("LowThroughput", "perf", "P1"),
    ]
    assert [s.job for s in CATALOGUE.schedules()] == [
        "morning-summary",
        "backup-freshness",
        "weekly-checklist",
        "weekly-report",
        "monthly-maintenance",
        "sla-report",
        "prune",
        "capacity-report",
        "capacity-sample",
        "compliance",
    ]
    actions = (
        "restart",
        "terminate",
        "backup",
        "vacuum",
        "restore",
        "start_container",
        "analyze",
    )
    assert {n for n in actions if CATALOGUE.action(n)} == set(actions)


@pytest.mark.parametrize(
    ("action", "stored", "expected"),
    [
        # Exactly what the code before the catalogue stored, as JSON.
        (
            "restart",
            {"service": "backend", "container": "docker-backend-1"},
            RestartArgs(container="docker-backend-1", service="backend"),
        ),
        ("restart", {"container": "docker-backend-1"}, RestartArgs("docker-backend-1")),
        (
            "terminate",
            {"pid": 4242, "query_start": "2026-11-26T07:00:00+00:00", "query": "SELECT 1"},
            TerminateArgs(4242, "2026-11-26T07:00:00+00:00", "SELECT 1"),
        ),
        (
            "terminate",
            {"pid": "4242", "query_start": "2026-11-26T07:00:00+00:00", "query": "SELECT 1"},
            TerminateArgs(4242, "2026-11-26T07:00:00+00:00", "SELECT 1"),
        ),
        (
            "backup",
            {"service": "backup", "container": "sms-db-backup"},
            BackupArgs(container="sms-db-backup", service="backup"),
        ),
        ("vacuum", {"database": "student_management"}, VacuumArgs("student_management")),
    ],
)
def test_stored_json_arguments_decode_into_the_actions_dataclass(
    action: str, stored: dict[str, object], expected: object
) -> None:
    spec = CATALOGUE.action(action)
    assert spec is not None
    assert spec.decode(stored) == expected


@pytest.mark.parametrize(
    ("action", "stored"),
    [
        ("restart", {"service": "backend"}),
        ("terminate", {"pid": "many", "query_start": "x", "query": "y"}),
        ("vacuum", {}),
    ],
)
def test_arguments_that_do_not_fit_are_refused(action: str, stored: dict[str, object]) -> None:
    spec = CATALOGUE.action(action)
    assert spec is not None
    with pytest.raises(ActionArgsInvalid):
        spec.decode(stored)


@pytest.mark.parametrize(
    "stored",
    [{"service": "backend", "container": "docker-backend-1"}, {"container": "docker-backend-1"}],
)
async def test_a_restart_proposal_stored_by_the_earlier_code_is_approvable(
    deps: Deps, tmp_path: Path, stored: dict[str, object]
) -> None:
    deps = _with_approvers(deps, tmp_path)
    surface = FakeSurface()
    fresh = await deps.store.proposal_get(await _propose(deps, surface))
    assert fresh is not None
    old = replace(
        fresh, id=uuid.uuid4().hex, args=dict(stored), message_key=f"proposal-{uuid.uuid4().hex}"
    )
    await deps.store.proposal_add(old)
    outcome = await ClickHandler(deps, Engine(deps)).handle(_click(APPROVE, old.id), surface)
    assert outcome == "approved"
    assert deps.docker.restarts == ["backend"]  # type: ignore[attr-defined]
    done = await deps.store.proposal_get(old.id)
    assert done is not None and done.status == "done", done


async def test_a_proposal_whose_arguments_do_not_fit_changes_nothing(
    deps: Deps, tmp_path: Path
) -> None:
    deps = _with_approvers(deps, tmp_path)
    surface = FakeSurface()
    fresh = await deps.store.proposal_get(await _propose(deps, surface))
    assert fresh is not None
    bad = replace(fresh, id=uuid.uuid4().hex, args={"service": "backend"})
    await deps.store.proposal_add(bad)
    outcome = await ClickHandler(deps, Engine(deps)).handle(_click(APPROVE, bad.id), surface)
    assert outcome == "bad_proposal"
    assert deps.docker.restarts == []  # type: ignore[attr-defined]
    stored = await deps.store.proposal_get(bad.id)
    assert stored is not None and stored.status == "pending"


def _parse(args: list[str], ctx: object) -> Invocation:
    return Invocation(name="x")


async def _noop(run: Run) -> None:
    return None


def test_the_catalogue_refuses_what_would_be_ambiguous() -> None:
    hello = CommandSpec("hello", usage="hello", summary="hi", parse=_parse)
    with pytest.raises(ValueError, match="declared twice"):
        Catalogue(
            specs=(
                ProcedureSpec("a", "a", commands=(hello,)),
                ProcedureSpec("b", "b", commands=(hello,)),
            ),
            default_command="hello",
        )
    with pytest.raises(ValueError, match="default command"):
        Catalogue(specs=(ProcedureSpec("a", "a", commands=(hello,)),), default_command="help")
    with pytest.raises(ValueError, match="not a Settings field"):
        Schedule(job="x", title="X", cron_setting="sms_no_such_cron", procedure=_noop)

    @dataclass
    class Loose:
        value: str

    async def run(run: Run, args: Loose) -> None:
        return None

    with pytest.raises(TypeError, match="frozen dataclass"):
        ActionSpec(
            name="x",
            args=Loose,
            run=run,
            title=str,
            target=str,
            confirm_label=str,
        )


async def test_a_command_without_arguments_runs_its_procedure_or_refuses_more_words(
    deps: Deps,
) -> None:
    """``without_args`` is every no-argument command's parser (``status``, ``db check``...)."""

    async def procedure(run: Run) -> None:
        return None

    parse = without_args("db check", "Database check", procedure)
    context = CommandContext(deps, CATALOGUE)
    assert parse([], context) == Invocation(
        name="db check", title="Database check", procedure=procedure
    )
    with pytest.raises(UsageError) as refused:
        parse(["now"], context)
    assert refused.value.usage == "/sms db check"
