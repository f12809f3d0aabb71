"""The storm digest across replicas and crashes: the store says what is left to name.

A fake surface and the real (SQLite) store; a second ``open_store`` on the
same file is another replica.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.alerts import Alert, AlertBatch
from bot.chat.adaptive_card import to_adaptive_card
from bot.chat.blockkit import to_block_kit
from bot.deps import Deps
from bot.engine import Engine
from bot.incidents import IncidentService, StormDigest
from bot.messages import Conversation, Message, MessageRef, Table
from bot.store import Store, open_store
from bot.store.base import Incident
from bot.threads import ThreadRef
from handlers.alerts import AlertProcessor
from procedures.catalogue import CATALOGUE
from tests.fakes import NOW, FakeSurface
from tests.store_contract import make_incident
from tests.unit.conftest import make_settings

CHANNEL = "#sms-alerts"


@pytest.fixture
async def other(deps: Deps) -> AsyncIterator[Store]:
    """A second replica's store: the same database."""
    store = open_store(deps.settings.bot_state_url)
    await store.open()
    yield store
    await store.close()


def _named(replies: list[Message]) -> list[str]:
    """The alert titles the digest's naming replies list (one table row each)."""
    return [
        str(row[1])
        for m in replies
        for t in m.details
        if isinstance(t, Table)
        for row in t.rows
        if not m.title.startswith("Resolved")
    ]


async def _storm(store: Store, n: int) -> list[Incident]:
    made = []
    for i in range(n):
        incident = replace(make_incident(f"fp-{i}", opened_at=NOW), title=f"alert-{i:03d}")
        assert await store.incident_open(incident) is not None
        made.append(incident)
    return made


async def test_a_second_replica_names_what_the_first_added(deps: Deps, other: Store) -> None:
    """A replica that dies between ``add`` and ``flush`` leaves its alerts to the next flush."""
    surface = FakeSurface()
    dying = StormDigest(deps.store, surface=surface, channel=CHANNEL)
    for incident in await _storm(deps.store, 5):
        await dying.add(incident, now=NOW)
    assert _named(surface.replies()) == []  # it died before its flush
    survivor = StormDigest(other, surface=surface, channel=CHANNEL)
    await survivor.flush(now=NOW + timedelta(seconds=30))
    assert sorted(_named(surface.replies())) == [f"alert-{i:03d}" for i in range(5)]
    assert surface.last("m1").title.startswith("Alert storm: 5 more alerts")
    await dying.flush(now=NOW)  # nothing left: nothing named twice
    assert len(_named(surface.replies())) == 5


async def test_two_concurrent_flushes_name_each_alert_once(deps: Deps, other: Store) -> None:
    surface = FakeSurface()
    first = StormDigest(deps.store, surface=surface, channel=CHANNEL)
    second = StormDigest(other, surface=surface, channel=CHANNEL)
    for n, incident in enumerate(await _storm(deps.store, 60)):
        await (first, second)[n % 2].add(incident, now=NOW)
    await asyncio.gather(first.flush(now=NOW), second.flush(now=NOW))
    assert sorted(_named(surface.replies())) == [f"alert-{i:03d}" for i in range(60)]


async def test_alerts_joined_before_the_root_is_posted_are_named_when_idle(
    deps: Deps, tmp_path: Path, other: Store
) -> None:
    """The inbox flushes when idle too: what joined before the root was posted gets named."""
    deps = replace(deps, settings=make_settings(tmp_path, sms_alert_threads_per_minute=1))
    surface = FakeSurface()
    processor = _processor(deps, surface)
    # Another replica created this minute's digest and has not posted its message yet.
    [early] = await _storm(other, 1)
    await other.digest_join(early.id, now=NOW, window=timedelta(minutes=1), new_id="d1")
    await _deliver(processor, *(_alert("Storm", f"fp{i}", f"h{i}") for i in range(4)))
    assert _posts(surface) == []  # in the storm: they joined that digest, and wait
    assert _named(surface.replies()) == []
    # A repeat of an alert waiting to be named opens no thread of its own.
    await _deliver(processor, _alert("Storm", "fp2", "h2"))
    assert _posts(surface) == []
    await other.digest_set_thread("d1", root_key="dg", conversation=_thread_of(surface, "dg"))

    task = asyncio.create_task(processor.run(idle_s=0.01))
    try:
        for _ in range(500):
            if len(_named(surface.replies())) == 5:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(_named(surface.replies())) == [
        *(f"Storm on h{i}" for i in range(4)),
        "alert-000",
    ]


