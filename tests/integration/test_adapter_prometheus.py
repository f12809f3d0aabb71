"""The default performance queries against a real Prometheus scraping the fake SMS.

This is where the runbook's Performance Baselines table meets PromQL: if a
default query is wrong (metric name, label, aggregation), HEALTHY stops
reading as healthy here long before an on-call engineer sees a false alarm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.adapters.prometheus import (
    DEFAULT_QUERIES,
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnavailable,
)
from tests.harness.exporter import DEGRADED, HANDLERS, HEALTHY, SLOW_HANDLER
from tests.harness.prometheus import PrometheusInstance, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _values(instance: PrometheusInstance, session: aiohttp.ClientSession) -> dict[str, float]:
    client = PrometheusClient(instance.url, session)
    values = {}
    for key, promql in DEFAULT_QUERIES.items():
        if key == "endpoint_p95_ms":
            continue
        value = await client.scalar(promql)
        assert value is not None, f"{key} returned no value"
        values[key] = value
    return values


async def test_healthy_profile_reads_as_the_runbook_baseline(
    prometheus_healthy: PrometheusInstance, session: aiohttp.ClientSession
) -> None:
    v = await _values(prometheus_healthy, session)
    # Exact targets of the profile...
    assert v["p95_ms"] == pytest.approx(HEALTHY.p95_s * 1000, rel=0.01)
    assert v["p99_ms"] == pytest.approx(HEALTHY.p99_s * 1000, rel=0.01)
    assert v["throughput_rps"] == pytest.approx(HEALTHY.rps, rel=0.01)
    assert v["error_rate_pct"] == pytest.approx(HEALTHY.error_fraction * 100, rel=0.01)
    assert v["cpu_pct"] == pytest.approx(HEALTHY.cpu_busy * 100, rel=0.01)
    assert v["memory_pct"] == pytest.approx(HEALTHY.memory_used * 100, rel=0.001)
    assert v["disk_pct"] == pytest.approx(HEALTHY.disk_used * 100, rel=0.001)
    # ...and all of them on the good side of the runbook's alert thresholds.
    assert 250 < v["p95_ms"] < 500
    assert 1000 < v["p99_ms"] < 3000
    assert v["throughput_rps"] > 20
    assert 1 < v["error_rate_pct"] < 2
    assert v["cpu_pct"] < 80
    assert v["memory_pct"] < 85
    assert v["disk_pct"] < 80


async def test_degraded_profile_crosses_every_critical_threshold(
    prometheus_degraded: PrometheusInstance, session: aiohttp.ClientSession
) -> None:
    v = await _values(prometheus_degraded, session)
    assert v["p95_ms"] == pytest.approx(DEGRADED.p95_s * 1000, rel=0.01)
    assert v["p99_ms"] == pytest.approx(DEGRADED.p99_s * 1000, rel=0.01)
    assert v["throughput_rps"] == pytest.approx(DEGRADED.rps, rel=0.01)
    assert v["error_rate_pct"] == pytest.approx(DEGRADED.error_fraction * 100, rel=0.01)
    assert v["p95_ms"] > 1000
    assert v["p99_ms"] > 5000
    assert v["throughput_rps"] < 10
    assert v["error_rate_pct"] > 5
    assert v["cpu_pct"] > 95
    assert v["memory_pct"] > 95
    assert v["disk_pct"] > 90


@pytest.mark.parametrize("profile", [HEALTHY, DEGRADED], ids=lambda p: p.name)
async def test_endpoint_p95_has_one_sample_per_handler_and_names_the_slow_one(
    profile: object,
    prometheus_healthy: PrometheusInstance,
    prometheus_degraded: PrometheusInstance,
    session: aiohttp.ClientSession,
) -> None:
    instance = prometheus_healthy if profile is HEALTHY else prometheus_degraded
    client = PrometheusClient(instance.url, session)
    samples = await client.query(DEFAULT_QUERIES["endpoint_p95_ms"])
    by_handler = {s.labels["handler"]: s.value for s in samples}
    assert sorted(by_handler) == sorted(HANDLERS)
    assert all(s.labels.keys() == {"handler"} for s in samples)
    assert max(by_handler, key=by_handler.__getitem__) == SLOW_HANDLER
    assert by_handler["/health"] < by_handler[SLOW_HANDLER]


async def test_query_at_a_past_time_and_range_query_see_the_backfilled_history(
    prometheus_healthy: PrometheusInstance, session: aiohttp.ClientSession
) -> None:
    client = PrometheusClient(prometheus_healthy.url, session)
    now = datetime.now(UTC)
    earlier = await client.scalar(DEFAULT_QUERIES["throughput_rps"], at=now - timedelta(seconds=30))
    assert earlier == pytest.approx(HEALTHY.rps, rel=0.01)
    series = await client.query_range(
        DEFAULT_QUERIES["cpu_pct"], start=now - timedelta(seconds=60), end=now, step_s=15
    )
    assert len(series) == 1
    assert len(series[0].points) >= 4
    assert all(v == pytest.approx(HEALTHY.cpu_busy * 100, rel=0.01) for v in series[0].values)
    times = [t for t, _ in series[0].points]
    assert times == sorted(times)
    assert times[-1] <= now + timedelta(seconds=1)


async def test_ping_succeeds_on_a_ready_server(
    prometheus_healthy: PrometheusInstance, session: aiohttp.ClientSession
) -> None:
    await PrometheusClient(prometheus_healthy.url, session).ping()


async def test_bad_promql_raises_query_error_with_prometheus_words(
    prometheus_healthy: PrometheusInstance, session: aiohttp.ClientSession
) -> None:
    client = PrometheusClient(prometheus_healthy.url, session)
    with pytest.raises(PrometheusQueryError) as caught:
        await client.query("sum(rate(http_requests_total[5m])")
    assert caught.value.error_type == "bad_data"
    assert "parse error" in caught.value.error
    assert "sum(rate(http_requests_total[5m])" in str(caught.value)


async def test_closed_port_raises_unavailable(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = PrometheusClient(url, session, timeout=2)
    with pytest.raises(PrometheusUnavailable, match="connection refused") as caught:
        await client.query("up")
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    with pytest.raises(PrometheusUnavailable, match="connection refused"):
        await client.ping()
