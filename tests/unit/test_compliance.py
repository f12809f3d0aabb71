"""The compliance checks against fakes (the test restore itself runs on real PostgreSQL)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.adapters.restore_check import psql_target
from bot.catalogue import CommandContext
from bot.config import Settings
from bot.deps import Deps
from bot.errors import ConfigError, UsageError
from bot.messages import Status, Table
from bot.store.base import AuditEvent
from procedures.catalogue import CATALOGUE
from procedures.compliance import (
    CHANGE_STARTED,
    audit_review,
    backend_audit,
    gdpr_retention,
    key_rotation,
    parse_backend_audit,
)
from tests.fakes import NOW
from tests.unit.conftest import make_settings


def _event(minutes_ago: float, action: str, actor: str = "U1", **detail: str) -> AuditEvent:
    return AuditEvent(
        at=NOW - timedelta(minutes=minutes_ago),
        actor=actor,
        source="slack",
        action=action,
        target=detail.pop("target", "t"),
        outcome="ok",
        detail=detail,
    )


def _rows(table: Table) -> list[tuple[str, ...]]:
    return list(table.rows)


async def test_audit_review_counts_who_did_what_and_changes_outside_a_window(
    deps: Deps,
) -> None:
    for event in (
        _event(300, "command", "U_OP", target="restart backend"),
        _event(299, "propose", "U_OP", proposal_id="p1"),
        _event(298, "restart", "U_APP", proposal_id="p1", target="docker-backend-1"),
        _event(200, CHANGE_STARTED, "U_OP"),
        _event(190, "vacuum", "U_APP", proposal_id="p2", target="student_management"),
        _event(180, "change.done", "U_OP"),
    ):
        await deps.store.audit(event)
    done = await audit_review(deps)
    assert done.status is Status.WARN
    assert done.summary.endswith("2 change(s), 1 outside a change window")
    people, outside = done.details
    assert isinstance(people, Table) and isinstance(outside, Table)
    assert _rows(people) == [("U_APP", "0", "0", "2"), ("U_OP", "1", "1", "0")]
    assert [row[1:4] for row in _rows(outside)] == [("restart", "docker-backend-1", "U_APP")]


def test_backend_audit_lines_are_counted_failures_first() -> None:
    lines = [
        {"user": "admin", "action": "login", "success": False},
        {"user": "admin", "action": "login", "success": False},
        {"user": "admin", "action": "login", "success": True},
        {"username": "teacher1", "event": "grade.update", "status": "ok"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    counts, unparsed = parse_backend_audit(text)
    assert counts[("admin", "login", True)] == 2
    assert counts[("teacher1", "grade.update", False)] == 1
    assert unparsed == 1


async def test_backend_audit_is_read_in_the_container(deps: Deps) -> None:
    docker = deps.docker
    docker.files[("backend", "backend/logs/audit.log")] = (  # type: ignore[attr-defined]
        json.dumps({"user": "x", "action": "user.delete", "success": True})
        + "\n"
        + json.dumps({"user": "eve", "action": "login", "success": False})
    )
    done = await backend_audit(deps)
    assert docker.read_calls == [  # type: ignore[attr-defined]
        ("backend", "backend/logs/audit.log", 4 * 1024 * 1024)
    ]
    assert docker.exec_calls == []  # type: ignore[attr-defined]
    assert done.status is Status.WARN
    assert done.summary == "2 admin action(s), 1 failed login(s)"
    (table,) = done.details
    assert isinstance(table, Table)
    assert table.rows[0] == ("eve", "login", "FAILED", "1")


async def test_a_missing_backend_audit_log_is_a_warning(deps: Deps) -> None:
    done = await backend_audit(deps)
    assert done.status is Status.WARN
    assert done.summary.startswith("cannot read backend/logs/audit.log in the backend container")


async def test_key_rotation_ages_and_the_rotated_command(deps: Deps) -> None:
    await deps.store.key_rotation_add("ADMIN_PASSWORD", at=NOW - timedelta(days=3), by="U1")
    await deps.store.key_rotation_add("API_KEY", at=NOW - timedelta(days=45), by="U1")
    done = await key_rotation(deps)
    assert done.status is Status.WARN
    assert done.summary == "due: BACKUP_ENCRYPTION_KEY, API_KEY"
    spec = CATALOGUE.command("rotated")
    assert spec is not None
    context = CommandContext(deps=deps, catalogue=CATALOGUE)
    with pytest.raises(UsageError, match="Known keys"):
        spec.parse(["NO_SUCH_KEY"], context)
    assert spec.parse(["backup_encryption_key"], context).title == (
        "Key rotated: BACKUP_ENCRYPTION_KEY"
    )


async def test_gdpr_retention_counts_and_never_deletes(deps: Deps, tmp_path: Path) -> None:
    deps = replace(
        deps,
        settings=make_settings(
            tmp_path, sms_gdpr_retention="users.created_at=1825,grades.updated_at=365"
        ),
    )
    deps.db.older[("users", "created_at")] = 3  # type: ignore[attr-defined]
    done = await gdpr_retention(deps)
    assert done.status is Status.WARN and done.summary == "3 row(s) past their retention"
    (table,) = done.details
    assert isinstance(table, Table)
    assert table.rows == (
        ("users", "created_at", "1825 days", "3"),
        ("grades", "updated_at", "365 days", "no such table"),
    )
    assert deps.db.rows["users"] == 18  # type: ignore[attr-defined]  # counted, not deleted


def test_retention_setting_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SMS_GDPR_RETENTION: .users. is not TABLE\.COLUMN=DAYS"):
        make_settings(tmp_path, sms_gdpr_retention="users")
    settings: Settings = make_settings(tmp_path, sms_gdpr_retention="public.users.created_at=30")
    assert settings.sms_gdpr_retention == {"public.users.created_at": 30.0}


def test_psql_gets_the_password_in_its_environment_only() -> None:
    target, env = psql_target("postgresql://sms:s%40cret@db:5432/student_management", "x_1")
    assert target == "postgresql://sms@db:5432/x_1"
    assert env == {"PGPASSWORD": "s@cret"}
