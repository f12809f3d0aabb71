"""deploy/image/healthcheck.py: the image's HEALTHCHECK probes where ``serve`` listens.

A check that asks the wrong address marks a working bot unhealthy, and a
restart policy keyed on health would then restart it for nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

PATH = Path(__file__).resolve().parents[2] / "deploy" / "image" / "healthcheck.py"


def _load() -> tuple[Callable[[dict[str, str]], str], Callable[[], int]]:
    spec = importlib.util.spec_from_file_location("image_healthcheck", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return (
        cast(Callable[[dict[str, str]], str], module.healthz_url),
        cast(Callable[[], int], module.main),
    )


healthz_url, main = _load()


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8090/healthz"),
        ({"BOT_HOST": "0.0.0.0", "BOT_PORT": "9000"}, "http://127.0.0.1:9000/healthz"),
        ({"BOT_HOST": "::"}, "http://127.0.0.1:8090/healthz"),
        ({"BOT_HOST": "::1"}, "http://[::1]:8090/healthz"),
        ({"BOT_HOST": "10.0.0.5", "BOT_PORT": ""}, "http://10.0.0.5:8090/healthz"),
    ],
)
def test_the_url_follows_bot_host_and_port(env: dict[str, str], url: str) -> None:
    assert healthz_url(env) == url


async def _serve(status: int) -> TestServer:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
async def test_exit_code_is_0_only_for_200(
    status: int, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await _serve(status)
    try:
        monkeypatch.setenv("BOT_HOST", "127.0.0.1")
        monkeypatch.setenv("BOT_PORT", str(server.port))
        assert await asyncio.to_thread(main) == code
    finally:
        await server.close()


async def test_nothing_listening_is_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BOT_HOST", "127.0.0.1")
    monkeypatch.setenv("BOT_PORT", str(port))
    assert await asyncio.to_thread(main) == 1
