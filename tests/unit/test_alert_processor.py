"""Alerts to incident threads, with a fake surface and the real (SQLite) store."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from bot.alerts import Alert, AlertBatch
from bot.chat.blockkit import to_block_kit
from bot.deps import Deps
from bot.engine import Engine
from bot.events import Click, Command
from bot.incidents import ACK, RESOLVE, SILENCE, IncidentService
from bot.messages import Conversation, Link, Mention, Status
from bot.store import open_store
from bot.threads import ThreadRef
from handlers.actions import ClickHandler
from handlers.alerts import AlertProcessor
from handlers.dispatch import Dispatcher
from procedures.catalogue import CATALOGUE
from tests.fakes import NOW, FakeSurface
from tests.unit.conftest import make_settings


def _alert(
    name: str = "DiskSpace", fp: str = "fp1", status: str = "firing", **labels: str
) -> Alert:
    return Alert(
        fingerprint=fp,
        status=status,
        labels={"alertname": name, "instance": "sms-1", **labels},
        annotations={"summary": f"{name} on sms-1", "runbook": "runbook.md#disk"},
        starts_at=NOW - timedelta(minutes=2),
        generator_url="http://prometheus:9090/graph?g0.expr=disk",
    )


def _batch(*alerts: Alert) -> AlertBatch:
    return AlertBatch(receiver="sms-bot", status="firing", group_key="g", alerts=alerts)


def _incidents(deps: Deps, surface: FakeSurface, engine: Engine | None = None) -> IncidentService:
    return IncidentService(
        deps, engine or Engine(deps), catalogue=CATALOGUE, surface=surface, channel="#sms-alerts"
    )


def _processor(deps: Deps, surface: FakeSurface) -> AlertProcessor:
    return AlertProcessor(deps, _incidents(deps, surface))


async def _deliver(processor: AlertProcessor, *alerts: Alert) -> None:
    await processor.receive(_batch(*alerts))
    while await processor.process_once():
        pass


def _posts(surface: FakeSurface) -> list[str]:
    return [ref for kind, ref, _ in surface.events if kind == "post"]


async def test_a_batch_of_repeats_is_one_write_and_one_update(deps: Deps, tmp_path: Path) -> None:
    """A flapping group's repeats in one batch are folded: one touch, one thread update.

    Each repeat still counts, a ``resolved`` in the batch ends the run before it
    closes the incident, and the repeats after it belong to the next incident.
    """
    deps = replace(deps, settings=make_settings(tmp_path, sms_incidents_dir=str(tmp_path / "inc")))
    surface = FakeSurface()
    processor = _processor(deps, surface)
    await _deliver(processor, _alert())
    [root] = _posts(surface)
    before = len(surface.events)

    await _deliver(processor, *[_alert() for _ in range(5)], _alert(fp="fp2"))
    incident = await deps.store.incident_open_for("fp1")
    assert incident is not None and incident.repeats == 5
    updates = [ref for kind, ref, _ in surface.events[before:] if kind == "update"]
    # The first repeat handled as ever, the four after it folded: two updates, not five
    # (fp2 opened its own thread).
    assert updates == [root, root]

    await _deliver(processor, _alert(), _alert(status="resolved"), _alert(), _alert())
    resolved = await deps.store.incident_get(incident.id)
    assert resolved is not None and resolved.status == "resolved" and resolved.repeats == 6
    reopened = await deps.store.incident_open_for("fp1")
    assert reopened is not None and reopened.id != incident.id and reopened.repeats == 1
    assert await deps.store.alert_events_pending() == 0


async def test_firing_repeat_resolved(deps: Deps, tmp_path: Path) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_incidents_dir=str(tmp_path / "inc")))
    surface = FakeSurface()
    processor = _processor(deps, surface)

    await _deliver(processor, _alert())
    [root] = _posts(surface)
    msg = surface.last(root)
    assert msg.title == "FIRING [P3] DiskSpace: DiskSpace on sms-1"
    assert msg.status is Status.CRIT
    assert [b.label for b in msg.buttons] == [
        "Acknowledge",
        "Silence 1h",
        "Silence 4h",
        "Silence 24h",
    ]
    assert Link("Prometheus", "http://prometheus:9090/graph?g0.expr=disk") in msg.links
    assert "<http" not in msg.text  # links are in the model, never markup in the text
    incident = await deps.store.incident_open_for("fp1")
    assert incident is not None and incident.root_key == root

    await _deliver(processor, _alert())
    assert _posts(surface) == [root]  # the repeat folds into the same thread
    assert any(f.label == "Repeats" for f in surface.last(root).fields)

    await _deliver(processor, _alert(status="resolved"))
    final = surface.last(root)
    assert final.status is Status.OK and final.title.startswith("RESOLVED")
    assert final.buttons == ()
    resolution = surface.replies()[-1]
    assert resolution.title == "Resolved" and "Resolved after" in resolution.text
    stored = await deps.store.incident_get(incident.id)
    assert stored is not None and stored.status == "resolved" and stored.record_path
    record = Path(stored.record_path).read_text()
    assert "# P3 DiskSpace: DiskSpace on sms-1" in record
    assert "Alert DiskSpace firing" in record and "Resolved" in record
    assert await deps.store.incident_record_text(incident.id) == record  # kept in the store too
    assert await deps.store.alert_events_pending() == 0


async def test_several_alerts_in_one_payload_get_their_own_threads(deps: Deps) -> None:
    surface = FakeSurface()
    await _deliver(_processor(deps, surface), _alert(fp="a"), _alert("HighCPU", fp="b"))
    assert len(_posts(surface)) == 2


async def test_an_alert_storm_becomes_one_digest(deps: Deps, tmp_path: Path) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_alert_threads_per_minute=3))
    surface = FakeSurface()
    processor = _processor(deps, surface)
    await _deliver(processor, *(_alert(f"Alert{i}", fp=f"fp{i}") for i in range(10)))
    posts = _posts(surface)
    assert len(posts) == 4  # three threads and one digest
    digest = surface.last(posts[-1])
    assert digest.title.startswith("Alert storm: 7 more alerts")
    assert len(digest.details[0].rows) == 7  # type: ignore[union-attr]
    assert len(await deps.store.incidents_open()) == 10  # none dropped
    # The listed incidents live in the digest's thread; the digest_id column says so,
    # not a flag patched into their stored thread.
    listed = [i for i in await deps.store.incidents_open() if i.digest_id]
    assert len(listed) == 7
    for incident in listed:
        assert incident.conversation is not None and "digest" not in incident.conversation
        assert ThreadRef.decode(incident.conversation).root_key == posts[-1]
    await _deliver(processor, _alert("Alert9", fp="fp9", status="resolved"))
    resolution = surface.replies()[-1]
    assert resolution.title == "Resolved (1): Alert9"
    assert resolution.text == "Alert9 (1): sms-1"
    assert surface.last(posts[-1]).title.endswith("(1 resolved)")


async def test_two_processors_on_one_store_share_the_digest(deps: Deps, tmp_path: Path) -> None:
    """The digest is in the store: a second replica adds to it instead of posting its own."""
    deps = replace(deps, settings=make_settings(tmp_path, sms_alert_threads_per_minute=2))
    surface = FakeSurface()  # the one channel both replicas post to
    other_store = open_store(deps.settings.bot_state_url)
    await other_store.open()
    try:
        first = _processor(deps, surface)
        second = _processor(replace(deps, store=other_store), surface)
        await _deliver(first, *(_alert(f"Alert{i}", fp=f"fp{i}") for i in range(4)))
        await _deliver(second, *(_alert(f"Alert{i}", fp=f"fp{i}") for i in range(4, 7)))
        await _deliver(first, _alert("Alert7", fp="fp7"))
    finally:
        await other_store.close()
    posts = _posts(surface)
    assert len(posts) == 3  # two threads and one digest
    digest = surface.last(posts[-1])
    assert digest.title.startswith("Alert storm: 6 more alerts")
    assert [r[:2] for r in digest.details[0].rows] == [  # type: ignore[union-attr]
        (f"Alert{i}", "1") for i in range(2, 8)
    ]
    named = [row[1] for m in surface.replies() for t in m.details for row in t.rows]  # type: ignore[union-attr]
    assert sorted(named) == [f"Alert{i} on sms-1" for i in range(2, 8)]


async def test_a_storm_names_every_alert_in_few_replies_grouped_by_alertname(
    deps: Deps, tmp_path: Path
) -> None:
    """The root counts by alertname; the thread names each alert, a few replies per batch."""
    deps = replace(deps, settings=make_settings(tmp_path, sms_alert_threads_per_minute=2))
    surface = FakeSurface()
    processor = _processor(deps, surface)
    # Labels as wide as a row shows them: the replies must still fit Slack's limits.
    alerts = [
        _alert(f"Storm{i % 3}", fp=f"storm-{i}", instance=f"h{i}", zone="z" * 40)
        for i in range(302)
    ]
    await _deliver(processor, *alerts)
    posts = _posts(surface)
    assert len(posts) == 3  # two threads and one digest
    digest = surface.last(posts[-1])
    assert digest.title.startswith("Alert storm: 300 more alerts")
    assert [r[:2] for r in digest.details[0].rows] == [  # type: ignore[union-attr]
        ("Storm0", "100"),
        ("Storm1", "100"),
        ("Storm2", "100"),
    ]
    replies = surface.replies()
    named = [(t.title, row[2]) for m in replies for t in m.details for row in t.rows]  # type: ignore[union-attr]
    assert len(named) == 300
    assert {label.split()[0] for _, label in named} == {f"instance=h{i}" for i in range(2, 302)}
    # A batch of the inbox (100 events) in as few replies as hold it, not one per alert.
    assert len(replies) <= 15
    for reply in replies:  # nothing cut off by Slack's limits
        rendered = json.dumps(to_block_kit(reply))
        rows = [row for t in reply.details for row in t.rows]  # type: ignore[union-attr]
        assert all(row[2] in rendered for row in rows)
    for reply in replies:  # grouped: a table per alertname, each row one of its alerts
        for table in reply.details:
            names = {row[1].split(" ")[0] for row in table.rows}  # type: ignore[union-attr]
            assert names == {table.title.split(" ")[0]}


async def test_unacknowledged_incidents_escalate_once(deps: Deps, tmp_path: Path) -> None:
    deps = replace(
        deps,
        settings=make_settings(
            tmp_path, sms_escalation_mention="<!subteam^S1>", sms_operators=("U1", "U2")
        ),
    )
    surface = FakeSurface()
    processor = _processor(deps, surface)
    await _deliver(processor, _alert("SlowThing", fp="p2", priority="P2"))
    await _deliver(processor, _alert("Acked", fp="p2b", priority="P2"))
    acked = await deps.store.incident_open_for("p2b")
    assert acked is not None
    clicks = ClickHandler(deps, Engine(deps), incidents=_incidents(deps, surface))
    where = Conversation("fake", "#sms-alerts")
    assert await clicks.handle(Click(ACK, acked.id, "U1", "slack", where), surface) == (
        "acknowledged"
    )
    assert await clicks.handle(Click(ACK, acked.id, "U2", "slack", where), surface) == (
        "already_acknowledged"
    )

    assert await processor.incidents.escalate_due() == 0  # not yet: P2 has 30 minutes
    later = _processor(replace(deps, clock=lambda: NOW + timedelta(minutes=31)), surface)
    assert await later.incidents.escalate_due() == 1
    assert await later.incidents.escalate_due() == 0
    escalation = surface.replies()[-1]
    assert escalation.title == "Escalation"
    assert escalation.text.startswith("P2 incident not acknowledged within 30")
    assert escalation.mentions == (Mention("!subteam^S1"),)


async def test_silence_buttons_create_a_silence_for_the_alert_labels(
    deps: Deps, tmp_path: Path
) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_operators=("UOPS",)))
    surface = FakeSurface()
    await _deliver(_processor(deps, surface), _alert())
    incident = await deps.store.incident_open_for("fp1")
    assert incident is not None
    clicks = ClickHandler(deps, Engine(deps), incidents=_incidents(deps, surface))
    where = Conversation("fake", "#sms-alerts")
    assert (
        await clicks.handle(Click(SILENCE, f"{incident.id}:4", "UVIEW", "slack", where), surface)
        == "refused"
    )
    assert (
        await clicks.handle(Click(SILENCE, f"{incident.id}:4", "UOPS", "slack", where), surface)
        == "silenced"
    )
    [silence] = deps.alertmanager.silences  # type: ignore[attr-defined]
    assert silence["matchers"] == {"alertname": "DiskSpace", "instance": "sms-1"}
    assert silence["ends_at"] - silence["starts_at"] == timedelta(hours=4)
    assert "silence-1" in surface.replies()[-1].title
    assert (
        await clicks.handle(Click(SILENCE, f"{incident.id}:999", "UOPS", "slack", where), surface)
        == "bad_silence"
    )


async def test_acknowledge_and_silence_are_operators_buttons(deps: Deps, tmp_path: Path) -> None:
    deps = replace(
        deps, settings=make_settings(tmp_path, sms_operators=("UOPS",), sms_approvers=("UAPP",))
    )
    surface = FakeSurface()
    await _deliver(_processor(deps, surface), _alert())
    incident = await deps.store.incident_open_for("fp1")
    assert incident is not None
    clicks = ClickHandler(deps, Engine(deps), incidents=_incidents(deps, surface))
    where = Conversation("fake", "#sms-alerts")
    before = len(surface.events)

    for action, value in ((ACK, incident.id), (SILENCE, f"{incident.id}:4")):
        outcome = await clicks.handle(Click(action, value, "UVIEW", "slack", where), surface)
        assert outcome == "refused"
        kind, user, answer = surface.events[-1]
        assert (kind, user) == ("ephemeral", "UVIEW")  # privately, to the clicker only
        assert answer.title == "Nothing was changed"
        assert "need the operator role" in answer.text and "SMS_OPERATORS" in answer.text
    # Nothing changed: no silence, no acknowledgement, no message touched in the thread.
    assert deps.alertmanager.silences == []  # type: ignore[attr-defined]
    current = await deps.store.incident_get(incident.id)
    assert current is not None and current.acknowledged_by is None
    assert all(kind == "ephemeral" for kind, _, _ in surface.events[before:])
    audit = await deps.store.recent_audit()
    clicks_audited = [e for e in audit if e.action == "click"]
    assert [e.outcome for e in clicks_audited] == ["refused", "refused"]
    assert {e.actor for e in clicks_audited} == {"UVIEW"}

    # An operator's click works; approvers are operators too.
    assert await clicks.handle(Click(ACK, incident.id, "UOPS", "slack", where), surface) == (
        "acknowledged"
    )
    acked = await deps.store.incident_get(incident.id)
    assert acked is not None and acked.acknowledged_by == "UOPS"
    assert (
        await clicks.handle(Click(SILENCE, f"{incident.id}:1", "UAPP", "slack", where), surface)
        == "silenced"
    )


async def test_manual_incident_opened_and_resolved(deps: Deps, tmp_path: Path) -> None:
    deps = replace(
        deps,
        settings=make_settings(
            tmp_path, sms_operators=("UOPS",), sms_incidents_dir=str(tmp_path / "inc")
        ),
    )
    surface = FakeSurface()
    engine = Engine(deps)
    incidents = _incidents(deps, surface, engine)
    dispatcher = Dispatcher(deps, engine, incidents=incidents)
    where = Conversation("fake", "#ops")
    handled = await dispatcher.handle(
        Command("/sms incident Grades page is blank", "UOPS", "slack", where), surface
    )
    assert handled.exit_code == 0
    [root] = _posts(surface)
    msg = surface.last(root)
    assert msg.title == "FIRING [P2] Manual incident: Grades page is blank"
    assert [b.label for b in msg.buttons] == ["Acknowledge", "Resolve"]
    [incident] = await deps.store.incidents_open()
    clicks = ClickHandler(deps, engine, incidents=incidents)
    assert await clicks.handle(Click(RESOLVE, incident.id, "UOPS", "slack", where), surface) == (
        "resolved"
    )
    stored = await deps.store.incident_get(incident.id)
    assert stored is not None and stored.status == "resolved" and stored.record_path
    assert "Resolved after" in surface.replies()[-1].text

    usage = await dispatcher.handle(Command("incident", "UOPS", "slack", where), surface)
    assert usage.exit_code == 2
    refused = await dispatcher.handle(Command("incident x", "UNOBODY", "slack", where), surface)
    assert refused.exit_code == 1


async def test_silence_command_creates_a_silence_and_shows_its_id(
    deps: Deps, tmp_path: Path
) -> None:
    deps = replace(deps, settings=make_settings(tmp_path, sms_operators=("UOPS",)))
    surface = FakeSurface()
    dispatcher = Dispatcher(deps, Engine(deps))
    where = Conversation("fake", "#ops")
    handled = await dispatcher.handle(
        Command("/sms silence HighCPU 4h", "UOPS", "slack", where), surface
    )
    assert handled.exit_code == 0
    [silence] = deps.alertmanager.silences  # type: ignore[attr-defined]
    assert silence["matchers"] == {"alertname": "HighCPU"}
    assert silence["ends_at"] - silence["starts_at"] == timedelta(hours=4)
    fields = {f.label: f.value for f in surface.last().fields}
    assert fields["Silence"] == "silence-1"
    assert isinstance(fields["Link"], Link)
    assert fields["Link"].url.endswith("/#/silences/silence-1")

    for text, reason in [
        ("silence HighCPU", "Give the alert's name and a duration."),
        ("silence HighCPU forever", "is not a duration like 30m, 4h or 1d."),
        ("silence HighCPU 30d", "A silence lasts from 1 minute to 7 days."),
        ("silence bad-name! 1h", "is not an alert name."),
    ]:
        bad = await dispatcher.handle(Command(text, "UOPS", "slack", where), surface)
        assert bad.exit_code == 2, text
        assert reason in surface.events[-1][2].text
    viewer = await dispatcher.handle(
        Command("silence HighCPU 1h", "UVIEW", "slack", where), surface
    )
    assert viewer.exit_code == 1
    assert len(deps.alertmanager.silences) == 1  # type: ignore[attr-defined]


class BrokenThreads(FakeSurface):
    """A surface that fails on incident threads (as a rendering bug would), not on others."""

    async def post(self, where, msg):  # type: ignore[no-untyped-def]
        if msg.title.startswith("FIRING"):
            raise RuntimeError("cannot render this alert")
        return await super().post(where, msg)


async def test_an_alert_that_keeps_failing_is_still_shown(deps: Deps) -> None:
    at = {"now": NOW}
    deps = replace(deps, clock=lambda: at["now"])
    surface = BrokenThreads()
    processor = _processor(deps, surface)
    await processor.receive(_batch(_alert()))
    for attempt in range(1, 10):
        assert await processor.process_once() == 1
        assert _posts(surface) == [], attempt  # retried, not shown yet
        at["now"] += timedelta(seconds=6)
    assert await processor.process_once() == 1  # the tenth attempt falls back
    [posted] = _posts(surface)
    msg = surface.last(posted)
    assert msg.title == "Unprocessed alert: DiskSpace"
    assert "after 10 attempts" in msg.text and "instance=sms-1" in msg.text
    assert await deps.store.alert_events_pending() == 0
    events = await deps.store.recent_audit(5)
    assert any(e.outcome == "fallback" for e in events)


class FlakyThreads(FakeSurface):
    """Fails to post the first two incident threads, then recovers."""

    failures = 2

    async def post(self, where, msg):  # type: ignore[no-untyped-def]
        if msg.title.startswith("FIRING") and self.failures:
            self.failures -= 1
            raise RuntimeError("chat hiccup")
        return await super().post(where, msg)


async def test_a_thread_that_failed_to_post_is_posted_on_retry(deps: Deps) -> None:
    at = {"now": NOW}
    deps = replace(deps, clock=lambda: at["now"])
    surface = FlakyThreads()
    processor = _processor(deps, surface)
    await processor.receive(_batch(_alert()))
    for _ in range(3):
        await processor.process_once()
        at["now"] += timedelta(seconds=6)
    [root] = _posts(surface)
    assert surface.last(root).title.startswith("FIRING [P3] DiskSpace")
    incident = await deps.store.incident_open_for("fp1")
    assert incident is not None and incident.root_key == root
    assert len(await deps.store.incidents_open()) == 1  # one incident, not three
