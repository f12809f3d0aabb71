"""How quickly the command line answers: ``--help``, ``check-config``, ``run health``.

Each command runs as its own process, as a user or cron starts it, several
times; the benchmark prints the median wall time of each as a ratio against
``python -c pass`` (the interpreter's own start-up on this machine, measured
in the same interleaved rounds, so the figures compare across machines and
loads), with the absolute medians beside; CPU time (user + system) too,
which a busy machine disturbs less than wall time.

``run health`` goes against healthy local services, so all five steps pass
(checked once before the timed rounds: the bench stops if it does not):
a tiny HTTP server on loopback answers ``/health`` (healthy) and Prometheus'
query API (each baseline query at the runbook's baseline value); the SMS
database is a throwaway PostgreSQL cluster with a ``users`` table; the
service map's containers run (busybox, host networking) on the Docker engine
``DOCKER_HOST`` or the default socket reaches; the backup directory holds a
fresh dump; the state is a temporary SQLite file. Where PostgreSQL or Docker
is not available, that part is as before (a closed port; the default service
map, no containers) and the bench says so in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bot.adapters.prometheus import DEFAULT_QUERIES
from bot.config import DEFAULT_SERVICES, parse_services

__all__ = ["main"]

ROUNDS = 7
HEALTHY_OUTPUT = "All 5 checks passed."

_HEALTHY = {
    "status": "healthy",
    "components": {"database": "healthy", "redis": "healthy", "disk": "healthy"},
}
# Each baseline query answered with the runbook's baseline value (Performance
# Baselines table, as in bot/baseline.py): inside every warn threshold.
_BASELINE = {
    "p95_ms": 350.0,
    "p99_ms": 2000.0,
    "throughput_rps": 30.22,
    "error_rate_pct": 1.33,
    "cpu_pct": 15.0,
    "memory_pct": 15.3,
    "disk_pct": 2.95,
}
_ANSWERS = {DEFAULT_QUERIES[key]: value for key, value in _BASELINE.items()}


class _LocalServices(BaseHTTPRequestHandler):
    """The SMS backend's ``/health`` and Prometheus' ``/api/v1/query``, both healthy."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            body: object = _HEALTHY
        elif url.path == "/api/v1/query":
            query = parse_qs(url.query).get("query", [""])[0]
            value = _ANSWERS.get(query)
            # A query not in the table has no series: it reads "no data", and the check fails.
            result = [] if value is None else [{"metric": {}, "value": [time.time(), str(value)]}]
            body = {"status": "success", "data": {"resultType": "vector", "result": result}}
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


@contextlib.contextmanager
def _sms_database(notes: list[str]) -> Iterator[str]:
    """The URL of a throwaway SMS database with users; a closed port (and a note) without one."""
    from tests.harness.loopback import free_port
    from tests.harness.postgres import PgHarnessError, create_users, start_cluster

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_cluster())
            dsn = server.create_database_sync("sms")
        except (PgHarnessError, OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"SMS database: a closed port, not a real one ({exc})")
            dsn = f"postgresql://sms@127.0.0.1:{free_port()}/sms"
        else:
            asyncio.run(create_users(dsn))
        yield dsn


@contextlib.contextmanager
def _sms_containers(notes: list[str]) -> Iterator[dict[str, str]]:
    """Settings of the service map's containers, running; none (and a note) without Docker.

    The engine is the one the bot reaches (``DOCKER_HOST`` or the default
    socket); nothing is started or pulled. The containers are removed whatever happens.
    """
    import docker
    import docker.errors
    import requests.exceptions

    from tests.harness.docker import BusyboxUnavailable, ensure_busybox_image

    prefix = f"sms-bot-bench-{uuid.uuid4().hex[:8]}"
    services = {service: f"{prefix}-{service}" for service in parse_services(DEFAULT_SERVICES)}
    client: docker.DockerClient | None = None
    created: list[str] = []
    try:
        client = docker.from_env(timeout=10)
        image = ensure_busybox_image(client)
        for name in services.values():
            created.append(name)
            client.containers.run(
                image,
                ["/bin/busybox", "sleep", "3600"],
                name=name,
                detach=True,
                network_mode="host",
                labels={"sms-bot-bench": "1"},
                stop_signal="SIGKILL",
            )
    except (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        BusyboxUnavailable,
    ) as exc:
        notes.append(f"containers: the default service map, none running ({exc})")
        services = {}
    try:
        yield (
            {
                "SMS_SERVICES": ",".join(f"{s}={c}" for s, c in services.items()),
                "SMS_EXPECTED_CONTAINERS": str(len(services)),
            }
            if services
            else {}
        )
    finally:
        if client is not None:
            for name in created:
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_container(name, force=True)
            client.close()


def _sms_bot() -> list[str]:
    script = Path(sys.executable).with_name("sms-bot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def _environment(root: Path, base_url: str, **settings: str) -> dict[str, str]:
    """This process's environment without any bot setting, plus the benchmark's and ``settings``."""
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
        SMS_CHECK_TIMEOUT_S="2",
    )
    env.update(settings)
    return env


def _check_healthy(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, expect_pass: bool
) -> None:
    """Run ``run health`` once; with ``expect_pass``, stop the bench unless all five steps pass.

    This first run also creates and migrates the state file and compiles the
    bytecode: not what is measured.
    """
    proc = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if not expect_pass:
        return
    if proc.returncode != 0 or HEALTHY_OUTPUT not in proc.stdout:
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
        raise SystemExit(
            f"startup: `sms-bot run health` against the local services exited {proc.returncode}"
            f" without {HEALTHY_OUTPUT!r}: the figures would not be of a healthy run"
        )


def _seconds(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    notes: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LocalServices)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = Path(tempfile.mkdtemp(prefix="sms-bot-bench-"))
    try:
        with _sms_database(notes) as dsn, _sms_containers(notes) as containers:
            (root / "backups").mkdir()
            (root / "backups" / "backup_1.sql").write_text("-- PostgreSQL database dump\n")
            env = _environment(
                root,
                f"http://127.0.0.1:{server.server_address[1]}",
                SMS_DATABASE_URL=dsn,
                **containers,
            )
            bot = _sms_bot()
            _check_healthy([*bot, "run", "health"], env=env, cwd=root, expect_pass=not notes)
            _measure(bot, env=env, cwd=root, notes=notes)
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _measure(
    bot: Sequence[str], *, env: Mapping[str, str], cwd: Path, notes: Sequence[str]
) -> None:
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
            wall, cpu = _seconds(argv, env=env, cwd=cwd)
            walls[label].append(wall)
            cpus[label].append(cpu)
    wall_base = statistics.median(walls["python -c pass"])
    cpu_base = statistics.median(cpus["python -c pass"])
    print(
        f"startup (median of {ROUNDS}; python -c pass = {wall_base * 1000:.0f} ms wall, "
        f"{cpu_base * 1000:.0f} ms CPU)"
    )
    for note in notes:
        print(f"  not healthy-and-real: {note}")
    for label in list(commands)[1:]:
        wall, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
        print(
            f"  {label:<22}: {wall / wall_base:5.1f} x python -c pass "
            f"({wall * 1000:.0f} ms wall; CPU {cpu / cpu_base:.1f} x, {cpu * 1000:.0f} ms)"
        )
