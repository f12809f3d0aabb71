"""Scheduled jobs: APScheduler fires them, the store makes each slot run exactly once.

Only the replica holding the scheduler leadership (a PostgreSQL advisory
lock, or a lock file next to a SQLite store) schedules; the others wait and
take over when it goes. Every run claims its (job, slot) in the store first,
so even two leaders at once would not post twice. After downtime, a job
whose latest slot was missed runs once on start when that slot is still
within ``SMS_SCHEDULE_GRACE_MIN``; older misses are skipped, never replayed.

A claimed slot is leased to its runner, which renews the lease while the job
runs. A replica that dies mid-run leaves its slot ``running`` with a lease
that runs out; the leader (which may be the next one) finds such slots, marks
them failed and reports each once in the alert channel ("morning-summary of
07:30 did not finish: its replica stopped"). The slot is not run again: a
half-done run may have posted or changed things already, and a human reading
the report decides better than a silent re-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import structlog

from bot.cron import cron_trigger, next_fire, previous_fire
from bot.deps import Deps
from bot.messages import Status
from bot.store.base import JobRun, StoreUnavailable
from bot.tasks import FailureLog

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "LEADER_LOCK",
    "JobAction",
    "JobSpec",
    "LostReport",
    "Scheduler",
    "lost_slot_text",
    "runner_id",
]

log = structlog.get_logger(__name__)

LEADER_LOCK = "sms-bot-scheduler"
# How far back ``last_due_slots`` looks, in steps (frequent, daily, weekly, monthly crons).
_DUE_LOOKBACK = tuple(timedelta(hours=h) for h in (1, 24, 8 * 24, 32 * 24))

# What a job does once its slot is claimed: returns the run's status.
JobAction = Callable[[], Awaitable[Status]]
# Says, in the alert channel, that a slot's replica stopped before finishing it.
LostReport = Callable[[str], Awaitable[None]]


def runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class JobSpec:
    name: str  # e.g. "morning-summary"
    title: str  # what the user reads
    cron: str
    timezone: str
    action: JobAction

    def trigger(self) -> CronTrigger:
        return cron_trigger(self.cron, self.timezone)


def lost_slot_text(run: JobRun, timezone: str) -> str:
    """What the alert channel reads about a slot whose replica stopped while running it."""
    local = run.slot.astimezone(ZoneInfo(timezone))
    return (
        f"{run.job} of {local:%H:%M} ({local:%Y-%m-%d}) did not finish: its replica"
        f" ({run.runner}) stopped. It is not run again; run it by hand if it is still needed."
    )


class Scheduler:
    def __init__(
        self,
        deps: Deps,
        jobs: Sequence[JobSpec],
        *,
        grace: timedelta,
        runner: str | None = None,
        retry_leadership_s: float = 5.0,
        job_lease_s: float = 120.0,
        report_lost: LostReport | None = None,
    ) -> None:
        self.deps = deps
        self.jobs = {job.name: job for job in jobs}
        self.grace = grace
        self.runner = runner or runner_id()
        self.retry_leadership_s = retry_leadership_s
        self.job_lease_s = job_lease_s
        self._report_lost = report_lost
        self._aps: AsyncIOScheduler | None = None

    # -- one slot ----------------------------------------------------------------------

    async def fire(self, name: str, slot: datetime) -> bool:
        """Run ``name`` for ``slot`` if no one has yet; True when this call ran it."""
        job = self.jobs[name]
        store = self.deps.store
        claimed = await store.job_claim(
            name, slot=slot, runner=self.runner, now=self.deps.clock(), lease_s=self.job_lease_s
        )
        if not claimed:
            log.info("schedule.slot_taken", job=name, slot=slot.isoformat())
            return False
        log.info("schedule.job_started", job=name, slot=slot.isoformat())
        status = Status.FAILED
        heartbeat = asyncio.create_task(self._heartbeat(name, slot), name=f"lease {name}")
        try:
            status = await job.action()
        except Exception:
            log.exception("schedule.job_crashed", job=name)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await store.job_finish(name, slot=slot, status=status.value, now=self.deps.clock())
        log.info("schedule.job_finished", job=name, status=status.value)
        return True

    async def _heartbeat(self, name: str, slot: datetime) -> None:
        """Renew the slot's lease while its job runs (three times per lease)."""
        while True:
            await asyncio.sleep(self.job_lease_s / 3)
            try:
                renewed = await self.deps.store.job_renew(
                    name,
                    slot=slot,
                    runner=self.runner,
                    now=self.deps.clock(),
                    lease_s=self.job_lease_s,
                )
            except StoreUnavailable as exc:
                log.warning("schedule.lease_renewal_failed", job=name, error=str(exc))
                continue
            if not renewed:
                # Reported lost by another replica while this one stalled: it says so there.
                log.warning("schedule.slot_lease_lost", job=name, slot=slot.isoformat())
                return

    async def report_lost(self) -> list[JobRun]:
        """Report, once each, the slots left running by a replica that stopped."""
        lost = await self.deps.store.job_lost(now=self.deps.clock())
        for run in lost:
            self.deps.metrics.job_lost(run.job)
            job = self.jobs.get(run.job)
            text = lost_slot_text(run, job.timezone if job else "UTC")
            log.error(
                "schedule.slot_lost", job=run.job, slot=run.slot.isoformat(), runner=run.runner
            )
            if self._report_lost is not None:
                try:
                    await self._report_lost(text)
                except Exception:  # the slot is marked already: the log keeps the report
                    log.exception("schedule.lost_report_failed", job=run.job)
        return lost

    async def fire_due(self, name: str) -> bool:
        """What APScheduler calls: the slot is the latest fire time up to now."""
        now = self.deps.clock()
        slot = previous_fire(self.jobs[name].trigger(), now, lookback=timedelta(hours=1))
        if slot is None:
            return False
        return await self.fire(name, slot)

    async def catch_up(self) -> list[str]:
        """Run, once, each job whose latest slot was missed but is within the grace period."""
        now = self.deps.clock()
        ran = []
        for name, job in self.jobs.items():
            slot = previous_fire(job.trigger(), now, lookback=self.grace)
            if slot is None:
                continue
            last = await self.deps.store.job_last(name)
            if last is not None and last.slot >= slot:
                continue
            log.info("schedule.catching_up", job=name, slot=slot.isoformat())
            if await self.fire(name, slot):
                ran.append(name)
        return ran

    def last_due_slots(self, now: datetime) -> dict[str, datetime | None]:
        """Each job's latest slot up to ``now`` (a month back at most), for ``/metrics``.

        Looked for an hour back first, then further: stepping through a month
        of a frequent cron's fire times at every scrape would cost more than
        the scrape.
        """
        out: dict[str, datetime | None] = {}
        for name, job in self.jobs.items():
            trigger, found = job.trigger(), None
            for lookback in _DUE_LOOKBACK:
                found = previous_fire(trigger, now, lookback=lookback)
                if found is not None:
                    break
            out[name] = found
        return out

    def upcoming(self) -> list[tuple[JobSpec, datetime | None]]:
        now = self.deps.clock()
        return [(job, next_fire(job.trigger(), now)) for job in self.jobs.values()]

    # -- leadership and APScheduler -----------------------------------------------------

    async def run(self) -> None:
        """Lead when possible: catch up, schedule, and hand over if leadership is lost."""
        store = self.deps.store
        # A store that stays down is logged when it goes and when it is back, not every try.
        failures = FailureLog("scheduler")
        while True:
            try:
                leading = await store.leader_acquire(LEADER_LOCK)
            except StoreUnavailable as exc:
                failures.failed(exc)
                leading = False
            if not leading:
                await asyncio.sleep(self.retry_leadership_s)
                continue
            if not failures.failing:  # while the store fails, each retry leads again briefly
                log.info("schedule.leading", runner=self.runner)
            try:
                await self.report_lost()
                await self.catch_up()
                failures.succeeded()
                self._start_aps()
                while True:
                    await asyncio.sleep(self.retry_leadership_s)
                    if not await store.leader_check(LEADER_LOCK):
                        break
                    await self.report_lost()
                log.warning("schedule.leadership_lost", runner=self.runner)
            except StoreUnavailable as exc:
                failures.failed(exc)
            finally:
                self._stop_aps()
                with contextlib.suppress(StoreUnavailable):
                    await store.leader_release(LEADER_LOCK)
            await asyncio.sleep(self.retry_leadership_s)

    def _start_aps(self) -> None:
        # Only the leader schedules: a terminal command never loads APScheduler's scheduler.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        aps = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
        )
        for name, job in self.jobs.items():
            aps.add_job(self._fire_logged, job.trigger(), args=[name], id=name, name=job.title)
        aps.start()
        self._aps = aps

    def _stop_aps(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None

    async def _fire_logged(self, name: str) -> None:
        try:
            await self.fire_due(name)
        except StoreUnavailable as exc:
            log.error("schedule.fire_failed", job=name, error=str(exc))

    def next_run_times(self) -> dict[str, datetime | None]:
        """APScheduler's own idea of the next runs (empty when not leading)."""
        if self._aps is None:
            return {}
        return {job.id: job.next_run_time for job in self._aps.get_jobs()}
