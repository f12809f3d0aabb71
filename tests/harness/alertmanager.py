"""A real Alertmanager (Debian package ``prometheus-alertmanager``) on loopback.

Each test brings its own webhook receiver, so there is no session-wide
instance: ``running_alertmanager`` starts one for one receiver URL and token
and stops it on exit (a fresh Alertmanager is a fraction of a second).

The default timings make a whole firing -> repeat -> resolved story fit in a
few seconds. Alertmanager accepts ``group_wait: 0s`` (notify as soon as the
first alert of a group arrives) but refuses a zero ``group_interval`` or
``repeat_interval``. Notifications leave only when a group is flushed, every
``group_interval``, so a repeat arrives between ``repeat_interval`` and
``repeat_interval + group_interval`` after the previous one, and a resolved
alert (posted again with ``endsAt`` now) within one ``group_interval``.

Loaded as a pytest plugin (``alertmanager_factory``) or imported directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import pytest_asyncio

from bot.adapters.alertmanager import AlertmanagerClient, AlertmanagerError
from tests.harness.docker import free_port, wait_until
from tests.harness.processes import stop_async

__all__ = [
    "RECEIVER",
    "AlertmanagerFactory",
    "AlertmanagerInstance",
    "alertmanager_binary",
    "alertmanager_config",
    "alertmanager_factory",
    "alertmanager_process",
    "running_alertmanager",
]

RECEIVER = "sms-bot"
BINARIES = ("alertmanager", "prometheus-alertmanager")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AlertmanagerInstance:
    """A running Alertmanager: where it answers and where its files are."""

    url: str
    workdir: Path
    config_path: Path
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        """The end of Alertmanager's log, for assertion messages when a notification is late."""
        return _tail(self.log_path, lines)


def alertmanager_binary() -> str:
    """The Alertmanager binary on PATH (upstream or Debian name), or fail the test saying how."""
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(
        "neither 'alertmanager' nor 'prometheus-alertmanager' is on PATH: install the Debian "
        "package 'prometheus-alertmanager' (apt-get install prometheus-alertmanager)",
        pytrace=False,
    )


def alertmanager_config(
    *,
    webhook_url: str,
    token: str,
    group_wait: str,
    group_interval: str,
    repeat_interval: str,
) -> dict[str, Any]:
    """One route, one webhook receiver named like production's, bearer token inline.

    Grouping by ``alertname`` and ``instance`` matches deploy/alertmanager, so a
    test sees the same notification boundaries the bot sees in production.
    """
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname", "instance"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": token},
                        },
                    }
                ],
            }
        ],
    }


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, *, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        client = AlertmanagerClient(url, session, timeout=1.0)

        async def ready() -> bool:
            if proc.returncode is not None:
                raise RuntimeError(f"alertmanager exited with {proc.returncode}:\n{_tail(log)}")
            try:
                await client.ping()
            except AlertmanagerError:
                return False
            return True

        try:
            await wait_until(ready, timeout=START_TIMEOUT_S, what=f"alertmanager ready at {url}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_tail(log)}") from exc


@contextlib.asynccontextmanager
async def alertmanager_process(
    config_path: Path, *, workdir: Path
) -> AsyncIterator[AlertmanagerInstance]:
    """Run Alertmanager with an existing config file on 127.0.0.1; stop it on exit.

    For tests of a config written elsewhere (deploy/alertmanager). Clustering is
    off (empty ``--cluster.listen-address``): no gossip port, and ready at once
    instead of after the cluster settle timeout.
    """
    binary = alertmanager_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "alertmanager.log"
    port = free_port()
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, proc, log=log_path)
        yield AlertmanagerInstance(
            url=url, workdir=workdir, config_path=config_path, log_path=log_path
        )
    finally:
        await stop_async(proc, timeout=STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def running_alertmanager(
    *,
    webhook_url: str,
    token: str,
    workdir: Path,
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "2s",
) -> AsyncIterator[AlertmanagerInstance]:
    """Start an Alertmanager on 127.0.0.1 that notifies ``webhook_url``; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    # JSON is YAML: no quoting surprises in URLs or tokens.
    config = alertmanager_config(
        webhook_url=webhook_url,
        token=token,
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
    )
    config_path.write_text(json.dumps(config, indent=2))
    async with alertmanager_process(config_path, workdir=workdir) as instance:
        yield instance


class AlertmanagerFactory(Protocol):
    """Starts an Alertmanager for one receiver; it is stopped when the test ends."""

    def __call__(
        self,
        *,
        webhook_url: str,
        token: str,
        group_wait: str = ...,
        group_interval: str = ...,
        repeat_interval: str = ...,
    ) -> Awaitable[AlertmanagerInstance]: ...


@pytest_asyncio.fixture
async def alertmanager_factory(tmp_path: Path) -> AsyncIterator[AlertmanagerFactory]:
    """A factory for Alertmanagers owned by this test (each in its own directory)."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(*, webhook_url: str, token: str, **timings: str) -> AlertmanagerInstance:
            nonlocal count
            count += 1
            return await stack.enter_async_context(
                running_alertmanager(
                    webhook_url=webhook_url,
                    token=token,
                    workdir=tmp_path / f"alertmanager-{count}",
                    **timings,
                )
            )

        factory: AlertmanagerFactory = start
        yield factory
