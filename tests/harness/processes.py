"""Stopping a process a test or bench started: asked to end, killed if it does not."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

__all__ = ["stop", "stop_async"]


def stop(proc: subprocess.Popen[Any], *, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not ended within ``timeout`` s; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def stop_async(proc: asyncio.subprocess.Process, *, timeout: float = 10) -> None:
    """``stop`` for a process started with asyncio."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
