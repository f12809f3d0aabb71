"""Prometheus HTTP API client: the numbers behind the runbook's performance baselines.

The runbook's Morning Checklist step 3 sends the on-call engineer to a Grafana
dashboard; the bot asks Prometheus the same questions directly. The client is
deliberately small: instant queries, range queries (weekly reports) and a
readiness ping. Every failure surfaces as one of three typed errors so a
procedure can tell "Prometheus is down" (say so, move on) from "the query is
wrong" (a configuration bug someone must fix).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

import aiohttp

from bot.adapters._http import describe_connect_failure
from bot.errors import AdapterError

__all__ = [
    "DEFAULT_QUERIES",
    "Prometheus",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusUnavailable",
    "Sample",
    "Series",
]

# The PromQL behind each row of the runbook's Performance Baselines table. They
# are defaults: the SMS deployment's metric names are configuration, not code.
DEFAULT_QUERIES: Mapping[str, str] = MappingProxyType(
    {
        "p95_ms": (
            "1000 * histogram_quantile(0.95, "
            "sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"
        ),
        "p99_ms": (
            "1000 * histogram_quantile(0.99, "
            "sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"
        ),
        "throughput_rps": "sum(rate(http_requests_total[5m]))",
        # A backend that has never failed has no 5xx series at all: "or vector(0)"
        # makes that 0 %, not "no data". With no requests the ratio is 0/0 (NaN) or
        # empty: nothing to measure, and throughput says so.
        "error_rate_pct": (
            '100 * (sum(rate(http_requests_total{status=~"5.."}[5m])) or vector(0)) '
            "/ sum(rate(http_requests_total[5m]))"
        ),
        "cpu_pct": '100 * (1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m])))',
        "memory_pct": (
            "100 * (1 - sum(node_memory_MemAvailable_bytes) / sum(node_memory_MemTotal_bytes))"
        ),
        "disk_pct": (
            '100 * max(1 - node_filesystem_avail_bytes{mountpoint="/"} '
            '/ node_filesystem_size_bytes{mountpoint="/"})'
        ),
        "endpoint_p95_ms": (
            "1000 * histogram_quantile(0.95, "
            "sum by (le, handler) (rate(http_request_duration_seconds_bucket[5m])))"
        ),
    }
)


class PrometheusError(AdapterError):
    """Prometheus could not answer the question; subclasses say why."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus is unreachable, too slow or failing (5xx): retry later, not a config bug."""


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected the query (bad PromQL, execution error): a configuration bug.

    ``error_type`` and ``error`` are Prometheus's own words, kept so the message
    shown in chat can point at the broken query.
    """

    def __init__(self, message: str, *, error_type: str = "", error: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error = error


@dataclass(frozen=True)
class Sample:
    """One labelled value of an instant query.

    ``value`` may be NaN or ±Inf exactly as Prometheus computed it (for example
    a ratio of two zero rates): whether that is "no data" or an alarm is the
    caller's decision, not the adapter's.
    """

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One labelled series of a range query, as (UTC time, value) points in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[datetime, float], ...]

    @property
    def values(self) -> tuple[float, ...]:
        """The values alone, for summaries (min, max, mean) that ignore time."""
        return tuple(value for _, value in self.points)


def _timestamp(at: datetime) -> str:
    """Unix seconds for the API; a naive datetime is taken as UTC, never as local time."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return f"{at.timestamp():.3f}"


def _value(raw: Any) -> float:
    """Prometheus sends values as strings ("1.5", "NaN", "+Inf"); ``float`` reads them all."""
    return float(raw)


def _labels(raw: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in dict(raw or {}).items()})


class Prometheus(Protocol):
    """The queries procedures make; ``PrometheusClient`` is the real one."""

    async def query(self, promql: str, *, at: datetime | None = None) -> list[Sample]: ...

    async def scalar(self, promql: str, *, at: datetime | None = None) -> float | None: ...

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step_s: float
    ) -> list[Series]: ...


