"""Commands from words to answers: parsing, usage errors, exit codes and the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.deps import Deps
from bot.events import Command
from bot.messages import Conversation, Status, Table
from handlers.dispatch import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Dispatcher
from procedures.catalogue import CATALOGUE
from tests.fakes import FakeSurface


def _cmd(text: str, *, source: str = "console", user: str = "console:carol") -> Command:
    return Command(text=text, user=user, source=source, conversation=Conversation("console"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("frobnicate", "Unknown command 'frobnicate'."),
        ("/sms frobnicate now", "Unknown command 'frobnicate'."),
        ("logs", "Which service? Known services: backend, backup, postgres."),
        ("logs nginx", "Unknown service 'nginx'. Known services: backend, backup, postgres."),
        ("logs backend lots", "'lots' is not a number of lines."),
        ("logs backend 0", "The number of lines must be at least 1."),
        ("logs backend -5", "The number of lines must be at least 1."),
        ("logs backend 10 20", "Unexpected argument '20'."),
        ("health now", "Unexpected argument 'now'."),
        ("db", "Unknown db command."),
        ("db drop", "Unknown db command 'drop'."),
    ],
)
async def test_bad_commands_answer_with_usage_and_exit_2(
    dispatcher: Dispatcher, surface: FakeSurface, text: str, reason: str
) -> None:
    handled = await dispatcher.handle(_cmd(text), surface)
    assert handled.exit_code == EXIT_USAGE
    assert handled.run is None
    [(kind, user, msg)] = surface.events
    assert (kind, user) == ("ephemeral", "console:carol")
    assert msg.status is Status.FAILED
    assert msg.text.startswith(reason)
    assert "Usage:" in msg.text and "/sms help" in msg.text
    assert "Traceback" not in msg.text


async def test_unknown_db_subcommand_lists_the_db_commands(
    dispatcher: Dispatcher, surface: FakeSurface
) -> None:
    await dispatcher.handle(_cmd("db drop"), surface)
    text = surface.events[0][2].text
    assert "/sms db check" in text and "/sms db slow" in text


async def test_help_lists_every_command(dispatcher: Dispatcher, surface: FakeSurface) -> None:
    handled = await dispatcher.handle(_cmd("/sms help"), surface)
    assert handled.exit_code == EXIT_OK
    table = surface.events[0][2].details[0]
    assert isinstance(table, Table)
    usages = [row[0] for row in table.rows]
    assert usages == [spec.usage for spec in CATALOGUE.commands()]
    for expected in (
        "help",
        "health",
        "status",
        "logs SERVICE [N]",
        "db check",
        "db slow",
        "metrics",
        "backups",
        "runbook",
    ):
        assert expected in usages
    assert "backend (docker-backend-1)" in surface.events[0][2].text


async def test_empty_command_is_help(dispatcher: Dispatcher, surface: FakeSurface) -> None:
    handled = await dispatcher.handle(_cmd("/sms"), surface)
    assert handled.exit_code == EXIT_OK
    assert surface.events[0][2].title == "sms-bot commands"


async def test_runbook_lists_procedures(dispatcher: Dispatcher, surface: FakeSurface) -> None:
    await dispatcher.handle(_cmd("runbook"), surface)
    table = surface.events[0][2].details[0]
    assert isinstance(table, Table)
    commands = {row[2] for row in table.rows}
    assert {"/sms health", "/sms db slow", "/sms metrics"} <= commands
    assert any(row[0].startswith("P0 Backend down") for row in table.rows)


async def test_logs_are_capped(dispatcher: Dispatcher, surface: FakeSurface, deps: Deps) -> None:
    handled = await dispatcher.handle(_cmd("logs BACKEND 100000"), surface)
    assert handled.exit_code == EXIT_OK
    assert deps.docker.log_calls == [("backend", 500)]  # type: ignore[attr-defined]
    assert "capped at 500 lines" in surface.last().title


async def test_exit_codes_follow_the_worst_check(
    dispatcher: Dispatcher, surface: FakeSurface, deps: Deps
) -> None:
    # No backups at all: the backup check is critical, so `run health` exits 1.
    handled = await dispatcher.handle(_cmd("health", source="cli"), surface)
    assert handled.exit_code == EXIT_FAILED
    assert handled.run is not None and handled.run.status is Status.CRIT

    # Warnings alone keep 0.
    from bot.adapters.prometheus import DEFAULT_QUERIES

    backup = Path(deps.settings.sms_backup_dir) / "backup_new.sql"
    backup.write_text("data")
    import os

    from tests.fakes import NOW

    os.utime(backup, (NOW.timestamp() - 60, NOW.timestamp() - 60))
    deps.prometheus.by_query[DEFAULT_QUERIES["cpu_pct"]] = 85.0  # type: ignore[attr-defined]
    handled = await dispatcher.handle(_cmd("health", source="cli"), FakeSurface())
    assert handled.run is not None and handled.run.status is Status.WARN
    assert handled.exit_code == EXIT_OK


async def test_every_command_is_audited(
    dispatcher: Dispatcher, surface: FakeSurface, deps: Deps
) -> None:
    await dispatcher.handle(_cmd("status"), surface)
    await dispatcher.handle(_cmd("logs nope"), surface)
    events = await deps.store.recent_audit(10)
    got = [(e.action, e.target, e.outcome, e.actor) for e in reversed(events)]
    assert got == [
        ("command", "status", "started", "console:carol"),
        ("command", "status", "ok", "console:carol"),
        ("command", "logs nope", "usage_error", "console:carol"),
    ]
    lines = Path(deps.settings.bot_audit_log).read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["started", "ok", "usage_error"]
    assert json.loads(lines[1])["detail"]["command"] == "status"
    run_id = json.loads(lines[1])["detail"]["run_id"]
    assert (await deps.store.get_run(run_id)) is not None


async def test_command_metrics_are_counted(dispatcher: Dispatcher, deps: Deps) -> None:
    await dispatcher.handle(_cmd("status"), FakeSurface())
    await dispatcher.handle(_cmd("bogus"), FakeSurface())
    registry = deps.metrics.registry
    assert (
        registry.get_sample_value("smsbot_commands_total", {"command": "status", "outcome": "ok"})
        == 1
    )
    assert (
        registry.get_sample_value(
            "smsbot_commands_total", {"command": "unknown", "outcome": "usage_error"}
        )
        == 1
    )
    assert (
        registry.get_sample_value("smsbot_runs_total", {"procedure": "status", "status": "ok"}) == 1
    )
