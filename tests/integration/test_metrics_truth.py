"""The default queries tell the truth on a real Prometheus, and a wrong one is caught.

A backend that has never served a 5xx has no 5xx series at all: the error
rate must read 0 %, the health check and the morning summary must be green.
A backend that has must read its rate. A query that cannot be right (here an
inverted ratio set through ``SMS_PROMQL``) reads "implausible", warns, and
shows the query. And ``sms-bot run health`` with Slack configured prints the
report and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.adapters.prometheus import DEFAULT_QUERIES, PrometheusClient
from bot.app import build_app
from bot.config import Settings, load_settings
from bot.events import Command
from bot.messages import CodeBlock, Conversation, Status, Table
from procedures.morning_summary import morning_summary
from tests.fakes import FakeSurface
from tests.harness.docker import free_port
from tests.harness.exporter import DEGRADED, HEALTHY
from tests.harness.prometheus import PrometheusInstance

pytestmark = pytest.mark.integration

SMS_BOT = str(Path(sys.executable).with_name("sms-bot"))
# What the default error-rate query was before: 5xx over all, with no fallback.
_UNGUARDED_ERROR_RATE = (
    '100 * sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'
)
# A plausible mistake: the ratio upside down (all requests over 5xx).
_INVERTED_ERROR_RATE = (
    '100 * sum(rate(http_requests_total[5m])) / sum(rate(http_requests_total{status=~"5.."}[5m]))'
)


def _settings(env: dict[str, str] | Settings) -> Settings:
    if isinstance(env, Settings):
        return env
    return load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})


@pytest.fixture
def never_failed(
    deployment: dict[str, str], prometheus_never_failed: PrometheusInstance
) -> dict[str, str]:
    """The healthy deployment, its Prometheus scraping a backend that never served a 5xx."""
    return {**deployment, "SMS_PROMETHEUS_URL": prometheus_never_failed.url}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _run(env: dict[str, str] | Settings, text: str) -> FakeSurface:
    surface = FakeSurface()
    async with build_app(_settings(env)) as app:
        command = Command(
            text=text, user="console:test", source="console", conversation=Conversation("console")
        )
        await app.dispatcher.handle(command, surface)
    return surface


async def _morning_summary(env: dict[str, str] | Settings) -> tuple[Status, str]:
    surface = FakeSurface()
    async with build_app(_settings(env)) as app:
        run = await app.engine.execute(
            morning_summary,
            name="morning-summary",
            title="morning-summary",
            command=Command(
                text="scheduled morning-summary",
                user="sms-bot",
                source="scheduler",
                conversation=Conversation("fake", "#sms-alerts"),
            ),
            surface=surface,
        )
    return run.status, surface.last().text


def _steps(surface: FakeSurface) -> dict[str, tuple[Status, str]]:
    return {s.name: (s.status, s.summary) for s in surface.last().steps}


async def test_a_backend_that_never_served_a_5xx_reads_zero_percent(
    prometheus_never_failed: PrometheusInstance, session: aiohttp.ClientSession
) -> None:
    client = PrometheusClient(prometheus_never_failed.url, session)
    assert await client.query('http_requests_total{status=~"5.."}') == []  # no such series
    assert await client.scalar(DEFAULT_QUERIES["throughput_rps"]) == pytest.approx(30.22, rel=0.05)
    assert await client.scalar(DEFAULT_QUERIES["error_rate_pct"]) == 0.0
    # The flaw this guards against: without a fallback the ratio has no value at all.
    assert await client.scalar(_UNGUARDED_ERROR_RATE) is None


@pytest.mark.parametrize("profile", [HEALTHY, DEGRADED], ids=lambda p: p.name)
async def test_a_backend_that_served_5xx_reads_its_rate(
    profile: object,
    prometheus_stack: dict[str, PrometheusInstance],
    session: aiohttp.ClientSession,
) -> None:
    assert profile in (HEALTHY, DEGRADED)
    instance = prometheus_stack[profile.name]  # type: ignore[attr-defined]
    client = PrometheusClient(instance.url, session)
    value = await client.scalar(DEFAULT_QUERIES["error_rate_pct"])
    assert value == pytest.approx(profile.error_fraction * 100, rel=0.02)  # type: ignore[attr-defined]


async def test_health_and_morning_summary_are_green_when_no_5xx_was_ever_served(
    never_failed: dict[str, str],
) -> None:
    surface = await _run(never_failed, "health")
    steps = _steps(surface)
    assert all(status is Status.OK for status, _ in steps.values()), steps
    assert steps["Performance metrics"][1] == "all 7 metrics within baseline"
    fields = {f.label: f for f in surface.last().fields}
    assert fields["Error rate"].value == "0.0% (warn > 2, crit > 5)"
    assert fields["Error rate"].status is Status.OK
    assert surface.last().text.startswith("All 5 checks passed.")

    surface = await _run(never_failed, "metrics")
    [table] = [d for m in surface.replies() for d in m.details if isinstance(d, Table)]
    rows = {row[0]: row for row in table.rows}
    assert rows["Error rate"][1] == "0.0%" and rows["Error rate"][-1] == "OK"

    status, text = await _morning_summary(never_failed)
    assert status is Status.OK, text
    assert text.splitlines()[0] == "All 5 checks passed."
    assert "Error rate 0.0%" in text


async def test_an_inverted_error_rate_query_is_implausible_and_warned(
    deployment: dict[str, str],
) -> None:
    # As SMS_PROMQL='{"error_rate_pct": "..."}' sets it.
    env = _settings(deployment).model_copy(
        update={"sms_promql": {"error_rate_pct": _INVERTED_ERROR_RATE}}
    )
    surface = await _run(env, "health")
    status, summary = _steps(surface)["Performance metrics"]
    assert status is Status.WARN
    # About 100 / 1.33 % = 7519 %: shown as it came, never judged as "critical" or "fine".
    assert summary.startswith("Error rate 75") and summary.endswith(
        "%: implausible (check `SMS_PROMQL`) (warn)"
    ), summary
    blocks = [d for m in surface.replies() for d in m.details if isinstance(d, CodeBlock)]
    assert len(blocks) == 1 and _INVERTED_ERROR_RATE in blocks[0].text
    assert surface.last().text.startswith("1 of 5 checks need attention.")

    status, text = await _morning_summary(env)
    assert status is Status.WARN
    lines = text.splitlines()
    assert lines[0] == "1 of 5 checks need attention."
    assert any("Performance metrics: Error rate 75" in line for line in lines), text
    assert "implausible (check `SMS_PROMQL`)" in text


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_", "BOT_", "SLACK_"))}
    full.update(env)
    return subprocess.run(
        [SMS_BOT, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(env["BOT_AUDIT_LOG"]).parent,
        check=False,
    )


async def test_run_health_with_slack_configured_prints_only_the_report(
    never_failed: dict[str, str],
) -> None:
    env = {
        **never_failed,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "signing-secret-for-tests",
        "SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/",
    }
    done = await asyncio.to_thread(_cli, env, "run", "health")
    assert done.stderr == ""  # no Slack library chatter: Slack is not involved here
    assert done.returncode == 0, done.stdout
    assert "All 5 checks passed." in done.stdout
