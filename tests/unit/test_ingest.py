"""Group commit of webhook deliveries: shared commits, the same promise per delivery."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.deps import Deps
from bot.ingest import AlertIngest
from bot.store.base import NewAlertEvent, StoreUnavailable
from handlers.alerts import AlertProcessor, alert_webhook_route
from tests.fakes import FakeSurface
from tests.unit.test_alert_webhook import _incidents, alert, payload

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TOKEN = "t0ken"


def _event(fp: str) -> NewAlertEvent:
    return NewAlertEvent(
        fingerprint=fp,
        status="firing",
        labels={"alertname": "DiskSpace", "instance": fp},
        annotations={"summary": fp},
        starts_at=T0,
        ends_at=None,
        generator_url="",
    )


async def test_concurrent_deliveries_share_commits_and_each_gets_its_ids(deps: Deps) -> None:
    ingest = AlertIngest(deps.store)
    results = await asyncio.gather(
        *(ingest.add([_event(f"fp-{n}"), _event(f"fp-{n}b")], received_at=T0) for n in range(30))
    )
    # The first delivery commits alone; the 29 that queued meanwhile share the next commit.
    assert ingest.commits == 2
    assert all(len(ids) == 2 for ids in results)
    flat = [i for ids in results for i in ids]
    assert flat == sorted(set(flat))
    claimed = await deps.store.alert_events_claim(now=T0, limit=100)
    by_id = {e.id: e.fingerprint for e in claimed}
    assert [by_id[i] for i in results[7]] == ["fp-7", "fp-7b"]
    assert len(claimed) == 60


async def test_a_failed_commit_fails_every_delivery_that_waited_for_it(
    deps: Deps, tmp_path: Path
) -> None:
    """The state file is gone: the write succeeds into it, the ping after it tells."""
    ingest = AlertIngest(deps.store)
    await ingest.add([_event("before")], received_at=T0)
    (tmp_path / "state.db").unlink()
    results = await asyncio.gather(
        *(ingest.add([_event(f"fp-{n}")], received_at=T0) for n in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert ingest.commits == 3  # the one before, then two batches that each failed


async def test_a_bad_delivery_is_refused_alone(deps: Deps) -> None:
    ingest = AlertIngest(deps.store)
    bad = replace(_event("bad"), status="pending")
    results = await asyncio.gather(
        ingest.add([_event("a")], received_at=T0),
        ingest.add([bad], received_at=T0),
        ingest.add([_event("b")], received_at=T0),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert [len(r) for r in (results[0], results[2]) if isinstance(r, list)] == [1, 1]
    assert await deps.store.alert_events_pending() == 2


async def test_a_delivery_cancelled_while_queued_does_not_stall_the_others(deps: Deps) -> None:
    ingest = AlertIngest(deps.store)
    first = asyncio.ensure_future(ingest.add([_event("first")], received_at=T0))
    await asyncio.sleep(0)  # the first leads and is committing
    queued = [
        asyncio.ensure_future(ingest.add([_event(f"q{n}")], received_at=T0)) for n in range(3)
    ]
    await asyncio.sleep(0)
    queued[0].cancel()  # it would have led the next batch
    done = await asyncio.gather(first, *queued[1:])
    assert [len(ids) for ids in done] == [1, 1, 1]
    assert queued[0].cancelled()
    # And a later delivery still finds nobody holding the lead.
    assert len(await ingest.add([_event("later")], received_at=T0)) == 1


async def test_concurrent_webhooks_are_answered_after_a_shared_commit(
    aiohttp_client: Any, deps: Deps
) -> None:
    processor = AlertProcessor(deps, _incidents(deps, FakeSurface()))
    app = web.Application()
    app.router.add_post(
        "/alerts/alertmanager", alert_webhook_route(token=TOKEN, receive=processor.receive)
    )
    client = await aiohttp_client(app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    responses = await asyncio.gather(
        *(
            client.post("/alerts/alertmanager", json=payload(alert(fp=f"fp{n}")), headers=headers)
            for n in range(20)
        )
    )
    assert [r.status for r in responses] == [200] * 20
    assert await deps.store.alert_events_pending() == 20
    assert processor.ingest.commits < 20
