"""State databases made by an earlier version of the store, and how to read them back.

Why: a rewrite of the store must open a database the bot already has in
production (SQLite file or PostgreSQL schema) and lose nothing. The files in
``tests/fixtures/`` were made by ``python -m tests.store_fixtures`` with the
store as it was before the rewrite to shared SQL (migrations 5 and 6); they
are not rebuilt by the tests, or they would only prove the new code reads
what the new code writes.

``fill`` puts rows in every table through the store's own methods, with fixed
ids and times; ``snapshot`` reads every row back through the store's methods.
The upgrade test fills a fresh database with the code under test and compares
the two snapshots.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.store import Store
from bot.store.base import (
    AuditEvent,
    ChatMessage,
    Incident,
    NewAlertEvent,
    Proposal,
    RunRecord,
    StepRecord,
)

__all__ = ["FIXTURES", "JOBS", "NOW", "fill", "snapshot"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
NOW = T + timedelta(hours=1)
JOBS = ("morning-summary", "weekly-report")
_RUNS = ("run-1", "run-2")
_PROPOSALS = ("prop-done", "prop-pending", "prop-cancelled")
_INCIDENTS = ("inc-acked", "inc-resolved", "inc-manual", "inc-escalated")
_KEYS = ("m-root", "m-reply", "m-dead", "m-retry")


def _at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def _incident(id: str, fingerprint: str | None, minutes: float) -> Incident:
    return Incident(
        id=id,
        fingerprint=fingerprint,
        title=f"{id}: backend /health failing",
        priority="P1" if fingerprint else "P2",
        procedure="backend_down" if fingerprint else "",
        labels={"alertname": "BackendDown", "severity": "critical", "é": "ü"},
        annotations={"summary": "backend down", "runbook": "§3.1"},
        opened_at=_at(minutes),
        opened_by="alertmanager" if fingerprint else "U_ONCALL",
    )


async def fill(store: Store, *, digests: bool) -> None:
    """Rows in every table, in every state a row can be in (digests from migration 6)."""
    for n, run_id in enumerate(_RUNS):
        run = RunRecord(run_id, f"logs backend {n}", "U1", "slack", f"C1/17000.{n}", _at(n))
        await store.start_run(run)
        await store.save_step(StepRecord(run_id, 0, "fetch", "ok", _at(n), 1.25, "42 lines"))
        await store.save_step(StepRecord(run_id, 1, "grep", "failed", None, None, "", "boom"))
    await store.finish_run(_RUNS[0], status="failed", finished_at=_at(0.5))
    for n in range(3):
        detail = {"n": n, "nested": {"a": [1, 2]}, "text": "ünïcode"}
        event = AuditEvent(_at(n), "U1", "slack", "restart", "backend", "ok", "C1/x", detail)
        await store.audit(event)
    parts: dict[str, Any] = {"surface": "slack", "channel": "C1", "now": _at(1)}
    await store.outbox_add(
        message_key=_KEYS[0], op="post", parent_key=None, payload={"t": 1}, **parts
    )
    await store.outbox_add(
        message_key=_KEYS[0], op="update", parent_key=None, payload={"t": 2}, **parts
    )
    await store.outbox_add(
        message_key=_KEYS[1], op="reply", parent_key=_KEYS[0], payload={"t": 3}, **parts
    )
    await store.outbox_add(
        message_key=_KEYS[2], op="post", parent_key=None, payload={"t": 4}, **parts
    )
    await store.outbox_add(
        message_key=_KEYS[3], op="ephemeral", parent_key=None, payload={"t": [5]}, **parts
    )
    claimed = await store.outbox_claim(now=_at(2), limit=10)
    by_key = {item.message_key: item.id for item in claimed}
    await store.outbox_done(by_key[_KEYS[0]])
    await store.outbox_dead(by_key[_KEYS[2]], error="channel_not_found")
    await store.outbox_retry(by_key[_KEYS[3]], at=_at(3), error="ratelimited")
    await store.chat_message_put(ChatMessage(_KEYS[0], "slack", "C1", "1700.01", None))
    await store.chat_message_put(ChatMessage(_KEYS[1], "slack", "C1", "1700.02", "1700.01"))
    for n, pid in enumerate(_PROPOSALS):
        await store.proposal_add(
            Proposal(
                pid,
                "restart",
                {"container": "docker-backend-1", "opts": {"wait_s": n}},
                f"Restart {n}",
                _RUNS[0],
                "slack:C1:1700.01",
                f"m-p{n}",
                "U_OP",
                "approver",
                _at(n),
                _at(n + 60),
            )
        )
    await store.proposal_claim(_PROPOSALS[0], by="U_APPROVER", now=_at(4))
    await store.proposal_finish(_PROPOSALS[0], status="done", result="restarted")
    await store.proposal_cancel(_PROPOSALS[2], by="U_OP", now=_at(5))
    events = [
        NewAlertEvent(
            f"fp-{n}",
            "firing" if n < 2 else "resolved",
            {"alertname": "A", "n": str(n)},
            {"summary": "s"},
            _at(-n),
            _at(n) if n == 2 else None,
            f"http://p/{n}",
        )
        for n in range(4)
    ]
    ids = await store.alert_events_add(events, received_at=_at(6))
    await store.alert_events_claim(now=_at(6), limit=2)
    await store.alert_event_done(ids[0])
    await store.alert_event_retry(ids[1], at=_at(7), error="docker down")
    acked, resolved, manual, escalated = (
        _incident(_INCIDENTS[0], "fp-0", 8),
        _incident(_INCIDENTS[1], "fp-1", 9),
        _incident(_INCIDENTS[2], None, 10),
        _incident(_INCIDENTS[3], "fp-3", 11),
    )
    for incident in (acked, resolved, manual, escalated):
        await store.incident_open(incident)
        await store.incident_set_thread(
            incident.id, root_key=f"k-{incident.id}", conversation='{"c": 1}'
        )
    await store.incident_touch(acked.id, now=_at(12))
    await store.incident_ack(acked.id, by="U_ONCALL", now=_at(13))
    await store.incident_set_record(acked.id, path="incidents/acked.md", text="# Acked\n")
    await store.incident_resolve(resolved.id, now=_at(14))
    await store.incident_set_record(resolved.id, path="incidents/resolved.md")
    await store.incident_escalate(escalated.id, now=_at(15))
    await store.job_claim(JOBS[0], slot=_at(0), runner="host-a:1", now=_at(0.1))
    await store.job_finish(JOBS[0], slot=_at(0), status="warn", now=_at(0.2))
    await store.job_claim(JOBS[1], slot=_at(1), runner="host-b:2", now=_at(1.1))
    if digests:
        window = timedelta(minutes=5)
        for incident in (escalated, manual):
            await store.digest_join(incident.id, now=_at(16), window=window, new_id="dig-1")
        await store.digest_set_thread("dig-1", root_key="k-dig", conversation='{"d": 1}')
        await store.digest_join(resolved.id, now=_at(30), window=window, new_id="dig-2")


async def snapshot(store: Store) -> dict[str, Any]:
    """Every row of ``fill`` read back through the store's methods (claims lease at ``NOW``)."""
    out: dict[str, Any] = {"version": await store.schema_version()}
    for run_id in _RUNS:
        out[run_id] = (await store.get_run(run_id), await store.list_steps(run_id))
    out["recent_runs"] = await store.recent_runs()
    out["runs_for_conversation"] = await store.runs_for_conversation("C1/17000.0")
    out["audit"] = await store.recent_audit()
    out["audit_between"] = await store.audit_between(T, _at(2))
    out["count_audit"] = await store.count_audit(action="restart", target="backend", since=T)
    out["outbox"] = await store.outbox_items(include_done=True)
    out["outbox_pending"] = await store.outbox_pending()
    out["chat"] = [await store.chat_message_get(key) for key in _KEYS]
    out["proposals"] = [await store.proposal_get(pid) for pid in _PROPOSALS]
    out["alerts_pending"] = await store.alert_events_pending()
    out["incidents"] = [await store.incident_get(iid) for iid in _INCIDENTS]
    out["records"] = [await store.incident_record_text(iid) for iid in _INCIDENTS]
    out["incidents_open"] = await store.incidents_open()
    out["incidents_between"] = await store.incidents_between(T, NOW)
    out["open_for"] = await store.incident_open_for("fp-3")
    out["jobs"] = [await store.job_runs(job) for job in JOBS]
    if out["version"] >= 6:
        out["digests"] = [await store.digest_get(d) for d in ("dig-1", "dig-2")]
        out["digest_incidents"] = [await store.digest_incidents(d) for d in ("dig-1", "dig-2")]
    out["outbox_claim"] = await store.outbox_claim(now=NOW)
    out["alerts_claim"] = await store.alert_events_claim(now=NOW)
    return out


