"""One run of a kind at a time across replicas, held by a job slot in the store.

Why the store and not a lock in memory: a second approval may land on
another replica. The slot is claimed with ``job_claim(exclusive=True)``,
renewed while the work runs and finished after it, so a replica that dies
holds the kind no longer than one lease (``job_lost`` reports it then).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import structlog

from bot.deps import Deps
from bot.errors import UserError
from bot.scheduler import runner_id
from bot.store.base import StoreUnavailable
from bot.store.sql import JOB_LEASE_S

__all__ = ["AlreadyRunning", "exclusive"]

log = structlog.get_logger(__name__)


class AlreadyRunning(UserError):
    """Another run of the same kind holds the slot; nothing was done."""


@contextlib.asynccontextmanager
async def exclusive(
    deps: Deps, job: str, *, slot: datetime, what: str, lease_s: float = JOB_LEASE_S
) -> AsyncIterator[None]:
    """Hold ``job`` for the block, or raise ``AlreadyRunning`` before it starts."""
    store = deps.store
    runner = runner_id()
    claimed = await store.job_claim(
        job, slot=slot, runner=runner, now=deps.clock(), lease_s=lease_s, exclusive=True
    )
    if not claimed:
        running = [r for r in await store.job_runs(job, limit=20) if r.status == "running"]
        since = ""
        if running:
            held = running[0]
            since = f" (the one approved at {held.slot:%Y-%m-%d %H:%M:%S} UTC, on {held.runner})"
        raise AlreadyRunning(
            f"Not started: another {what} is running{since}. Nothing was changed; "
            f"ask again once it has finished."
        )

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                await store.job_renew(
                    job, slot=slot, runner=runner, now=deps.clock(), lease_s=lease_s
                )
            except StoreUnavailable as exc:
                log.warning("exclusive.lease_renewal_failed", job=job, error=str(exc))

    status = "failed"
    renewing = asyncio.create_task(heartbeat(), name=f"lease {job}")
    try:
        yield
        status = "ok"
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await store.job_finish(job, slot=slot, status=status, now=deps.clock())
