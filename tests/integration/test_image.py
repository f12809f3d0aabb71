"""The bot's image (top-level Dockerfile), built and run against the test services.

An image that builds but cannot reach Docker as its non-root user, listens on
the wrong address, or reports itself unhealthy fails only once deployed; so
the image is built here (tests/debian/build-image: on a stand-in
python:3.11-slim when none can be pulled, with Docker's layer cache making a
rebuild take seconds) and run with host networking on loopback, pointed at the
same healthy SMS deployment as the other integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import docker.errors
import pytest
from docker.models.containers import Container

from tests.harness.docker import TEST_LABEL, DockerEngine, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGE = REPO / "tests" / "debian" / "build-image"
IMAGE = "sms-bot-test/sms-bot:test"
BASE = "python:3.11-slim"
# The budget for what the image adds to its base (decimal megabytes, as Docker shows).
MAX_ADDED_BYTES = 120 * 1000 * 1000
BOT_UID = 10001
TOKEN = "image-test-token"
CHECKS = (
    "Container health",
    "System health endpoint",
    "Performance metrics",
    "Database connectivity",
    "Backup verification",
)
# The first build makes the stand-in base (debootstrap) and downloads the wheels.
BUILD_TIMEOUT_S = 1200
_NS_PER_S = 1_000_000_000

# Whichever test comes first builds the image in its set-up.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(BUILD_TIMEOUT_S + 300)]


@pytest.fixture(scope="session")
def bot_image(docker_engine: DockerEngine) -> str:
    """The image, built once per session by the same script a person runs by hand."""
    env = dict(os.environ)
    env["DOCKER_HOST"] = docker_engine.base_url
    done = subprocess.run(
        [str(BUILD_IMAGE), IMAGE],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        pytest.fail(f"{BUILD_IMAGE.name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    assert done.stdout.strip().splitlines()[-1] == IMAGE
    return IMAGE


@dataclass(frozen=True)
class RunningBot:
    container: Container
    url: str


def _docker_access(engine: DockerEngine) -> dict[str, Any]:
    """How the container's non-root user reaches the engine the tests use."""
    if engine.base_url.startswith("unix://"):
        socket = engine.base_url.removeprefix("unix://")
        return {
            "volumes": {socket: {"bind": "/var/run/docker.sock", "mode": "rw"}},
            # As deploy/compose.yml does: the socket's group, not root.
            "group_add": [str(os.stat(socket).st_gid)],
            "environment": {"DOCKER_HOST": "unix:///var/run/docker.sock"},
        }
    return {"volumes": {}, "group_add": [], "environment": {"DOCKER_HOST": engine.base_url}}


@pytest.fixture
async def running_bot(
    bot_image: str, docker_engine: DockerEngine, deployment: dict[str, str]
) -> AsyncIterator[RunningBot]:
    """``sms-bot serve`` from the image on a free loopback port, removed afterwards."""
    port = free_port()
    access = _docker_access(docker_engine)
    # State, audit log and incidents stay the image's (in its volume); the host
    # paths of the other tests are not the container's to write.
    env = {
        k: v
        for k, v in deployment.items()
        if k not in {"BOT_STATE_URL", "BOT_AUDIT_LOG", "SMS_BACKUP_DIR"}
    }
    env.update(access["environment"])
    env.update({"BOT_HOST": "127.0.0.1", "BOT_PORT": str(port), "ALERT_WEBHOOK_TOKEN": TOKEN})
    volumes = dict(access["volumes"])
    volumes[deployment["SMS_BACKUP_DIR"]] = {"bind": "/backups", "mode": "ro"}
    client = docker_engine.client
    container = await asyncio.to_thread(
        client.containers.run,
        bot_image,
        detach=True,
        name=f"smsbot-image-{uuid.uuid4().hex[:8]}",
        network_mode="host",
        environment=env,
        volumes=volumes,
        group_add=access["group_add"],
        labels={TEST_LABEL: "1"},
        # The image's check, probed every second instead of every 30 s.
        healthcheck={"interval": _NS_PER_S, "timeout": 5 * _NS_PER_S, "retries": 3},
    )
    bot = RunningBot(container=container, url=f"http://127.0.0.1:{port}")
    try:
        try:
            await wait_until(lambda: _answers(bot.url), timeout=30, what="/healthz of the image")
        except AssertionError as exc:
            logs = container.logs().decode(errors="replace")
            raise AssertionError(f"{exc}; container logs:\n{logs[-4000:]}") from exc
        yield bot
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(container.remove, force=True, v=True)


