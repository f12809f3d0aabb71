"""HealthClient against a fake SMS ``/health`` endpoint on loopback.

The runbook's step 2 passes on ``"status": "healthy"`` with every check
passing; these tests pin what "every check" means for the shapes health
endpoints use, and what an on-call engineer reads when the endpoint is broken.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from bot.adapters.http_health import (
    ComponentHealth,
    HealthCheckError,
    HealthClient,
    HealthEndpointInvalid,
    HealthEndpointUnreachable,
    HealthReport,
)
from tests.harness.prometheus import free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class FakeBackend:
    """Serves whatever status and body the test sets; ``hang`` holds the answer back."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"status": "healthy"}
        self.hang = False
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        if self.hang:
            await asyncio.wait_for(self.release.wait(), timeout=5)
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, content_type="text/html")
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def client(
    backend: FakeBackend, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> AsyncIterator[HealthClient]:
    server = await aiohttp_server(backend.app())
    yield HealthClient(str(server.make_url("/health")), session, timeout=0.2)
    backend.release.set()


async def test_healthy_backend_with_passing_checks(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.body = {
        "status": "healthy",
        "checks": {"database": "healthy", "disk": {"status": "ok"}, "cache": "UP"},
    }
    report = await client.fetch()
    assert isinstance(report, HealthReport)
    assert report.healthy is True
    assert report.status == "healthy"
    assert report.http_status == 200
    assert report.latency_ms > 0
    assert [c.name for c in report.components] == ["database", "disk", "cache"]
    assert all(c.healthy for c in report.components)
    assert report.failing == ()


async def test_one_failing_component_fails_the_check_and_is_named(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.body = {
        "status": "healthy",
        "checks": {
            "database": {"status": "healthy"},
            "redis": {"status": "unhealthy", "message": "connection refused on 6379"},
        },
    }
    report = await client.fetch()
    assert report.healthy is False
    assert report.status == "healthy"
    assert report.failing == (
        ComponentHealth(
            name="redis", status="unhealthy", healthy=False, detail="connection refused on 6379"
        ),
    )


async def test_503_with_json_body_is_a_report_not_an_error(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.status = 503
    backend.body = {
        "status": "unhealthy",
        "checks": {"database": {"status": "down", "error": "too many connections"}},
    }
    report = await client.fetch()
    assert report.http_status == 503
    assert report.healthy is False
    assert report.status == "unhealthy"
    assert [(c.name, c.detail) for c in report.failing] == [("database", "too many connections")]


async def test_503_is_unhealthy_even_if_the_body_says_healthy(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.status = 503
    backend.body = {"status": "healthy"}
    report = await client.fetch()
    assert report.healthy is False
    assert report.components == ()


async def test_unhealthy_top_level_status_without_components(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.body = {"status": "degraded"}
    report = await client.fetch()
    assert report.healthy is False
    assert report.failing == ()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"status": "UP", "components": {"db": {"status": "UP"}, "ping": {"status": "DOWN"}}},
            [("db", "UP", True, ""), ("ping", "DOWN", False, "")],
        ),
        (
            {
                "status": "pass",
                "checks": [
                    {"name": "db", "status": "pass"},
                    {"name": "queue", "status": "fail", "detail": "backlog 5000"},
                ],
            },
            [("db", "pass", True, ""), ("queue", "fail", False, "backlog 5000")],
        ),
        (
            {"status": "ok", "checks": {"db": True, "smtp": False}},
            [("db", "up", True, ""), ("smtp", "down", False, "")],
        ),
        (
            {"status": "ok", "checks": [{"status": "Passing"}, "nope"]},
            [("check 1", "Passing", True, ""), ("check 2", "nope", False, "")],
        ),
        (
            {
                "status": "ok",
                "checks": {"db": {"status": "error", "details": {"pool": 0}}},
                "components": {"ignored": "down"},
            },
            [("db", "error", False, '{"pool": 0}')],
        ),
        (
            {"status": "ok", "checks": {"db": {"message": "no status here"}}},
            [("db", "", False, "no status here")],
        ),
    ],
    ids=[
        "spring-components",
        "list-of-objects",
        "booleans",
        "unnamed-list",
        "details",
        "no-status",
    ],
)
async def test_component_shapes(
    backend: FakeBackend,
    client: HealthClient,
    body: dict[str, Any],
    expected: list[tuple[str, str, bool, str]],
) -> None:
    backend.body = body
    report = await client.fetch()
    assert [(c.name, c.status, c.healthy, c.detail) for c in report.components] == expected
    assert report.healthy is all(ok for _, _, ok, _ in expected)


async def test_non_json_body_is_invalid_and_quotes_the_start(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.body = "<html><body>" + "x" * 200 + "</body></html>"
    with pytest.raises(HealthEndpointInvalid, match="body is not JSON: '<html><body>xxx") as caught:
        await client.fetch()
    message = str(caught.value)
    assert message.startswith(client.url)
    assert "x" * 68 in message and "x" * 69 not in message  # 80 chars in all
    assert isinstance(caught.value.__cause__, ValueError)


async def test_json_nested_too_deeply_is_invalid_not_a_crash(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.body = "[" * 100_000 + "]" * 100_000
    with pytest.raises(HealthEndpointInvalid, match="body is not JSON"):
        await client.fetch()


@pytest.mark.parametrize("body", [{"healthy": True}, ["healthy"], None])
async def test_json_without_status_is_invalid(
    backend: FakeBackend, client: HealthClient, body: Any
) -> None:
    backend.body = body
    with pytest.raises(HealthEndpointInvalid, match='no "status" field'):
        await client.fetch()


@pytest.mark.parametrize("status", [404, 500, 302])
async def test_other_http_status_is_invalid(
    backend: FakeBackend, client: HealthClient, status: int
) -> None:
    backend.status = status
    backend.body = {"status": "healthy"}
    with pytest.raises(HealthEndpointInvalid, match=f"answered HTTP {status}") as caught:
        await client.fetch()
    assert str(caught.value).startswith(client.url)


async def test_connection_refused_is_unreachable(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    with pytest.raises(HealthEndpointUnreachable) as caught:
        await HealthClient(url, session).fetch()
    assert str(caught.value) == f"{url}: connection refused"
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert isinstance(caught.value, HealthCheckError)


class NoSuchHost(AbstractResolver):
    """A resolver that knows no names, so the DNS failure path never leaves loopback."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_unresolvable_host_is_unreachable() -> None:
    url = "http://sms-backend.example/health"
    connector = aiohttp.TCPConnector(resolver=NoSuchHost())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(
            HealthEndpointUnreachable, match=f"{url}: cannot resolve host 'sms-backend.example'"
        ):
            await HealthClient(url, session).fetch()


async def test_slow_endpoint_times_out_as_unreachable(
    backend: FakeBackend, client: HealthClient
) -> None:
    backend.hang = True
    with pytest.raises(HealthEndpointUnreachable, match=r"no answer within 0\.2 s") as caught:
        await client.fetch()
    assert isinstance(caught.value.__cause__, TimeoutError)
