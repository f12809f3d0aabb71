"""A real Prometheus (Debian package ``prometheus``) scraping the fake SMS exporter.

Loaded as a pytest plugin from tests/conftest.py. ``prometheus_healthy`` and
``prometheus_degraded`` are session-scoped; both servers start together the
first time either is asked for, so a session that uses both waits once.

Startup is a few seconds, not five minutes: before Prometheus starts, the
exporter's past (``history_s`` of samples) is written into its TSDB with
``promtool tsdb create-blocks-from openmetrics``. Without that, ``rate(x[5m])``
extrapolates over a window it has barely seen and under-reads throughput and
CPU until five minutes have passed.

The exporters run on a background thread's event loop so they keep answering
scrapes while each test runs on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from bot.adapters.prometheus import DEFAULT_QUERIES, PrometheusClient, PrometheusError
from tests.harness.exporter import (
    DEGRADED,
    HEALTHY,
    NEVER_FAILED,
    ExporterServer,
    Profile,
    format_openmetrics,
)
from tests.harness.loopback import free_port
from tests.harness.processes import stop_async

__all__ = [
    "PrometheusInstance",
    "free_port",
    "prometheus_degraded",
    "prometheus_healthy",
    "prometheus_never_failed",
    "prometheus_stack",
    "running_prometheus",
]

SCRAPE_JOB = "sms"
_T = TypeVar("_T")


@dataclass(frozen=True)
class PrometheusInstance:
    """A running Prometheus and the exporter it scrapes."""

    url: str
    exporter_url: str
    profile: Profile
    workdir: Path


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name!r} is not on PATH: install the Debian package 'prometheus' "
            "(apt-get install prometheus), which provides prometheus and promtool",
            pytrace=False,
        )
    return path


def _config(target: str) -> str:
    # Loopback only: one scrape job, no alerting, no remote read/write.
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {SCRAPE_JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )


async def _backfill(exporter: ExporterServer, *, tsdb: Path, history_s: float) -> None:
    """Write the exporter's last ``history_s`` seconds into a TSDB block, every 5 s."""
    now = time.time()
    step = 5.0
    points = [now - history_s + i * step for i in range(int(history_s / step) + 1)]
    text = format_openmetrics(
        ((at, exporter.samples(at)) for at in points),
        extra_labels={"job": SCRAPE_JOB, "instance": exporter.host_port},
    )
    source = tsdb.parent / "history.om"
    source.write_text(text)
    proc = await asyncio.create_subprocess_exec(
        _binary("promtool"),
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        str(source),
        str(tsdb),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {output.decode(errors='replace')}")


async def _wait_until_useful(
    url: str, proc: asyncio.subprocess.Process, *, log: Path, timeout_s: float
) -> None:
    """Ready, scraping (``up == 1``) and answering the default p95 query with a value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = "not started"
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(url, session, timeout=2.0)
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}: {_tail(log)}")
            try:
                await client.ping()
                up = await client.scalar(f'up{{job="{SCRAPE_JOB}"}}')
                p95 = await client.scalar(DEFAULT_QUERIES["p95_ms"]) if up == 1 else None
                if p95 is not None:
                    return
                last = f"up={up}, p95={p95}"
            except PrometheusError as exc:
                last = str(exc)
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"prometheus at {url} not useful after {timeout_s:g} s ({last}): {_tail(log)}"
                )
            await asyncio.sleep(0.1)


def _tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    except OSError:
        return "(no log)"


@contextlib.asynccontextmanager
async def running_prometheus(
    profile: Profile, workdir: Path, *, history_s: float = 420.0, timeout_s: float = 30.0
) -> AsyncIterator[PrometheusInstance]:
    """Start an exporter for ``profile`` and a Prometheus scraping it every second.

    Yields once the default queries have values; stops both on exit. Runs on
    the caller's loop, which must keep running for the exporter to answer.
    """
    prometheus = _binary("prometheus")
    _binary("promtool")
    async with ExporterServer(profile) as exporter:
        tsdb = workdir / "tsdb"
        await _backfill(exporter, tsdb=tsdb, history_s=history_s)
        config = workdir / "prometheus.yml"
        config.write_text(_config(exporter.host_port))
        port = free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tsdb}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
                stdout=log_file,
                stderr=log_file,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_until_useful(url, proc, log=log, timeout_s=timeout_s)
            yield PrometheusInstance(
                url=url, exporter_url=exporter.url, profile=profile, workdir=workdir
            )
        finally:
            await stop_async(proc)


class _BackgroundLoop:
    """An event loop on a daemon thread, for services that outlive each test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="harness-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], *, timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="session")
def prometheus_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, PrometheusInstance]]:
    """Both Prometheus servers (by profile name), started concurrently."""
    _binary("prometheus")
    _binary("promtool")
    background = _BackgroundLoop()
    stack = contextlib.AsyncExitStack()

    async def start() -> dict[str, PrometheusInstance]:
        profiles = (HEALTHY, DEGRADED)
        contexts = [
            running_prometheus(p, tmp_path_factory.mktemp(f"prometheus-{p.name}")) for p in profiles
        ]
        results = await asyncio.gather(
            *(stack.enter_async_context(c) for c in contexts), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await stack.aclose()
            raise errors[0]
        started = [r for r in results if isinstance(r, PrometheusInstance)]
        return {instance.profile.name: instance for instance in started}

    try:
        try:
            instances = background.run(start(), timeout=120)
        except Exception as exc:
            pytest.fail(f"could not start Prometheus: {exc}", pytrace=False)
        yield instances
    finally:
        background.run(stack.aclose(), timeout=60)
        background.close()


@pytest.fixture(scope="session")
def prometheus_healthy(prometheus_stack: dict[str, PrometheusInstance]) -> PrometheusInstance:
    """Prometheus scraping an SMS whose numbers match the runbook's baseline."""
    return prometheus_stack[HEALTHY.name]


@pytest.fixture(scope="session")
def prometheus_degraded(prometheus_stack: dict[str, PrometheusInstance]) -> PrometheusInstance:
    """Prometheus scraping an SMS past every critical threshold of the runbook."""
    return prometheus_stack[DEGRADED.name]


@pytest.fixture(scope="session")
def prometheus_never_failed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusInstance]:
    """Prometheus scraping an SMS that has never served a 5xx (no 5xx series at all).

    Started on its own, only by the tests that ask for it.
    """
    _binary("prometheus")
    _binary("promtool")
    background = _BackgroundLoop()
    stack = contextlib.AsyncExitStack()
    workdir = tmp_path_factory.mktemp(f"prometheus-{NEVER_FAILED.name}")
    try:
        try:
            instance = background.run(
                stack.enter_async_context(running_prometheus(NEVER_FAILED, workdir)), timeout=120
            )
        except Exception as exc:
            pytest.fail(f"could not start Prometheus: {exc}", pytrace=False)
        yield instance
    finally:
        background.run(stack.aclose(), timeout=60)
        background.close()
