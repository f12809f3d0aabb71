"""The environment of a bot process under test whose SMS is unreachable and whose jobs stay quiet.

Several tests start ``sms-bot serve`` (or build settings) and must not have a
scheduled job fire on its own: the quiet crons come from the catalogue, so a
job added later is quiet here too instead of being forgotten in a copied list.
"""

from __future__ import annotations

import os
from pathlib import Path

from procedures.catalogue import CATALOGUE

__all__ = ["CLOSED", "NEVER", "quiet_crons", "serve_env"]

NEVER = "0 0 1 1 *"  # midnight on 1 January: never during a test
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1


def quiet_crons() -> dict[str, str]:
    """Every scheduled job's cron setting (field name) set to fire never."""
    return {schedule.cron_setting: NEVER for schedule in CATALOGUE.schedules()}


def serve_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """This process's environment without the bot's own settings, plus an unreachable SMS.

    ``values`` (``BOT_PORT="8091"``...) are added last and win.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SMS_", "BOT_", "SLACK_", "TEAMS_"))
    }
    env.update({name.upper(): cron for name, cron in quiet_crons().items()})
    env.update(
        {
            "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "SMS_HEALTH_URL": f"{CLOSED}/health",
            "SMS_PROMETHEUS_URL": CLOSED,
            "SMS_ALERTMANAGER_URL": CLOSED,
            "SMS_GRAFANA_URL": CLOSED,
            "SMS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "SMS_BACKUP_DIR": str(tmp_path / "backups"),
            "SMS_INCIDENTS_DIR": str(tmp_path / "incidents"),
            "SMS_CHECK_TIMEOUT_S": "2",
            "SMS_SCHEDULE_GRACE_MIN": "0",
            "DOCKER_HOST": "unix:///nonexistent.sock",
        }
    )
    env.update(values)
    return env
