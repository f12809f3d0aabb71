"""deploy/prometheus and deploy/alertmanager, checked by the tools that will load them.

A rule file that promtool rejects, or an Alertmanager config that routes
BackendDown anywhere but sms-bot, fails silently in production: no alert, no
thread, nobody paged. So these tests run promtool and amtool on the files as
shipped, load the rules into a real Prometheus to read back what it parsed,
and start a real Alertmanager on a copy of the receiver config (only the URL,
token file and timings changed) to see it deliver to the bot with the token.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.adapters.alertmanager import AlertmanagerClient
from tests.harness.alertmanager import RECEIVER, AlertmanagerInstance, alertmanager_process
from tests.harness.docker import free_port, wait_until
from tests.harness.processes import stop_async

pytestmark = pytest.mark.integration

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "sms-alerts.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "sms-alerts.tests.yml"
BOT_RULES = DEPLOY / "prometheus" / "sms-bot.rules.yml"
BOT_RULE_TESTS = DEPLOY / "prometheus" / "sms-bot.tests.yml"
# The bot's own alerts: routed anywhere but to the bot, which may be what is down.
BOT_ALERTS = {"SmsBotDown", "SmsBotOutboxStuck", "SmsBotScheduledJobMissed", "SmsBotTokenRefused"}
RECEIVER_CONFIG = DEPLOY / "alertmanager" / "sms-bot-receiver.yml"

# sms-bot's alert routing matches these names exactly (runbook incident classes).
ROUTED = {"BackendDown": "P0", "SlowResponses": "P1", "HighErrorRate": "P2"}
# Common Issues and Performance Degradation (issue 11), routed by the catalogue.
COMMON = {"ContainerRestarting": "P1", "HighMemoryUsage": "P1", "LowThroughput": "P1"}
ALL_ALERTS = {*ROUTED, *COMMON, "HighCPU", "HighMemory", "DiskSpace", "BackupStale"}
PRODUCTION_URL = "http://sms-bot:8090/alerts/alertmanager"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = "prometheus-alertmanager" if name == "amtool" else "prometheus"
        pytest.fail(f"{name!r} is not on PATH: install the Debian package {package!r}")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=False, cwd=DEPLOY.parent
    )


# -- Prometheus rules ----------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    result = _run(_tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass() -> None:
    result = _run(_tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_bot_rules_and_their_unit_tests_pass() -> None:
    checked = _run(_tool("promtool"), "check", "rules", str(BOT_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run(_tool("promtool"), "test", "rules", str(BOT_RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_bot_rules_read_metrics_the_bot_exports() -> None:
    """Each smsbot_ series a rule reads is one ``BotMetrics`` registers (a rename breaks this)."""
    from bot.telemetry import BotMetrics

    exported = {
        sample
        for family in BotMetrics().registry.collect()
        for sample in (family.name, f"{family.name}_total")
    }
    text = BOT_RULES.read_text()
    used = set(re.findall(r"\bsmsbot_[a-z_]+", text))
    assert used and used <= exported, used - exported
    assert set(re.findall(r"alert: (\w+)", text)) == BOT_ALERTS


@pytest.mark.parametrize("alertname", sorted(BOT_ALERTS))
def test_the_bot_alerts_do_not_route_to_the_bot(alertname: str) -> None:
    result = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={RECEIVER_CONFIG}",
        f"alertname={alertname}",
        "job=sms-bot",
        "severity=critical",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["default"]


def test_rule_file_names_the_alerts_the_bot_routes_on() -> None:
    names = set(re.findall(r"^\s*- alert:\s*(\S+)\s*$", RULES.read_text(), re.MULTILINE))
    assert names == ALL_ALERTS


@pytest.fixture
async def loaded_rules(tmp_path: Path) -> AsyncIterator[list[dict[str, Any]]]:
    """The alerting rules as a real Prometheus parsed them (``/api/v1/rules``)."""
    config = tmp_path / "prometheus.yml"
    config.write_text(f"rule_files:\n  - {RULES}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            _tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log_file,
            stderr=log_file,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            groups: list[dict[str, Any]] = []

            async def rules_loaded() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"prometheus exited: {log.read_text()[-2000:]}")
                try:
                    async with session.get(f"{url}/api/v1/rules", params={"type": "alert"}) as r:
                        if r.status != 200:
                            return False
                        groups[:] = (await r.json())["data"]["groups"]
                except (aiohttp.ClientError, TimeoutError):
                    return False
                return bool(groups)

            await wait_until(rules_loaded, timeout=30, what="prometheus to load the rules")
            yield [rule for group in groups for rule in group["rules"]]
    finally:
        await stop_async(proc)


async def test_every_rule_carries_the_labels_and_annotations_the_bot_shows(
    loaded_rules: list[dict[str, Any]],
) -> None:
    assert {rule["name"] for rule in loaded_rules} == ALL_ALERTS
    for rule in loaded_rules:
        where = f"{rule['name']} ({rule['query']})"
        assert rule["labels"]["severity"] in {"critical", "warning"}, where
        assert rule["labels"]["priority"] in {"P0", "P1", "P2"}, where
        assert rule["annotations"]["summary"], where
        assert rule["annotations"]["description"], where
        assert rule["annotations"]["runbook"].startswith("runbook.md#"), where

    for name, priority in {**ROUTED, **COMMON}.items():
        rules = [rule for rule in loaded_rules if rule["name"] == name]
        assert rules, name
        assert {rule["labels"]["priority"] for rule in rules} == {priority}, name
    backend_down = {r["labels"]["cause"]: r for r in loaded_rules if r["name"] == "BackendDown"}
    assert backend_down["unreachable"]["query"] == 'up{job="sms-backend"} == 0'
    assert backend_down["unreachable"]["duration"] == 60
    assert {r["labels"]["severity"] for r in backend_down.values()} == {"critical"}
    for name in ("SlowResponses", "HighErrorRate"):
        [rule] = [r for r in loaded_rules if r["name"] == name]
        assert rule["duration"] == 300, name
        assert rule["labels"]["severity"] == "warning", name
    # Warning and critical levels of the baseline table, one rule each.
    for name in ("HighCPU", "HighMemory", "DiskSpace"):
        levels = {r["labels"]["severity"] for r in loaded_rules if r["name"] == name}
        assert levels == {"warning", "critical"}, name


# -- Alertmanager receiver -----------------------------------------------------


def test_the_catalogue_routes_every_common_issue_alert() -> None:
    from procedures.catalogue import CATALOGUE

    routes = {r.alertname: (r.procedure, r.priority) for r in CATALOGUE.routes()}
    assert routes["ContainerRestarting"] == ("diagnose", "P1")
    assert routes["HighMemoryUsage"] == ("memory", "P1")
    assert routes["HighMemory"] == ("memory", "P1")
    assert routes["LowThroughput"] == ("perf", "P1")
    assert routes["BackupStale"] == ("backup_freshness", "P1")


def test_amtool_accepts_the_receiver_config() -> None:
    result = _run(_tool("amtool"), "check-config", str(RECEIVER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alertname", sorted(ALL_ALERTS))
def test_sms_alerts_route_to_the_bot(alertname: str) -> None:
    result = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={RECEIVER_CONFIG}",
        f"--verify.receivers={RECEIVER}",
        f"alertname={alertname}",
        "instance=backend:8080",
        "severity=critical",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [RECEIVER]


def test_other_alerts_do_not_reach_the_bot() -> None:
    result = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={RECEIVER_CONFIG}",
        "alertname=BackendDownish",
        "instance=backend:8080",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["default"]


def test_receiver_config_holds_no_token() -> None:
    text = RECEIVER_CONFIG.read_text()
    assert "credentials_file:" in text
    assert not re.search(r"^\s*(credentials|bearer_token|password):", text, re.MULTILINE)
    assert PRODUCTION_URL in text


def _substitute(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"expected exactly one {pattern!r} in {RECEIVER_CONFIG.name}"
    return new


def _test_copy(directory: Path, *, webhook_url: str, token: str) -> Path:
    """The shipped config with only what a loopback test must change: URL, token file, timings."""
    token_file = directory / "secrets" / "sms-bot-webhook-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(token + "\n")
    text = RECEIVER_CONFIG.read_text()
    text = _substitute(
        text, r"url: http://sms-bot:8090/alerts/alertmanager$", f"url: {webhook_url}"
    )
    text = _substitute(text, r"credentials_file: \S+$", f"credentials_file: {token_file}")
    text = _substitute(text, r"group_wait: \S+$", "group_wait: 0s")
    text = _substitute(text, r"group_interval: \S+$", "group_interval: 1s")
    copy = directory / "alertmanager.yml"
    copy.write_text(text)
    return copy


async def _wait_logged(
    probe: Callable[[], Awaitable[bool]], am: AlertmanagerInstance, what: str
) -> None:
    """``wait_until``, with Alertmanager's log (read at the timeout) in the failure."""
    try:
        await wait_until(probe, timeout=10, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nalertmanager log:\n{am.log_tail()}") from exc


async def test_shipped_receiver_delivers_to_the_bot_with_the_token_from_its_file(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    received: list[tuple[str, dict[str, Any]]] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append((request.headers.get("Authorization", ""), await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts/alertmanager", webhook)
    server = await aiohttp_server(app)
    token = "deploy-test-token-not-a-secret"
    config = _test_copy(
        tmp_path, webhook_url=str(server.make_url("/alerts/alertmanager")), token=token
    )

    def statuses() -> list[str]:
        return [payload["status"] for _, payload in received]

    async with (
        alertmanager_process(config, workdir=tmp_path / "am") as am,
        aiohttp.ClientSession() as session,
    ):
        client = AlertmanagerClient(am.url, session)
        down = {
            "labels": {
                "alertname": "BackendDown",
                "instance": "backend:8080",
                "severity": "critical",
                "priority": "P0",
            },
            "annotations": {"summary": "SMS backend backend:8080 is down"},
        }
        await client.post_alerts([down])

        async def firing() -> bool:
            return "firing" in statuses()

        await _wait_logged(firing, am, "the firing webhook")
        authorization, payload = received[0]
        assert authorization == f"Bearer {token}"
        assert payload["receiver"] == RECEIVER
        assert payload["version"] == "4"
        assert [a["labels"]["alertname"] for a in payload["alerts"]] == ["BackendDown"]

        # Its symptoms on the same instance are inhibited while the backend is down.
        await client.post_alerts(
            [{"labels": {"alertname": "HighErrorRate", "instance": "backend:8080"}}]
        )
        [inhibited] = await client.alerts(
            active=False, inhibited=True, filters={"alertname": "HighErrorRate"}
        )
        assert inhibited.state == "suppressed"
        assert inhibited.inhibited_by == (payload["alerts"][0]["fingerprint"],)

        await client.post_alerts([{**down, "endsAt": datetime.now(UTC)}])

        async def resolved() -> bool:
            return "resolved" in statuses()

        await _wait_logged(resolved, am, "the resolved webhook")
        assert {auth for auth, _ in received} == {f"Bearer {token}"}
