"""The daily prune job: the configured retentions, nothing pending pruned, nothing posted."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from bot.catalogue import JobContext
from bot.deps import Deps
from bot.messages import Status
from bot.store.base import AuditEvent
from procedures.catalogue import CATALOGUE
from tests.fakes import NOW
from tests.unit.conftest import make_settings


async def _no_alerts(_batch: object) -> int:
    return 0


async def _outbox(deps: Deps, key: str, *, age_days: float, deliver: bool) -> int:
    at = NOW - timedelta(days=age_days)
    item = await deps.store.outbox_add(
        message_key=key,
        op="post",
        surface="slack",
        channel="C1",
        parent_key=None,
        payload={"text": key},
        now=at,
    )
    if deliver:
        claimed = await deps.store.outbox_claim(now=at)
        await deps.store.outbox_done(next(c.id for c in claimed if c.id == item))
    return item


async def test_the_prune_job_keeps_what_is_pending_and_what_is_recent(
    deps: Deps, tmp_path: Path
) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_retention_outbox_days=7))
    old_done = await _outbox(deps, "old-done", age_days=10, deliver=True)
    old_pending = await _outbox(deps, "old-pending", age_days=10, deliver=False)
    new_done = await _outbox(deps, "new-done", age_days=3, deliver=True)
    for age in (400, 300):
        await deps.store.audit(
            AuditEvent(
                at=NOW - timedelta(days=age),
                actor="U1",
                source="slack",
                action="health",
                target="",
                outcome="ok",
            )
        )
    job = CATALOGUE.schedule("prune")
    assert job is not None and job.check is not None
    status = await job.check(JobContext(deps=deps, receive_alerts=_no_alerts))
    assert status is Status.OK
    left = [i.id for i in await deps.store.outbox_items(include_done=True)]
    assert old_done not in left
    assert sorted(left) == sorted([old_pending, new_done])
    assert [e.at for e in await deps.store.recent_audit()] == [NOW - timedelta(days=300)]
