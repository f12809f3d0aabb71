"""Change windows through the dispatcher, against fakes: start, one at a time, watch, record."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from bot.chat.base import Conversation
from bot.deps import Deps
from bot.engine import Engine
from bot.events import Command
from bot.messages import Status
from handlers.dispatch import Dispatcher
from procedures.morning_summary import morning_summary
from tests.fakes import NOW, FakeSurface, healthy_report
from tests.unit.conftest import make_settings

USER = "console:alice"


def _deps(deps: Deps, tmp_path: Path) -> Deps:
    settings = make_settings(
        tmp_path,
        sms_operators=USER,
        sms_change_watch_min=0.001,  # 0.06 s: three rounds
        sms_change_watch_interval_s=0.02,
        sms_incidents_dir=str(tmp_path / "incidents"),
    )
    return replace(deps, settings=settings)


async def _send(deps: Deps, surface: FakeSurface, text: str) -> None:
    command = Command(
        text=text, user=USER, source="console", conversation=Conversation("fake", "#ops")
    )
    await Dispatcher(deps, Engine(deps)).handle(command, surface)


def _backup(deps: Deps, *, age_h: float) -> None:
    path = Path(deps.settings.sms_backup_dir) / "backup_20261126_070000.sql"
    path.write_bytes(b"-- PostgreSQL database dump\n" * 10)
    ts = (NOW - timedelta(hours=age_h)).timestamp()
    os.utime(path, (ts, ts))


async def test_a_change_from_start_to_a_degraded_watch_and_its_record(
    deps: Deps, tmp_path: Path
) -> None:
    deps = _deps(deps, tmp_path)
    _backup(deps, age_h=3)
    surface = FakeSurface()
    await _send(deps, surface, 'change start "Upgrade backend to 2.4" --silence HighLatency')
    change = await deps.store.change_current()
    assert change is not None and change.description == "Upgrade backend to 2.4"
    start = surface.last("m1")
    assert start.status is Status.OK, start
    assert "Kind: non-critical (under 5 minutes of downtime)" in start.text
    assert "Silenced while it lasts: HighLatency." in start.text
    assert deps.alertmanager.silences[0]["matchers"] == {"alertname": "HighLatency"}  # type: ignore[attr-defined]
    proposals = [
        m for m in surface.replies() if any(b.label == "Run manual backup" for b in m.buttons)
    ]
    assert len(proposals) == 1  # the pre-change backup

    # One open change at a time.
    other = FakeSurface()
    await _send(deps, other, 'change start "Something else"')
    assert "A change is already open: 'Upgrade backend to 2.4'" in other.last().text

    # The backend goes unhealthy after the change: the watch says so at once, with the rollback.
    deps.health.report = healthy_report(database="down")  # type: ignore[attr-defined]
    watch = FakeSurface()
    await _send(deps, watch, "change done")
    final = watch.last()
    assert [s.name for s in final.steps] == ["Watch 1/3", "Watch 2/3", "Watch 3/3"]
    assert all(s.status is Status.CRIT for s in final.steps)
    [alarm] = [m for m in watch.replies() if m.title == "Degradation during the change watch"]
    assert alarm.text.startswith("System health endpoint: ok → crit\n")
    assert "Rollback: no pre-change backup was taken" in alarm.text
    assert final.text.startswith("Degraded after the change")
    assert await deps.store.change_current() is None
    assert deps.alertmanager.expired == ["silence-1"]  # type: ignore[attr-defined]
    [record] = (tmp_path / "incidents").glob("change-*.md")
    text = record.read_text()
    assert "# Change: Upgrade backend to 2.4" in text and "round 1: DEGRADED" in text
    actions = [e.action for e in await deps.store.recent_audit(100)]
    assert "change.start" in actions and "change.done" in actions


async def test_a_critical_change_needs_its_backup_before_done(deps: Deps, tmp_path: Path) -> None:
    deps = _deps(deps, tmp_path)
    _backup(deps, age_h=30)  # older than the change
    surface = FakeSurface()
    await _send(deps, surface, 'change start "Migrate the schema" --critical')
    assert "Notify users 24 hours in advance" in surface.last("m1").text
    done = FakeSurface()
    await _send(deps, done, "change done")
    assert "needs its pre-change backup" in done.last().text
    assert await deps.store.change_current() is not None  # still open

    summary = FakeSurface()
    run = await Engine(deps).execute(
        morning_summary,
        name="morning-summary",
        title="Morning summary",
        command=Command(
            text="scheduled",
            user="sms-bot",
            source="scheduler",
            conversation=Conversation("fake", "#sms-alerts"),
        ),
        surface=summary,
    )
    assert "A change is still open: 'Migrate the schema'" in run.text

    await _send(deps, FakeSurface(), "change abort")
    assert await deps.store.change_current() is None


async def test_done_without_an_open_change(deps: Deps, tmp_path: Path) -> None:
    deps = _deps(deps, tmp_path)
    surface = FakeSurface()
    await _send(deps, surface, "change done")
    assert "No change is open" in surface.last().text


async def test_a_change_is_aborted_even_with_the_backup_folder_missing(
    deps: Deps, tmp_path: Path
) -> None:
    deps = _deps(deps, tmp_path)
    Path(deps.settings.sms_backup_dir).rmdir()
    await _send(deps, FakeSurface(), 'change start "Rotate the TLS certificate"')
    assert await deps.store.change_current() is not None
    surface = FakeSurface()
    await _send(deps, surface, "change abort")
    assert surface.last().status is Status.OK, surface.last()
    assert await deps.store.change_current() is None
    [record] = (tmp_path / "incidents").glob("change-*.md")
    assert "- Pre-change backup: none recorded" in record.read_text()


async def test_every_silence_of_a_change_is_expired_when_it_ends(
    deps: Deps, tmp_path: Path
) -> None:
    deps = _deps(deps, tmp_path)
    await _send(
        deps,
        FakeSurface(),
        'change start "Move the database" --silence BackendDown --silence HighErrorRate',
    )
    assert len(deps.alertmanager.silences) == 2  # type: ignore[attr-defined]
    await _send(deps, FakeSurface(), "change abort")
    assert deps.alertmanager.expired == ["silence-1", "silence-2"]  # type: ignore[attr-defined]