async def _answers(url: str) -> bool:
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url}/healthz") as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _alert() -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "version": "4",
        "status": "firing",
        "receiver": "sms-bot",
        "groupKey": "{}",
        "alerts": [
            {
                "status": "firing",
                # Routed nowhere: no procedure touches the test containers.
                "labels": {"alertname": "ImageSmokeTest", "severity": "info"},
                "annotations": {"summary": "the image takes alerts"},
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "image-smoke",
            }
        ],
    }


async def test_the_image_serves_takes_alerts_checks_health_as_non_root(
    running_bot: RunningBot, docker_engine: DockerEngine
) -> None:
    container = running_bot.container
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{running_bot.url}/healthz") as resp:
            assert resp.status == 200
        async with session.post(
            f"{running_bot.url}/alerts/alertmanager",
            json=_alert(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "stored"
        async with session.post(f"{running_bot.url}/alerts/alertmanager", json=_alert()) as resp:
            assert resp.status == 401

    # The health check, run inside the image against the test services.
    code, output = await asyncio.to_thread(
        container.exec_run, ["sms-bot", "run", "health"], demux=False
    )
    text = output.decode(errors="replace")
    assert code == 0, text
    for check in CHECKS:
        assert check in text, text
    assert "All 5 checks passed." in text

    # Not root: the serving process and what `docker exec` gets by default.
    status = (await asyncio.to_thread(container.exec_run, ["cat", "/proc/1/status"]))[1]
    uids = next(line for line in status.decode().splitlines() if line.startswith("Uid:"))
    assert set(uids.split()[1:]) == {str(BOT_UID)}, uids
    top = await asyncio.to_thread(container.top, ps_args="-o pid,uid,comm")
    assert top["Processes"], top
    assert all(row[1] != "0" for row in top["Processes"]), top

    async def healthy() -> bool:
        def probe() -> str:
            attrs = docker_engine.client.api.inspect_container(container.id)
            return str(attrs["State"].get("Health", {}).get("Status", ""))

        return await asyncio.to_thread(probe) == "healthy"

    await wait_until(healthy, timeout=30, what="the image's HEALTHCHECK to say healthy")


def test_the_image_adds_at_most_120_mb_and_is_labelled(
    bot_image: str, docker_engine: DockerEngine
) -> None:
    api = docker_engine.client.api
    image = api.inspect_image(bot_image)
    base = api.inspect_image(BASE)
    added = int(image["Size"]) - int(base["Size"])
    assert added <= MAX_ADDED_BYTES, f"the image adds {added / 1e6:.1f} MB to {BASE}"
    config = image["Config"]
    labels = config["Labels"] or {}
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}" in labels, labels
    assert labels["org.opencontainers.image.version"], labels
    assert config["User"] == f"{BOT_UID}:{BOT_UID}"
    assert config["Entrypoint"] == ["sms-bot"] and config["Cmd"] == ["serve"]
    assert "BOT_HOST=0.0.0.0" in config["Env"]
    assert "BOT_STATE_URL=sqlite:////var/lib/sms-bot/sms-bot.db" in config["Env"]
    assert "/var/lib/sms-bot" in (config["Volumes"] or {})
    assert config["Healthcheck"]["Test"][0] == "CMD"
    # psql for restores, from the image's own PATH.
    out = docker_engine.client.containers.run(
        bot_image, entrypoint=["psql", "--version"], remove=True, network_mode="none"
    )
    assert b"psql (PostgreSQL)" in out
