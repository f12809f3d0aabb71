"""The HTTP app through aiohttp's test client, and ``serve`` on a real loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from prometheus_client import CollectorRegistry, Counter
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from bot.http import build_http_app, serve


class SwitchableCheck:
    """A ready check whose answer the test sets, counting how often it was asked."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


async def always_ready() -> None:
    return None


def app_with(check: SwitchableCheck | None = None) -> web.Application:
    return build_http_app(ready_check=check or always_ready, registry=CollectorRegistry())


async def test_healthz_answers_ok(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(app_with())
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_reflects_the_check(aiohttp_client: AiohttpClient) -> None:
    check = SwitchableCheck()
    client = await aiohttp_client(app_with(check))

    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready"}

    check.error = ConnectionRefusedError("store unreachable: connection refused")
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "reason": "store unreachable: connection refused",
    }
    assert check.calls == 2


async def test_readyz_gives_up_on_a_hanging_check(aiohttp_client: AiohttpClient) -> None:
    never = asyncio.Event()
    entered = asyncio.Event()

    async def hangs() -> None:
        entered.set()
        await never.wait()

    app = build_http_app(ready_check=hangs, registry=CollectorRegistry(), ready_timeout_s=0.1)
    client = await aiohttp_client(app)
    resp = await client.get("/readyz")
    assert entered.is_set()
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "reason": "ready check timed out after 0.1 s",
    }


async def test_readyz_logs_changes_of_state_not_every_probe(
    aiohttp_client: AiohttpClient,
) -> None:
    check = SwitchableCheck()
    client = await aiohttp_client(app_with(check))
    with capture_logs() as logs:
        statuses = [(await client.get("/readyz")).status]
        check.error = RuntimeError("database is starting up")
        statuses += [(await client.get("/readyz")).status for _ in range(3)]
        check.error = None
        statuses += [(await client.get("/readyz")).status for _ in range(2)]
    assert statuses == [200, 503, 503, 503, 200, 200]
    readiness = [(e["event"], e.get("reason"), e.get("recovered")) for e in logs]
    assert [r for r in readiness if r[0].startswith("readiness.")] == [
        ("readiness.ready", None, False),
        ("readiness.unavailable", "database is starting up", None),
        ("readiness.ready", None, True),
    ]


async def test_metrics_exposes_the_given_registry(aiohttp_client: AiohttpClient) -> None:
    registry = CollectorRegistry()
    counter = Counter("smsbot_test_events_total", "Events seen by the test.", registry=registry)
    counter.inc(3)
    client = await aiohttp_client(build_http_app(ready_check=always_ready, registry=registry))

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    body = await resp.text()
    assert "# TYPE smsbot_test_events_total counter" in body
    assert "smsbot_test_events_total 3.0" in body


async def test_unknown_paths_and_methods(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(app_with())
    assert (await client.get("/nope")).status == 404
    assert (await client.post("/healthz")).status == 405


async def test_routes_can_be_added_by_later_features(aiohttp_client: AiohttpClient) -> None:
    routes = web.RouteTableDef()

    @routes.post("/alerts/alertmanager")
    async def alerts(request: web.Request) -> web.Response:
        payload = await request.json()
        return web.json_response({"received": len(payload["alerts"])})

    app = build_http_app(ready_check=always_ready, registry=CollectorRegistry(), routes=routes)

    async def teams(request: web.Request) -> web.Response:
        return web.Response(status=202)

    app.router.add_post("/api/messages", teams)
    client = await aiohttp_client(app)

    resp = await client.post("/alerts/alertmanager", json={"alerts": [{}, {}]})
    assert await resp.json() == {"received": 2}
    assert (await client.post("/api/messages", json={})).status == 202
    assert (await client.get("/healthz")).status == 200


async def test_serve_listens_until_stopped() -> None:
    port = unused_port()
    stop, started = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        serve(app_with(), host="127.0.0.1", port=port, stop=stop, started=started)
    )
    await asyncio.wait_for(started.wait(), timeout=5)

    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok"}

        stop.set()
        await asyncio.wait_for(server, timeout=5)
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/healthz")


async def test_serve_cleans_up_when_cancelled() -> None:
    cleaned = asyncio.Event()
    app = app_with()

    async def resource(app: web.Application) -> AsyncIterator[None]:
        yield
        cleaned.set()

    app.cleanup_ctx.append(resource)
    port = unused_port()
    started = asyncio.Event()
    server = asyncio.create_task(
        serve(app, host="127.0.0.1", port=port, stop=asyncio.Event(), started=started)
    )
    await asyncio.wait_for(started.wait(), timeout=5)
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    assert cleaned.is_set()


async def test_no_response_names_the_server_software(aiohttp_client: AiohttpClient) -> None:
    app = app_with()

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app.router.add_post("/webhook", boom)
    client = await aiohttp_client(app)
    responses = [
        await client.get("/healthz"),
        await client.get("/readyz"),
        await client.get("/metrics"),
        await client.get("/nowhere"),  # 404 from the router
        await client.put("/healthz"),  # 405
        await client.post("/webhook"),  # 500 from a handler that raised
    ]
    assert [r.status for r in responses] == [200, 200, 200, 404, 405, 500]
    for resp in responses:
        assert "Server" not in resp.headers, resp.headers.get("Server")