async def test_a_storm_resolves_in_few_replies_grouped_by_alertname(
    deps: Deps, tmp_path: Path
) -> None:
    """500 resolutions at one post a second were 8 minutes; a reply holds dozens."""
    deps = replace(deps, settings=make_settings(tmp_path, sms_alert_threads_per_minute=2))
    surface = FakeSurface()
    processor = _processor(deps, surface)
    # Labels as wide as a resolution shows them: the replies must still fit the limits.
    alerts = [_alert(f"Storm{i % 3}", f"storm-{i}", f"h{i}", zone="z&" * 20) for i in range(302)]
    await _deliver(processor, *alerts)
    named = len(surface.replies())
    await _deliver(processor, *(replace(a, status="resolved") for a in alerts))
    resolutions = [m for m in surface.replies()[named:] if m.title.startswith("Resolved (")]
    assert sum(int(m.title.split("(")[1].split(")")[0]) for m in resolutions) == 300
    assert len(resolutions) <= 20  # was one reply per alert
    for reply in resolutions:  # one line per alertname, each naming its resolved alerts
        for line in reply.text.split("\n"):
            name, items = line.split(": ", 1)
            assert name.split(" (")[0] in {"Storm0", "Storm1", "Storm2"}
            assert int(name.split("(")[1].rstrip(")")) == len(items.split(", "))
    # Nothing cut off by Slack's limits or by the Teams card.
    for render in (to_block_kit, to_adaptive_card):
        shown = " ".join(json.dumps(render(m)) for m in resolutions)
        assert all(f'"h{i} z' in shown or f" h{i} z" in shown for i in range(2, 302))
        assert "not shown" not in shown and "truncated" not in shown.lower()
    digest = [m for k, ref, m in surface.events if k == "update" and ref == _posts(surface)[-1]]
    assert digest[-1].title.endswith("(all resolved)")
    table = digest[-1].details[0]
    assert isinstance(table, Table)
    assert [row[:3] for row in table.rows] == [(f"Storm{g}", "100", "100") for g in range(3)]


async def test_a_resolution_handled_again_after_a_crash_is_announced(
    deps: Deps, tmp_path: Path
) -> None:
    """Resolved in the store, killed before the flush: the event comes back and says so."""
    deps = replace(deps, settings=make_settings(tmp_path, sms_alert_threads_per_minute=1))
    surface = FakeSurface()
    alerts = [_alert("Storm", f"fp{i}", f"h{i}") for i in range(3)]
    await _deliver(_processor(deps, surface), *alerts)
    crashed = _processor(deps, surface)
    await crashed.receive(_batch(*(replace(a, status="resolved") for a in alerts[1:])))
    for event in await deps.store.alert_events_claim(now=NOW):
        await crashed.incidents.handle(event)  # ...and the bot dies: no flush, not done
    assert not [m for m in surface.replies() if m.title.startswith("Resolved")]
    later = replace(deps, clock=lambda: NOW + timedelta(minutes=1))  # past the events' lease
    await _deliver(_processor(later, surface))
    [reply] = [m for m in surface.replies() if m.title.startswith("Resolved")]
    assert reply.text == "Storm (2): h1, h2"


# -- helpers ---------------------------------------------------------------------------------


def _alert(name: str, fp: str, instance: str, **labels: str) -> Alert:
    return Alert(
        fingerprint=fp,
        status="firing",
        labels={"alertname": name, "instance": instance, **labels},
        annotations={"summary": f"{name} on {instance}"},
        starts_at=NOW - timedelta(minutes=2),
    )


def _batch(*alerts: Alert) -> AlertBatch:
    return AlertBatch(receiver="sms-bot", status="firing", group_key="g", alerts=alerts)


def _processor(deps: Deps, surface: FakeSurface) -> AlertProcessor:
    incidents = IncidentService(
        deps, Engine(deps), catalogue=CATALOGUE, surface=surface, channel=CHANNEL
    )
    return AlertProcessor(deps, incidents)


async def _deliver(processor: AlertProcessor, *alerts: Alert) -> None:
    if alerts:
        await processor.receive(_batch(*alerts))
    while await processor.process_once():
        pass


def _posts(surface: FakeSurface) -> list[str]:
    return [ref for kind, ref, _ in surface.events if kind == "post"]


def _thread_of(surface: FakeSurface, root: str) -> str:
    """A thread on the fake surface's alert channel, as a digest's row stores it."""
    return ThreadRef.of(MessageRef(Conversation(surface.name, CHANNEL), root)).encode()
