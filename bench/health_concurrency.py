"""How close ``health`` comes to its slowest step rather than the sum of its steps.

Each adapter answers after its own delay (fakes at the adapter boundary);
the benchmark reports wall time / slowest step and wall time / sum of steps.
A ratio near 1.0 for the first and well under 1.0 for the second means the
five checks really run concurrently.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bot.adapters.prometheus import DEFAULT_QUERIES
from bot.config import load_settings
from bot.engine import Engine
from bot.events import Command
from bot.logs import configure_logging
from bot.messages import Conversation
from bot.store import open_store
from procedures.health import health
from tests.fakes import (
    FakeDb,
    FakeDocker,
    FakeHealth,
    FakePrometheus,
    FakeSurface,
    container,
    fake_deps,
)

SERVICES = {"backend": "docker-backend-1", "postgres": "docker-postgres-1"}
DELAYS = {"docker": 0.20, "health": 0.15, "prometheus": 0.25, "db": 0.10}
ROUNDS = 5


async def main() -> None:
    configure_logging("WARNING", json=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "backups").mkdir()
        (root / "backups" / "backup_1.sql").write_text("dump")
        settings = load_settings(
            _env_file=None,
            bot_state_url=f"sqlite:///{root}/state.db",
            bot_audit_log=str(root / "audit.jsonl"),
            sms_backup_dir=str(root / "backups"),
            sms_services=SERVICES,
            sms_expected_containers=2,
        )
        store = open_store(settings.bot_state_url)
        await store.open()
        docker = FakeDocker(
            SERVICES, [container(n, service=s) for s, n in SERVICES.items()], delay=DELAYS["docker"]
        )
        health_fake = FakeHealth(delay=DELAYS["health"])
        prometheus = FakePrometheus(
            {k: 1.0 for k in DEFAULT_QUERIES if k != "endpoint_p95_ms"}, DEFAULT_QUERIES
        )
        prometheus.delay = DELAYS["prometheus"]
        db = FakeDb()
        db.delay = DELAYS["db"]
        deps = fake_deps(
            settings, store, docker=docker, prometheus=prometheus, db=db, health=health_fake
        )
        engine = Engine(deps)
        walls: list[float] = []
        sums: list[float] = []
        slowest: list[float] = []
        for _ in range(ROUNDS):
            command = Command("health", "bench", "cli", Conversation("console"))
            t0 = time.perf_counter()
            run = await engine.execute(
                health, name="health", title="Health check", command=command, surface=FakeSurface()
            )
            walls.append(time.perf_counter() - t0)
            durations = [s.duration_s or 0.0 for s in run.steps]
            sums.append(sum(durations))
            slowest.append(max(durations))
        await store.close()
    wall = sum(walls) / ROUNDS
    print("health_concurrency")
    print(f"  wall / slowest step : {wall / (sum(slowest) / ROUNDS):.2f}  (1.0 is ideal)")
    print(f"  wall / sum of steps : {wall / (sum(sums) / ROUNDS):.2f}  (1.0 would be sequential)")