async def _build(url: str, migrations: int) -> None:
    from bot.store import MIGRATIONS, PostgresStore, SqliteStore

    store = (
        SqliteStore(url, migrations=MIGRATIONS[:migrations])
        if not url.startswith("postgresql")
        else PostgresStore(url, migrations=MIGRATIONS[:migrations])
    )
    await store.open()
    try:
        await fill(store, digests=migrations >= 6)
    finally:
        await store.close()


def main() -> None:
    """Write ``store_v{5,6}.sqlite`` and ``store_v{5,6}.postgres.sql`` with the current store."""
    from tests.harness.postgres import start_cluster

    FIXTURES.mkdir(exist_ok=True)
    for version in (5, 6):
        path = FIXTURES / f"store_v{version}.sqlite"
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as db:  # small pages keep the checked-in file small
            db.execute("PRAGMA page_size = 1024")
            db.execute("VACUUM")
        asyncio.run(_build(str(path), version))
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode = DELETE")
    with start_cluster() as server:
        for version in (5, 6):
            dsn = server.create_database_sync(f"fixture{version}")
            asyncio.run(_build(dsn, version))
            dump = subprocess.run(
                [
                    shutil.which("pg_dump") or "pg_dump",
                    "--no-owner",
                    "--no-privileges",
                    "--column-inserts",
                    "--dbname",
                    dsn,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            # Without psql's meta-commands (\restrict) and version banners: plain SQL.
            lines = [line for line in dump.splitlines() if not line.startswith(("-- Dumped", "\\"))]
            (FIXTURES / f"store_v{version}.postgres.sql").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
