"""The command line loads only what a command uses (``bench/startup.py`` times it).

Checked by the modules a fresh interpreter holds after the command, not by
a clock: ``--help`` loads no library at all, ``check-config`` none of the
application's clients nor the store's queries and drivers, and a terminal
command without Slack no Slack library, nor rich's traceback renderer, nor
what only ``serve`` uses (the HTTP server, the scheduler, the metrics library).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

HEAVY = {"aiohttp", "docker", "requests", "rich", "slack_bolt", "slack_sdk", "structlog"}

_PROBE = """
import json, sys
from bot.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""


def _report(
    tmp_path: Path, probe: str, *args: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """What ``probe`` wrote (JSON) after running the command line ``args`` in a fresh interpreter.

    The probe gets the report's path as its first argument, the command after it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "SMS_", "SLACK_"))}
    env["BOT_STATE_URL"] = f"sqlite:///{tmp_path}/state.db"
    env.update(extra or {})
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-c", probe, str(report), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def _loaded_after(
    tmp_path: Path, *args: str, extra: dict[str, str] | None = None
) -> tuple[int, set[str]]:
    """The exit code, and every module loaded (packages as ``a`` and ``a.b``)."""
    result = _report(tmp_path, _PROBE, *args, extra=extra)
    modules = set(result["modules"])
    return result["code"], modules | {m.split(".")[0] for m in modules}


def test_help_loads_no_library(tmp_path: Path) -> None:
    code, modules = _loaded_after(tmp_path, "--help")
    assert code == 0
    assert modules & (HEAVY | {"asyncio", "pydantic", "pydantic_settings"}) == set()


def test_check_config_loads_no_client(tmp_path: Path) -> None:
    code, modules = _loaded_after(tmp_path, "check-config")
    assert code == 0
    assert modules & HEAVY == set()


def test_check_config_loads_no_settings_library(tmp_path: Path) -> None:
    """pydantic-settings loads its CLI parser and every cloud source: longer than the goal."""
    code, modules = _loaded_after(tmp_path, "check-config")
    assert code == 0
    assert "pydantic" in modules
    assert modules & {"pydantic_settings", "dotenv"} == set()


def test_check_config_with_default_schedules_loads_no_scheduler(tmp_path: Path) -> None:
    """APScheduler (and asyncio with it) loads to check a schedule that was set, only."""
    code, modules = _loaded_after(tmp_path, "check-config")
    assert code == 0
    assert modules & {"apscheduler", "asyncio"} == set()
    code, modules = _loaded_after(
        tmp_path, "check-config", extra={"SMS_MORNING_SUMMARY_CRON": "0 7 * * *"}
    )
    assert code == 0
    assert "apscheduler" in modules


def test_check_config_loads_neither_store_backend(tmp_path: Path) -> None:
    """``BOT_STATE_URL`` is checked by ``bot.store.url``; the backends load in ``open_store``."""
    code, modules = _loaded_after(tmp_path, "check-config")
    assert code == 0
    store = {"bot.store.sql", "bot.store.sqlite", "bot.store.postgres", "bot.store.base"}
    assert modules & (store | {"asyncpg", "aiosqlite", "sqlite3"}) == set()


@pytest.mark.parametrize("words", [["run", "help"]])
def test_a_terminal_command_without_slack_loads_no_slack_nor_docker(
    tmp_path: Path, words: list[str]
) -> None:
    code, modules = _loaded_after(tmp_path, *words)
    assert code == 0
    assert modules & {"slack_bolt", "slack_sdk", "docker", "requests"} == set()


def test_a_terminal_command_loads_no_http_server(tmp_path: Path) -> None:
    """``run`` and ``shell`` use aiohttp's client only; its server side is for ``serve``."""
    code, modules = _loaded_after(tmp_path, "run", "help")
    assert code == 0
    assert "aiohttp" in modules
    assert modules & {"aiohttp.web", "aiohttp.web_app", "bot.http"} == set()


def test_a_terminal_command_loads_no_rich_traceback_nor_pygments(tmp_path: Path) -> None:
    """structlog is loaded by ``bot.logs`` without rich's traceback and pretty-printer."""
    code, modules = _loaded_after(tmp_path, "run", "help")
    assert code == 0
    assert modules & {"rich.traceback", "rich.pretty", "pygments"} == set()
    assert "structlog" in modules


def test_check_config_with_alert_routes_loads_no_rich_traceback(tmp_path: Path) -> None:
    """Routes are checked against the catalogue, which logs: structlog comes via ``bot.logs``."""
    routes = '[{"alertname": "DiskFull", "procedure": "backend_down", "priority": "P0"}]'
    code, modules = _loaded_after(tmp_path, "check-config", extra={"SMS_ALERT_ROUTES": routes})
    assert code == 0
    assert "procedures.catalogue" in modules
    assert modules & {"rich.traceback", "rich.pretty", "pygments"} == set()


_GC_PROBE = """
import gc, json, sys
from bot.cli import main
seen = []
gc.callbacks.append(
    lambda phase, info: seen.append(gc.get_freeze_count()) if phase == "start" else None
)
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "frozen_at_collections": seen, "enabled": gc.isenabled(),
               "frozen_after": gc.get_freeze_count()}, out)
"""


def test_the_collector_waits_until_the_app_is_built(tmp_path: Path) -> None:
    """Start-up's objects are frozen before the first collection, then the collector runs."""
    result = _report(tmp_path, _GC_PROBE, "run", "help")
    assert result["code"] == 0
    assert all(frozen > 0 for frozen in result["frozen_at_collections"])
    # As the caller had it: on, nothing left frozen.
    assert result["enabled"] is True
    assert result["frozen_after"] == 0


_EXIT_PROBE = """
import gc, json, sys
from bot.cli import entry
report = sys.argv.pop(1)  # entry reads the command from sys.argv, as the script does
code = entry()
with open(report, "w") as out:
    json.dump({"code": code, "frozen_after": gc.get_freeze_count(),
               "unfrozen": len(gc.get_objects())}, out)
"""


def test_the_program_leaves_its_objects_frozen_for_the_exit(tmp_path: Path) -> None:
    """``sms-bot`` ends right after ``entry``: nothing is unfrozen for the exit's collection.

    The interpreter's last collection walks every object not frozen; after
    ``run health`` that was about 200 ms of its 700 (``bench/startup.py``).
    """
    result = _report(tmp_path, _EXIT_PROBE, "run", "help")
    assert result["code"] == 0
    assert result["frozen_after"] > 10_000  # start-up's objects and the run's
    # Left for the exit's collection: only what the probe made after entry returned.
    assert result["unfrozen"] < 1_000


def test_the_installed_program_is_the_exiting_entry() -> None:
    """The ``sms-bot`` script calls ``entry`` (``main`` is for callers that go on running)."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"sms-bot": "bot.cli:entry"}


def test_a_terminal_command_loads_no_scheduler(tmp_path: Path) -> None:
    """APScheduler loads where a cron is parsed (``serve``, ``schedule``), not to run a command."""
    code, modules = _loaded_after(tmp_path, "run", "help")
    assert code == 0
    assert "bot.scheduler" in modules
    assert "apscheduler" not in modules


def test_a_terminal_command_loads_no_metrics_library(tmp_path: Path) -> None:
    """No ``/metrics`` in ``run`` or ``shell``: prometheus_client loads for ``serve``."""
    code, modules = _loaded_after(tmp_path, "run", "help")
    assert code == 0
    assert "bot.telemetry" in modules
    assert "prometheus_client" not in modules
