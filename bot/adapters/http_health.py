"""The SMS backend's ``/health`` endpoint (runbook Morning Checklist, step 2).

The runbook expects ``"status": "healthy"`` with every check passing, and on
failure says "check specific failing component". So the adapter's job is to
name the failing components, whatever shape the endpoint uses for them, and to
tell "the backend says it is unhealthy" (a report) apart from "the endpoint
cannot be reached or answers nonsense" (typed errors).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from bot.adapters._http import describe_connect_failure
from bot.errors import AdapterError

__all__ = [
    "HEALTHY_WORDS",
    "ComponentHealth",
    "Health",
    "HealthCheckError",
    "HealthClient",
    "HealthEndpointInvalid",
    "HealthEndpointUnreachable",
    "HealthReport",
    "is_healthy_word",
    "parse_report",
]

# Health endpoints disagree on vocabulary (Spring says "UP", others "pass" or
# "ok"); all of these mean the component is fine.
HEALTHY_WORDS = frozenset({"healthy", "ok", "up", "pass", "passing"})

# Many health endpoints answer 503 when unhealthy and still send the report.
_REPORT_STATUSES = frozenset({200, 503})
_DETAIL_KEYS = ("message", "detail", "error", "details")


class HealthCheckError(AdapterError):
    """The health endpoint gave no usable report; subclasses say why."""


class HealthEndpointUnreachable(HealthCheckError):
    """Nothing answered: connection refused, unknown host, or no answer before the timeout."""


class HealthEndpointInvalid(HealthCheckError):
    """Something answered, but not a health report (wrong status code, not JSON, no status)."""


def is_healthy_word(status: str) -> bool:
    """True when ``status`` is one of the words that mean "fine" (case-insensitive)."""
    return status.strip().lower() in HEALTHY_WORDS


@dataclass(frozen=True)
class ComponentHealth:
    """One named check of the report (database, cache, disk...)."""

    name: str
    status: str
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class HealthReport:
    """What ``/health`` said, normalised.

    ``healthy`` is the runbook's pass condition: HTTP 200, a healthy top-level
    status and no failing component, so one unhealthy check is enough to
    fail the morning check even when the top-level status says otherwise.
    """

    status: str
    healthy: bool
    components: tuple[ComponentHealth, ...]
    http_status: int
    latency_ms: float

    @property
    def failing(self) -> tuple[ComponentHealth, ...]:
        """The components to look at first, as the runbook's "Action if Failed" asks."""
        return tuple(c for c in self.components if not c.healthy)


def _status_text(raw: Any) -> str:
    """Booleans are common (``"database": true``); read them as up/down."""
    if isinstance(raw, bool):
        return "up" if raw else "down"
    return "" if raw is None else str(raw)


def _detail_text(entry: dict[str, Any]) -> str:
    for key in _DETAIL_KEYS:
        value = entry.get(key)
        if value is None or value == "":
            continue
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return ""


def _component(name: str, raw: Any) -> ComponentHealth:
    if isinstance(raw, dict):
        status = _status_text(raw.get("status"))
        detail = _detail_text(raw)
    else:
        status = _status_text(raw)
        detail = ""
    return ComponentHealth(name=name, status=status, healthy=is_healthy_word(status), detail=detail)


def _components(payload: dict[str, Any]) -> tuple[ComponentHealth, ...]:
    """Read ``checks`` (or ``components``) as a dict by name or a list of named objects."""
    raw = payload.get("checks")
    if raw is None:
        raw = payload.get("components")
    if isinstance(raw, dict):
        return tuple(_component(str(name), value) for name, value in raw.items())
    if isinstance(raw, list):
        found = []
        for index, entry in enumerate(raw, start=1):
            if isinstance(entry, dict):
                name = entry.get("name") or entry.get("component") or f"check {index}"
                found.append(_component(str(name), entry))
            else:
                found.append(_component(f"check {index}", entry))
        return tuple(found)
    return ()


def parse_report(body: str, *, url: str, http_status: int, latency_ms: float) -> HealthReport:
    """Turn a ``/health`` body into a report, or say in plain words why it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        snippet = " ".join(body.split())[:80]
        raise HealthEndpointInvalid(
            f"{url}: answered HTTP {http_status} but the body is not JSON: {snippet!r}"
        ) from exc
    if not isinstance(payload, dict) or "status" not in payload:
        raise HealthEndpointInvalid(
            f'{url}: answered HTTP {http_status} with JSON that has no "status" field'
        )
    status = _status_text(payload["status"])
    components = _components(payload)
    healthy = (
        http_status == 200
        and is_healthy_word(status)
        and all(component.healthy for component in components)
    )
    return HealthReport(
        status=status,
        healthy=healthy,
        components=components,
        http_status=http_status,
        latency_ms=latency_ms,
    )


class Health(Protocol):
    """Where the SMS reports its own health; ``HealthClient`` is the real one."""

    async def fetch(self) -> HealthReport: ...


class HealthClient:
    """Fetches and normalises one ``/health`` URL.

    The session belongs to the caller; ``timeout`` bounds the whole request,
    because a health endpoint that hangs is itself the finding to report.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, *, timeout: float = 5.0) -> None:
        self._url = url
        self._session = session
        self._timeout = timeout

    @property
    def url(self) -> str:
        """The endpoint, for messages in chat."""
        return self._url

    async def fetch(self) -> HealthReport:
        """One request to the endpoint; an unhealthy answer is a report, not an error."""
        started = time.perf_counter()
        try:
            async with self._session.get(
                self._url, timeout=aiohttp.ClientTimeout(total=self._timeout)
            ) as response:
                http_status = response.status
                body = await response.text(errors="replace")
        except TimeoutError as exc:
            raise HealthEndpointUnreachable(
                f"{self._url}: no answer within {self._timeout:g} s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise HealthEndpointUnreachable(
                f"{self._url}: {describe_connect_failure(exc)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise HealthEndpointUnreachable(f"{self._url}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if http_status not in _REPORT_STATUSES:
            raise HealthEndpointInvalid(
                f"{self._url}: answered HTTP {http_status} (expected 200, or 503 when unhealthy)"
            )
        return parse_report(body, url=self._url, http_status=http_status, latency_ms=latency_ms)
