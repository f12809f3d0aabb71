"""PrometheusClient against a fake Prometheus HTTP API on loopback.

The fake answers with the JSON shapes the real API uses, including the ones
that matter on a bad day: NaN values, status "error" with 400, 5xx, hangs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.adapters.prometheus import (
    DEFAULT_QUERIES,
    PrometheusClient,
    PrometheusError,
    PrometheusQueryError,
    PrometheusUnavailable,
)
from tests.harness.prometheus import free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


def _vector(*items: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1700000000.0, v]} for m, v in items],
        },
    }


class FakePrometheus:
    """Answers /api/v1/query from a dict of PromQL -> (HTTP status, JSON body); records calls."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}
        self.calls: list[dict[str, str]] = []
        self.ready_status = 200
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        app.router.add_get("/api/v1/query_range", self._query)
        app.router.add_get("/-/ready", self._ready)
        return app

    async def _query(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.calls.append(params)
        status, body = self.answers[params["query"]]
        if body == "hang":
            await asyncio.wait_for(self.release.wait(), timeout=5)
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=self.ready_status, text="Prometheus Server is Ready.\n")


@pytest.fixture
async def fake() -> FakePrometheus:
    return FakePrometheus()


@pytest.fixture
async def client(
    fake: FakePrometheus, aiohttp_server: ServerFactory
) -> AsyncIterator[PrometheusClient]:
    server = await aiohttp_server(fake.app())
    async with aiohttp.ClientSession() as session:
        yield PrometheusClient(str(server.make_url("/")), session, timeout=0.5)
    fake.release.set()


async def test_vector_result_gives_one_sample_per_series(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["up"] = (200, _vector(({"job": "sms", "instance": "a:1"}, "1"), ({}, "0")))
    samples = await client.query("up")
    assert [dict(s.labels) for s in samples] == [{"job": "sms", "instance": "a:1"}, {}]
    assert [s.value for s in samples] == [1.0, 0.0]


async def test_scalar_result_is_one_unlabelled_sample(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "42.5"]}}
    fake.answers["42.5"] = (200, body)
    samples = await client.query("42.5")
    assert len(samples) == 1
    assert dict(samples[0].labels) == {}
    assert samples[0].value == 42.5
    assert await client.scalar("42.5") == 42.5


async def test_nan_and_inf_are_kept_as_floats(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["ratio"] = (200, _vector(({"a": "1"}, "NaN"), ({"a": "2"}, "+Inf"), ({}, "-Inf")))
    values = [s.value for s in await client.query("ratio")]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]


async def test_scalar_is_none_for_empty_or_nan_results(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["empty"] = (200, _vector())
    fake.answers["nan"] = (200, _vector(({}, "NaN")))
    fake.answers["zero"] = (200, _vector(({}, "0")))
    assert await client.scalar("empty") is None
    assert await client.scalar("nan") is None
    assert await client.scalar("zero") == 0.0


async def test_query_sends_time_and_server_timeout(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["up"] = (200, _vector())
    await client.query("up", at=datetime(2026, 2, 1, 7, 30, tzinfo=UTC))
    await client.query("up")
    assert fake.calls[0]["time"] == "1769931000.000"
    assert fake.calls[0]["timeout"] == "0.5s"
    assert "time" not in fake.calls[1]


async def test_query_range_parses_matrix_into_series(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"handler": "/h"}, "values": [[1769931000, "1"], [1769931060, "NaN"]]}
            ],
        },
    }
    fake.answers["rate(x[5m])"] = (200, body)
    series = await client.query_range(
        "rate(x[5m])",
        start=datetime(2026, 2, 1, 7, 30, tzinfo=UTC),
        end=datetime(2026, 2, 1, 7, 31, tzinfo=UTC),
        step_s=60,
    )
    assert fake.calls[0]["start"] == "1769931000.000"
    assert fake.calls[0]["end"] == "1769931060.000"
    assert fake.calls[0]["step"] == "60"
    assert len(series) == 1
    assert dict(series[0].labels) == {"handler": "/h"}
    assert series[0].points[0] == (datetime(2026, 2, 1, 7, 30, tzinfo=UTC), 1.0)
    assert series[0].points[1][0] == datetime(2026, 2, 1, 7, 31, tzinfo=UTC)
    assert math.isnan(series[0].values[1])


async def test_bad_promql_raises_query_error_with_prometheus_text(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    error = {
        "status": "error",
        "errorType": "bad_data",
        "error": "1:9: parse error: unclosed left parenthesis",
    }
    fake.answers["sum(up"] = (400, error)
    with pytest.raises(PrometheusQueryError, match="bad_data: 1:9: parse error") as caught:
        await client.query("sum(up")
    assert caught.value.error_type == "bad_data"
    assert caught.value.error == "1:9: parse error: unclosed left parenthesis"
    assert isinstance(caught.value, PrometheusError)


async def test_execution_error_422_is_a_query_error(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["x"] = (422, {"status": "error", "errorType": "execution", "error": "too many"})
    with pytest.raises(PrometheusQueryError, match="execution: too many"):
        await client.query("x")


async def test_matrix_from_instant_query_is_rejected(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    fake.answers["up[5m]"] = (200, body)
    with pytest.raises(PrometheusQueryError, match="matrix"):
        await client.query("up[5m]")


@pytest.mark.parametrize(
    ("status", "body", "pattern"),
    [
        (503, {"status": "error", "errorType": "timeout", "error": "query timed out"}, "HTTP 503"),
        (500, "internal error", "HTTP 500: internal error"),
        (502, "<html>Bad Gateway</html>", "HTTP 502"),
    ],
)
async def test_server_errors_are_unavailable(
    fake: FakePrometheus, client: PrometheusClient, status: int, body: Any, pattern: str
) -> None:
    fake.answers["up"] = (status, body)
    with pytest.raises(PrometheusUnavailable, match=pattern):
        await client.query("up")


async def test_non_json_success_is_a_prometheus_error(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["up"] = (200, "<html>Grafana login</html>")
    with pytest.raises(PrometheusError, match="not JSON") as caught:
        await client.query("up")
    assert not isinstance(caught.value, PrometheusUnavailable | PrometheusQueryError)
    assert isinstance(caught.value.__cause__, ValueError)


async def test_malformed_vector_is_a_prometheus_error(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}
    fake.answers["up"] = (200, body)
    with pytest.raises(PrometheusError, match="malformed vector"):
        await client.query("up")


async def test_hanging_server_raises_unavailable_after_timeout(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    fake.answers["slow"] = (200, "hang")
    with pytest.raises(PrometheusUnavailable, match=r"no answer within 0\.5 s") as caught:
        await client.query("slow")
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_closed_port_raises_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session)
        with pytest.raises(PrometheusUnavailable, match=f"{url}: connection refused"):
            await client.scalar("up")


async def test_ping_passes_when_ready_and_raises_when_not(
    fake: FakePrometheus, client: PrometheusClient
) -> None:
    await client.ping()
    fake.ready_status = 503
    with pytest.raises(PrometheusUnavailable, match="not ready"):
        await client.ping()


def test_default_queries_cover_the_runbook_baseline_rows() -> None:
    assert set(DEFAULT_QUERIES) == {
        "p95_ms",
        "p99_ms",
        "throughput_rps",
        "error_rate_pct",
        "cpu_pct",
        "memory_pct",
        "disk_pct",
        "endpoint_p95_ms",
    }
    assert "sum by (le, handler)" in DEFAULT_QUERIES["endpoint_p95_ms"]
    with pytest.raises(TypeError):
        DEFAULT_QUERIES["p95_ms"] = "up"  # type: ignore[index]
