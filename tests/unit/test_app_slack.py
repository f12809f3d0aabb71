"""Slack in ``build_app``: terminal commands print only what the command says.

Bolt reads ``SLACK_BOT_TOKEN`` from the environment itself and warns on
stderr about the client and ``authorize`` this bot gives it on purpose. A
terminal command (``run``, ``shell``, ``replay``) never receives a Slack
request, so it must not build Bolt at all; ``serve`` builds it quietly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app import build_app
from bot.cli import main
from tests.harness.docker import free_port
from tests.unit.conftest import make_settings

_BOLT_WARNINGS = ("will be unused", "will be ignored")


def _slack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack configured through the environment, as in production; nothing else reachable."""
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "signing-secret-for-tests",
        "SLACK_API_URL": f"{closed}/api/",
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SMS_HEALTH_URL": f"{closed}/health",
        "SMS_PROMETHEUS_URL": closed,
        "SMS_ALERTMANAGER_URL": closed,
        "SMS_BACKUP_DIR": str(tmp_path / "backups"),
        "SMS_CHECK_TIMEOUT_S": "2",
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
    }.items():
        monkeypatch.setenv(name, value)


def test_run_health_with_slack_configured_prints_no_slack_library_warnings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _slack_env(tmp_path, monkeypatch)
    caplog.set_level(logging.WARNING)
    code = main(["run", "health"])
    captured = capsys.readouterr()
    assert code == 1  # nothing is reachable: the checks fail, as they should
    assert "Health check" in captured.out
    for words in _BOLT_WARNINGS:
        assert words not in captured.err
    assert not [r for r in caplog.records if r.name.startswith("slack_bolt")]
    assert not [r.getMessage() for r in caplog.records if "token" in r.getMessage()]


async def test_terminal_commands_never_build_the_bolt_app(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, slack_bot_token="xoxb-test-token", slack_signing_secret="secret"
    )
    async with build_app(settings) as app:
        assert app.slack is not None
        assert app.slack.surface.name == "slack"  # the outbox still delivers to Slack
        assert "app" not in vars(app.slack)  # Bolt (inbound) not built


async def test_serve_builds_the_bolt_app_without_its_start_up_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    settings = make_settings(
        tmp_path, slack_bot_token="xoxb-test-token", slack_signing_secret="secret"
    )
    caplog.set_level(logging.DEBUG)
    async with build_app(settings) as app:
        assert app.slack is not None
        bolt = app.slack.app
        assert app.slack.app is bolt  # built once
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in messages if any(w in m for w in _BOLT_WARNINGS)], messages
