"""Background loops: restarted when they raise, logged once when failing and once when back."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.store.base import StoreUnavailable
from bot.tasks import FailureLog, keep_running, log_task_end, start_background


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_loop_that_raises_is_restarted_and_logged_once_then_recovered() -> None:
    calls = 0
    steady = asyncio.Event()

    async def run() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("state file /x/state.db was deleted")
        if calls <= 4:
            raise ValueError(f"bug on row {calls}")
        steady.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        task = asyncio.create_task(
            keep_running("outbox", run, base_s=0, cap_s=0, healthy_after_s=0)
        )
        await steady.wait()
        await _until(lambda: _events(logs, "task.recovered"))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert calls == 5
    [failing] = _events(logs, "task.failing")
    assert failing["task"] == "outbox"
    assert "was deleted" in failing["error"]
    [recovered] = _events(logs, "task.recovered")
    assert recovered == {
        "event": "task.recovered",
        "task": "outbox",
        "failures": 4,
        "log_level": "info",
    }


async def test_an_unexpected_failure_is_logged_with_its_traceback() -> None:
    log = FailureLog("proposals")
    with capture_logs() as logs:
        log.failed(KeyError("proposal"))
        log.failed(KeyError("proposal"))
        log.succeeded()
        log.succeeded()
    [failing] = _events(logs, "task.failing")
    assert isinstance(failing["exc_info"], KeyError)
    assert len(_events(logs, "task.recovered")) == 1


def test_backoff_doubles_up_to_the_cap() -> None:
    log = FailureLog("x", base_s=1, cap_s=10)
    delays = []
    for _ in range(6):
        log.failed(StoreUnavailable("down"))
        delays.append(log.backoff_s())
    assert delays == [1, 2, 4, 8, 10, 10]
    log.succeeded()
    assert log.backoff_s() == 0


async def test_a_loop_that_returns_is_started_again() -> None:
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            await asyncio.Event().wait()

    with capture_logs() as logs:
        task = asyncio.create_task(keep_running("alerts", run, base_s=0, cap_s=0))
        await _until(lambda: calls == 3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    [failing] = _events(logs, "task.failing")
    assert "stopped by itself" in failing["error"]


async def test_a_task_that_dies_is_logged_not_left_unretrieved() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        task = asyncio.create_task(boom(), name="socket-mode")
        task.add_done_callback(log_task_end)
        await asyncio.wait({task})
        await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    [died] = _events(logs, "task.died")
    assert died["task"] == "socket-mode"
    assert isinstance(died["exc_info"], RuntimeError)


async def test_start_background_names_the_task_and_cancels_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def run() -> None:
        started.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        task = start_background("scheduler", run)
        await started.wait()
        assert task.get_name() == "scheduler"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        del task
        gc.collect()
    assert logs == []
    assert "never retrieved" not in caplog.text
