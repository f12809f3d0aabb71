"""``incident TITLE`` from the terminal: shown there with its buttons, answerable by number.

Driven through ``sms-bot``'s own entry point with stdin and stdout as the
boundary, as an operator would type it.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.store import open_store
from bot.store.base import Incident


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", f"sqlite:///{tmp_path}/state.db")
    monkeypatch.setenv("BOT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("SMS_INCIDENTS_DIR", str(tmp_path / "incidents"))
    monkeypatch.setenv("SMS_BACKUP_DIR", str(tmp_path / "backups"))
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _incidents(tmp_path: Path) -> list[Incident]:
    """Every incident in the store the command left behind (read after it exited)."""

    async def read() -> list[Incident]:
        store = open_store(f"sqlite:///{tmp_path}/state.db")
        await store.open()
        try:
            now = datetime.now(UTC)
            return await store.incidents_between(now - timedelta(days=1), now + timedelta(days=1))
        finally:
            await store.close()

    return asyncio.run(read())


def test_run_incident_shows_the_incident_and_its_buttons(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "incident", "Disk", "full"]) == 0
    out = capsys.readouterr().out
    assert "FIRING [P2] Manual incident: Disk full" in out
    assert "[1] Acknowledge  [2] Resolve" in out
    [incident] = _incidents(env)
    assert incident.title == "Disk full" and incident.root_key  # its thread is the terminal


def test_shell_acknowledges_and_resolves_an_incident_by_number(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("incident Disk full\n1\n1\n"))
    assert main(["shell"]) == 0
    out = capsys.readouterr().out
    assert "FIRING [P2] Manual incident: Disk full" in out
    assert "[1] Acknowledge  [2] Resolve" in out
    assert "Acknowledged by console:" in out
    assert "RESOLVED [P2] Manual incident: Disk full" in out
    assert "Resolved after" in out
    [incident] = _incidents(env)
    assert incident.status == "resolved"
    assert incident.acknowledged_by and incident.acknowledged_by.startswith("console:")
    assert incident.record_path and Path(incident.record_path).is_file()