class PrometheusClient:
    """Async client over one Prometheus server's HTTP API.

    The ``aiohttp.ClientSession`` belongs to the caller (one session per bot,
    closed by the composition root); ``timeout`` bounds every request so a hung
    Prometheus cannot stall a procedure step.
    """

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, *, timeout: float = 5.0
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout

    @property
    def base_url(self) -> str:
        """Where the client points, for messages and links in chat."""
        return self._base_url

    async def ping(self) -> None:
        """Raise ``PrometheusUnavailable`` unless Prometheus says it is ready to serve queries."""
        status, body = await self._get("/-/ready", {})
        if status != 200:
            raise PrometheusUnavailable(
                f"{self._base_url}: not ready (HTTP {status}: {body.strip()[:80]})"
            )

    async def query(self, promql: str, *, at: datetime | None = None) -> list[Sample]:
        """Evaluate an instant query; vector results give one sample per series, scalars one."""
        params = {"query": promql}
        if at is not None:
            params["time"] = _timestamp(at)
        data = await self._api("/api/v1/query", params, promql=promql)
        result_type = data.get("resultType")
        result: Any = data.get("result")
        try:
            if result_type == "vector":
                return [
                    Sample(labels=_labels(item.get("metric")), value=_value(item["value"][1]))
                    for item in result
                ]
            if result_type == "scalar":
                return [Sample(labels=MappingProxyType({}), value=_value(result[1]))]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(
                f"{self._base_url}: malformed {result_type} result for {promql!r}"
            ) from exc
        raise PrometheusQueryError(
            f"query {promql!r} returned a {result_type} result; expected a vector or a scalar",
            error_type="unsupported_result",
        )

    async def scalar(self, promql: str, *, at: datetime | None = None) -> float | None:
        """The first sample's value, or None when there is nothing to report (empty or NaN).

        Used for the baseline table, where "no data" must read differently from 0.
        """
        samples = await self.query(promql, at=at)
        if not samples or math.isnan(samples[0].value):
            return None
        return samples[0].value

    async def query_range(
        self, promql: str, *, start: datetime, end: datetime, step_s: float
    ) -> list[Series]:
        """Evaluate ``promql`` from ``start`` to ``end`` every ``step_s`` seconds."""
        params = {
            "query": promql,
            "start": _timestamp(start),
            "end": _timestamp(end),
            "step": f"{step_s:g}",
        }
        data = await self._api("/api/v1/query_range", params, promql=promql)
        if data.get("resultType") != "matrix":
            raise PrometheusQueryError(
                f"range query {promql!r} returned a {data.get('resultType')} result",
                error_type="unsupported_result",
            )
        try:
            return [
                Series(
                    labels=_labels(item.get("metric")),
                    points=tuple(
                        (datetime.fromtimestamp(float(ts), tz=UTC), _value(raw))
                        for ts, raw in item["values"]
                    ),
                )
                for item in data["result"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise PrometheusError(
                f"{self._base_url}: malformed matrix result for {promql!r}"
            ) from exc

    async def _api(self, path: str, params: dict[str, str], *, promql: str) -> dict[str, Any]:
        """Call an API endpoint and return its ``data``, mapping every failure to a typed error."""
        params = {**params, "timeout": f"{self._timeout:g}s"}
        status, body = await self._get(path, params)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            if status >= 500:
                raise PrometheusUnavailable(
                    f"{self._base_url}: answered HTTP {status}: {body.strip()[:80]}"
                ) from exc
            raise PrometheusError(
                f"{self._base_url}: answered HTTP {status} with a body that is not JSON: "
                f"{body.strip()[:80]!r}"
            ) from exc
        if not isinstance(payload, dict):
            raise PrometheusError(f"{self._base_url}: answered HTTP {status} with unexpected JSON")
        if payload.get("status") == "success" and status == 200:
            data = payload.get("data")
            if isinstance(data, dict):
                return data
            raise PrometheusError(f"{self._base_url}: success answer without data")
        error_type = str(payload.get("errorType", ""))
        error = str(payload.get("error", ""))
        if status >= 500:
            raise PrometheusUnavailable(
                f"{self._base_url}: answered HTTP {status} ({error_type}: {error})"
            )
        raise PrometheusQueryError(
            f"Prometheus rejected {promql!r}: {error_type}: {error}",
            error_type=error_type,
            error=error,
        )

    async def _get(self, path: str, params: Mapping[str, str]) -> tuple[int, str]:
        url = self._base_url + path
        try:
            async with self._session.get(
                url, params=params, timeout=aiohttp.ClientTimeout(total=self._timeout)
            ) as response:
                return response.status, await response.text()
        except TimeoutError as exc:
            raise PrometheusUnavailable(
                f"{self._base_url}: no answer within {self._timeout:g} s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise PrometheusUnavailable(
                f"{self._base_url}: {describe_connect_failure(exc)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise PrometheusUnavailable(f"{self._base_url}: {exc}") from exc
