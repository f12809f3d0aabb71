"""The bot's HTTP application: probes and metrics now, webhooks added by their owners.

Building the application and serving it are kept apart (as aiohttp does
with ``web_runner``): tests drive the app through ``aiohttp_client`` with no
socket of their own, and ``serve`` is the only place that binds a port.
Slack, Teams and Alertmanager endpoints are added later by passing their
route tables to ``build_http_app`` (or ``app.router.add_post`` before the
app starts), so this module never imports a platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = [
    "METRICS_REGISTRY",
    "READINESS",
    "Readiness",
    "ReadyCheck",
    "build_http_app",
    "read_body",
    "serve",
]

log = structlog.get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[None]]
"""Returns when the bot can do its work (store reachable...); raises with the reason when not."""


class Readiness:
    """Runs the ready check within a bound and logs only when the answer changes.

    Kubernetes and Compose probe every few seconds; logging each failed
    probe would bury the one line that says when readiness was lost.
    """

    def __init__(self, check: ReadyCheck, *, timeout_s: float) -> None:
        self.check = check
        self.timeout_s = timeout_s
        self._last_ready: bool | None = None

    async def probe(self) -> str | None:
        """``None`` when ready, else the reason the bot is not."""
        reason: str | None = None
        bound = asyncio.timeout(self.timeout_s)
        try:
            async with bound:
                await self.check()
        except TimeoutError as exc:
            if bound.expired():
                reason = f"ready check timed out after {self.timeout_s:g} s"
            else:
                reason = str(exc) or type(exc).__name__
        except Exception as exc:
            # The reason is the probe's answer; the check's owner logs its own errors.
            reason = str(exc) or type(exc).__name__
        self._record(reason)
        return reason

    def _record(self, reason: str | None) -> None:
        ready = reason is None
        if ready == self._last_ready:
            return
        if ready:
            log.info("readiness.ready", recovered=self._last_ready is False)
        else:
            log.warning("readiness.unavailable", reason=reason)
        self._last_ready = ready


READINESS = web.AppKey("readiness", Readiness)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
# Reads what the gauges show from the store before a scrape is answered (bounded by itself).
MetricsRefresh = Callable[[], Awaitable[None]]
METRICS_REFRESH: web.AppKey[MetricsRefresh] = web.AppKey("metrics_refresh")


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: answering at all is the whole test (a restart would not fix a dependency)."""
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    reason = await request.app[READINESS].probe()
    if reason is None:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "unavailable", "reason": reason}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    refresh = request.app.get(METRICS_REFRESH)
    if refresh is not None:
        await refresh()
    body = generate_latest(request.app[METRICS_REGISTRY])
    # CONTENT_TYPE_LATEST carries a version parameter that ``content_type=`` would reject.
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No ``Server: Python/3.x aiohttp/3.x``: versions tell a scanner which advisories to try."""
    response.headers.popall(hdrs.SERVER, None)


def build_http_app(
    *,
    ready_check: ReadyCheck,
    registry: CollectorRegistry,
    ready_timeout_s: float = 3.0,
    routes: Iterable[web.AbstractRouteDef] = (),
    metrics_refresh: MetricsRefresh | None = None,
) -> web.Application:
    """The application with ``/healthz``, ``/readyz`` and ``/metrics``, plus ``routes``.

    ``routes`` (e.g. a ``web.RouteTableDef``) is how webhook endpoints join
    the same server; the returned app's router also stays open until it
    starts, so callers may ``app.router.add_post(...)`` instead.
    """
    app = web.Application()
    app.on_response_prepare.append(_drop_server_header)
    app[READINESS] = Readiness(ready_check, timeout_s=ready_timeout_s)
    app[METRICS_REGISTRY] = registry
    if metrics_refresh is not None:
        app[METRICS_REFRESH] = metrics_refresh
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.add_routes(routes)
    return app


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut it down cleanly.

    ``started`` is set once the socket listens, so a caller (or a test) can
    wait for the server instead of guessing. Cancelling the task also shuts
    down cleanly: ``runner.cleanup`` runs the app's cleanup contexts either way.
    """
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("http.listening", host=host, port=port)
        if started is not None:
            started.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("http.stopped", host=host, port=port)


async def read_body(request: web.Request, *, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit`` bytes.

    ``StreamReader.read(n)`` may return fewer bytes than are coming, so read
    until the end of the stream, stopping as soon as the limit is passed.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
