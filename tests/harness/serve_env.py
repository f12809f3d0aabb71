"""The environment of a bot process under test whose SMS is unreachable and whose jobs stay quiet.

Several tests start ``sms-bot serve`` (or build settings) and must not have a
scheduled job fire on its own: the quiet crons come from the catalogue, so a
job added later is quiet here too instead of being forgotten in a copied list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from procedures.catalogue import CATALOGUE

__all__ = ["CLOSED", "NEVER", "quiet_crons", "serve_env", "unreachable_sms"]

NEVER = "0 0 1 1 *"  # midnight on 1 January: never during a test
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1


def quiet_crons() -> dict[str, str]:
    """Every scheduled job's cron setting (field name) set to fire never."""
    return {schedule.cron_setting: NEVER for schedule in CATALOGUE.schedules()}


def unreachable_sms(tmp_path: Path) -> dict[str, Any]:
    """Settings (field names, for ``load_settings``) of a bot whose SMS is unreachable.

    Its files go under ``tmp_path`` and its scheduled jobs stay quiet.
    """
    return quiet_crons() | {
        "bot_audit_log": str(tmp_path / "audit.jsonl"),
        "sms_health_url": f"{CLOSED}/health",
        "sms_prometheus_url": CLOSED,
        "sms_alertmanager_url": CLOSED,
        "sms_grafana_url": CLOSED,
        "sms_database_url": "postgresql://nobody@127.0.0.1:1/none",
        "sms_backup_dir": str(tmp_path / "backups"),
        "sms_incidents_dir": str(tmp_path / "incidents"),
        "sms_check_timeout_s": 2,
    }


def serve_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """This process's environment without the bot's own settings, plus ``unreachable_sms``.

    ``values`` (``BOT_PORT="8091"``...) are added last and win.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SMS_", "BOT_", "SLACK_", "TEAMS_"))
    }
    env.update({name.upper(): str(value) for name, value in unreachable_sms(tmp_path).items()})
    env.update(SMS_SCHEDULE_GRACE_MIN="0", DOCKER_HOST="unix:///nonexistent.sock")
    env.update(values)
    return env
