"""deploy/compose.yml: valid YAML that joins the SMS stack as the README says.

Compose reports a mistake in this file only when an operator runs it next to
production, so its shape is checked here: the service Alertmanager's receiver
names, the socket, the backup folder, .env, the state volume, the external
network, and the commented socket-proxy alternative (uncommented, it must
parse too and allow only what bot/adapters/docker.py calls).
``docker compose config`` runs as well when the compose plugin is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yml"
RECEIVER = REPO / "deploy" / "alertmanager" / "sms-bot-receiver.yml"
PROXY_MARK = "  # docker-socket-proxy:"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _uncommented_proxy() -> dict[str, Any]:
    """The commented docker-socket-proxy service, uncommented as the README says to."""
    lines = COMPOSE.read_text().splitlines()
    start = lines.index(PROXY_MARK)
    block: list[str] = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append("  " + line[len("  # ") :] if line.startswith("  # ") else "")
    parsed = yaml.safe_load("services:\n" + "\n".join(block))
    service = parsed["services"]["docker-socket-proxy"]
    assert isinstance(service, dict)
    return service


def test_the_bot_service_has_socket_backups_env_file_state_and_restart() -> None:
    bot = _compose()["services"]["sms-bot"]
    assert bot["env_file"] == ".env"
    assert bot["restart"] == "unless-stopped"
    volumes = bot["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
    backups = [v for v in volumes if v.endswith(":/backups")]
    assert len(backups) == 1  # read-write: no :ro
    assert "sms-bot-state:/var/lib/sms-bot" in volumes
    # The healthcheck is the image's; a compose healthcheck would replace it.
    assert "healthcheck" not in bot
    env = bot["environment"]
    assert env["BOT_HOST"] == "0.0.0.0"
    assert env["SMS_BACKUP_DIR"] == "/backups"
    assert env["BOT_STATE_URL"] == "sqlite:////var/lib/sms-bot/sms-bot.db"
    assert any("DOCKER_GID" in str(group) for group in bot["group_add"])


def test_the_state_volume_and_the_stacks_network_are_declared() -> None:
    data = _compose()
    assert "sms-bot-state" in data["volumes"]
    network = data["networks"]["sms"]
    assert network["external"] is True
    assert network["name"] == "${SMS_NETWORK:-docker_default}"
    assert data["services"]["sms-bot"]["networks"] == ["sms"]


def test_alertmanager_reaches_the_service_by_its_name_and_port() -> None:
    """The receiver posts to http://sms-bot:8090: the service name and exposed port match."""
    assert "http://sms-bot:8090/alerts/alertmanager" in RECEIVER.read_text()
    bot = _compose()["services"]["sms-bot"]
    assert "sms-bot" in _compose()["services"]
    assert "8090" in bot["expose"]


def test_the_commented_socket_proxy_parses_and_allows_only_what_the_bot_uses() -> None:
    proxy = _uncommented_proxy()
    assert proxy["image"].startswith("tecnativa/docker-socket-proxy")
    assert proxy["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock:ro"]
    assert proxy["networks"] == ["sms"]
    allowed = {name for name, value in proxy["environment"].items() if value == 1}
    assert allowed == {
        "CONTAINERS",
        "POST",
        "ALLOW_RESTARTS",
        "ALLOW_START",
        "ALLOW_STOP",
        "EXEC",
        "ALLOW_EXEC",
        "ALLOW_LOGS",
        "VERSION",
    }
    text = COMPOSE.read_text()
    assert "DOCKER_HOST: tcp://docker-socket-proxy:2375" in text


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    (tmp_path / ".env").write_text("DOCKER_GID=999\n")
    done = subprocess.run(
        [docker, "compose", "--project-directory", str(tmp_path), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
