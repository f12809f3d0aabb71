"""How quickly the command line answers: ``--help``, ``check-config``, ``run health``.

Each command runs as its own process, as a user or cron starts it, several
times; the benchmark prints the median wall time of each as a ratio against
``python -c pass`` (the interpreter's own start-up on this machine, measured
in the same interleaved rounds, so the figures compare across machines and
loads), with the absolute medians beside; CPU time (user + system) too,
which a busy machine disturbs less than wall time.

``run health`` goes against local services: a tiny HTTP server on loopback
answers ``/health`` (healthy) and Prometheus' query API (one sample), the
backup directory holds a fresh dump, the state is a temporary SQLite file.
The Docker engine is whatever ``DOCKER_HOST`` reaches (the containers of the
service map need not exist), and the SMS database is a closed loopback port:
both steps still run their real adapter, imports included.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["main"]

ROUNDS = 7

_HEALTHY = {
    "status": "healthy",
    "components": {"database": "healthy", "redis": "healthy", "disk": "healthy"},
}


class _LocalServices(BaseHTTPRequestHandler):
    """The SMS backend's ``/health`` and Prometheus' ``/api/v1/query``, both healthy."""

    def do_GET(self) -> None:
        if self.path.startswith("/health"):
            body = _HEALTHY
        elif self.path.startswith("/api/v1/query"):
            body = {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
            }
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sms_bot() -> list[str]:
    script = Path(sys.executable).with_name("sms-bot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def _environment(root: Path, base_url: str) -> dict[str, str]:
    """This process's environment without any bot setting, plus the benchmark's."""
    prefixes = ("BOT_", "SMS_", "SLACK_", "ALERT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    # Start-up as installed: with compiled bytecode (kept in the temporary directory).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    env.update(
        BOT_STATE_URL=f"sqlite:///{root}/state.db",
        BOT_AUDIT_LOG=str(root / "audit.jsonl"),
        SMS_HEALTH_URL=f"{base_url}/health",
        SMS_PROMETHEUS_URL=base_url,
        SMS_BACKUP_DIR=str(root / "backups"),
        SMS_DATABASE_URL=f"postgresql://sms@127.0.0.1:{_closed_port()}/sms",
        SMS_CHECK_TIMEOUT_S="2",
    )
    return env


def _seconds(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LocalServices)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = Path(tempfile.mkdtemp(prefix="sms-bot-bench-"))
    try:
        (root / "backups").mkdir()
        (root / "backups" / "backup_1.sql").write_text("-- PostgreSQL database dump\n")
        env = _environment(root, f"http://127.0.0.1:{server.server_address[1]}")
        bot = _sms_bot()
        # The first run creates and migrates the state file and compiles the
        # bytecode: not what is measured.
        subprocess.run([*bot, "run", "health"], env=env, cwd=root, capture_output=True, check=False)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "sms-bot --help": [*bot, "--help"],
            "sms-bot check-config": [*bot, "check-config"],
            "sms-bot run health": [*bot, "run", "health"],
        }
        # Interleaved rounds: a machine whose load changes meanwhile weighs on all alike.
        walls: dict[str, list[float]] = {label: [] for label in commands}
        cpus: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(ROUNDS):
            for label, argv in commands.items():
                wall, cpu = _seconds(argv, env=env, cwd=root)
                walls[label].append(wall)
                cpus[label].append(cpu)
        wall_base = statistics.median(walls["python -c pass"])
        cpu_base = statistics.median(cpus["python -c pass"])
        print(
            f"startup (median of {ROUNDS}; python -c pass = {wall_base * 1000:.0f} ms wall, "
            f"{cpu_base * 1000:.0f} ms CPU)"
        )
        for label in list(commands)[1:]:
            wall, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
            print(
                f"  {label:<22}: {wall / wall_base:5.1f} x python -c pass "
                f"({wall * 1000:.0f} ms wall; CPU {cpu / cpu_base:.1f} x, {cpu * 1000:.0f} ms)"
            )
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
