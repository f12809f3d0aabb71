"""Restore on the real services: a real pg_dump, the backend container, two approvers.

The SMS database is a fresh PostgreSQL database with 18 users; the backup is
taken with the harness cluster's own ``pg_dump``; rows are then deleted, and
the restore (proposed by an operator, approved by two different approvers)
must bring them back, swap the databases and keep the previous one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot.adapters.pgtools import PgTools
from bot.app import App, build_app
from bot.chat.base import Conversation
from bot.config import load_settings
from bot.engine import Run
from bot.events import Click, Command
from bot.messages import Mention, Message, Status, Table
from bot.proposals import APPROVE
from procedures.restore import restore_proposal
from tests.fakes import FakeSurface
from tests.harness.docker import SmsContainers
from tests.harness.postgres import PgServer, _find_bindir

pytestmark = pytest.mark.integration

REQUESTER = "console:ann"  # an operator who is also an approver
SECOND = "console:bob"


def _dbname(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def _users(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM users"))
    finally:
        await conn.close()


async def _databases(server: PgServer, prefix: str) -> list[str]:
    conn = await asyncpg.connect(server.superuser_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", prefix + "%"
        )
    finally:
        await conn.close()
    return [r["datname"] for r in rows]


@pytest.fixture
async def sms_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """The SMS database with 18 users, under a short name (the restore adds
    ``_before_restore_YYYYMMDD_HHMMSS``, and names are at most 63 bytes)."""
    dsn = await pg_server.create_database("r")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL)")
        await conn.executemany(
            "INSERT INTO users (email) VALUES ($1)", [(f"user{i}@school.edu",) for i in range(18)]
        )
    finally:
        await conn.close()
    yield dsn
    await pg_server.drop_database(dsn)


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


async def _app(
    tmp_path: Path,
    sms_containers: SmsContainers,
    sms_dsn: str,
    backups: Path,
    approvals: int,
    recovery_s: int = 30,
) -> AsyncIterator[App]:
    env = {
        "BOT_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "BOT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SMS_SERVICES": ",".join(f"{k}={v}" for k, v in sms_containers.services.items()),
        "SMS_HEALTH_URL": sms_containers.health_url,
        "SMS_DATABASE_URL": sms_dsn,
        "SMS_BACKUP_DIR": str(backups),
        "SMS_INCIDENTS_DIR": str(tmp_path / "incidents"),
        "SMS_PG_BIN_DIR": str(_find_bindir()),
        "SMS_APPROVERS": f"{REQUESTER},{SECOND}",
        "SMS_RESTORE_APPROVALS": str(approvals),
        "SMS_RECOVERY_TIMEOUT_S": str(recovery_s),
    }
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    async with build_app(settings) as built:
        yield built


@pytest.fixture
async def app(
    tmp_path: Path, sms_containers: SmsContainers, sms_dsn: str, backups: Path
) -> AsyncIterator[App]:
    async for built in _app(tmp_path, sms_containers, sms_dsn, backups, approvals=2):
        yield built


@pytest.fixture
async def app_one(
    tmp_path: Path, sms_containers: SmsContainers, sms_dsn: str, backups: Path
) -> AsyncIterator[App]:
    async for built in _app(tmp_path, sms_containers, sms_dsn, backups, approvals=1):
        yield built


@pytest.fixture
async def app_quick(
    tmp_path: Path, sms_containers: SmsContainers, sms_dsn: str, backups: Path
) -> AsyncIterator[App]:
    """One approver, and a short wait for /health (the rollback test waits twice)."""
    async for built in _app(tmp_path, sms_containers, sms_dsn, backups, approvals=1, recovery_s=4):
        yield built


async def _dump(sms_dsn: str, path: Path, *, age_h: float = 2) -> Path:
    await PgTools(sms_dsn, bin_dir=str(_find_bindir())).dump(path, timeout_s=60)
    ts = time.time() - age_h * 3600
    os.utime(path, (ts, ts))
    return path


async def _propose(app: App, surface: FakeSurface, backup: str | None = None) -> Run:
    return await app.engine.execute(
        partial(restore_proposal, backup=backup),
        name="restore",
        title="Restore?",
        command=Command("restore", REQUESTER, "console", Conversation("console")),
        surface=surface,
    )


def _final(surface: FakeSurface, title_part: str) -> Message:
    """The latest version of the run message whose title has ``title_part``."""
    keys = [rid for k, rid, m in surface.events if k == "reply" and title_part in m.title]
    assert keys, surface.events
    first = surface.keys[
        [m.title for m in surface.replies()].index(
            next(m.title for m in surface.replies() if title_part in m.title)
        )
    ]
    return surface.last(first)


def _click(proposal_id: str, user: str) -> Click:
    return Click(APPROVE, proposal_id, user, "console", Conversation("console"))


async def test_two_approvers_restore_the_deleted_rows_and_report_the_rto(
    app: App, sms_dsn: str, backups: Path, pg_server: PgServer, sms_containers: SmsContainers
) -> None:
    await _dump(sms_dsn, backups / "backup_20261130_020000.sql")
    conn = await asyncpg.connect(sms_dsn)
    await conn.execute("DELETE FROM users WHERE id > 10")
    await conn.close()
    assert await _users(sms_dsn) == 10

    surface = FakeSurface()
    run = await _propose(app, surface)
    assert run.status is Status.OK, run.message()
    [proposal] = run.proposals
    assert proposal.args["backup"] == "backup_20261130_020000.sql"
    shown = surface.first_versions[proposal.message_key].text
    assert "0 of 2 approvals" in shown and "Safety dump" in shown

    # The requester approving alone does not start it, twice or not.
    assert await app.clicks.handle(_click(proposal.id, REQUESTER), surface) == "recorded"
    assert any("1 of 2 approvals" in m.title for m in surface.replies())
    assert await app.clicks.handle(_click(proposal.id, REQUESTER), surface) == (
        "duplicate_approver"
    )
    assert await _users(sms_dsn) == 10
    assert not any(backups.glob("pre_restore_*.sql"))

    surface2 = FakeSurface()
    assert await app.clicks.handle(_click(proposal.id, SECOND), surface2) == "approved"
    assert await _users(sms_dsn) == 18
    done = await app.deps.store.proposal_get(proposal.id)
    assert done is not None and done.status == "done", done
    final = _final(surface2, "Restoring")
    assert final.status is Status.OK, final
    assert "RTO 15 min: met" in final.text and "Restored" in final.text
    assert "DROP DATABASE" in final.text
    # Tables and rows side by side: 10 live, 18 restored.
    tables = [d for m in surface2.replies() for d in m.details if isinstance(d, Table)]
    assert any(("public.users", "10", "18") in t.rows for t in tables), tables
    # The safety dump, the previous database kept, the record written.
    assert len(list(backups.glob("pre_restore_*.sql"))) == 1
    live = _dbname(sms_dsn)
    kept = await _databases(pg_server, f"{live}_before_restore_")
    assert len(kept) == 1
    assert await _users(pg_server.dsn_for(kept[0])) == 10
    assert not await _databases(pg_server, f"{live}_restore_")
    record = next((Path(app.deps.settings.sms_incidents_dir)).glob("restore_*.md")).read_text()
    assert REQUESTER in record and SECOND in record and "backup_20261130_020000.sql" in record
    info = await app.deps.docker.status("backend")
    assert info.running
    await pg_server.drop_database(pg_server.dsn_for(kept[0]))


async def test_a_corrupt_backup_is_refused_before_any_proposal(
    app: App, backups: Path, sms_dsn: str
) -> None:
    (backups / "backup_20261130_020000.sql").write_bytes(os.urandom(4096))
    surface = FakeSurface()
    run = await _propose(app, surface)
    assert run.proposals == []
    assert "encrypted or of an unknown format" in run.text
    # A real dump cut short is refused too (no "dump complete" at its end).
    real = await _dump(sms_dsn, backups / "backup_20261129_020000.sql")
    text = real.read_bytes()
    real.write_bytes(text[: len(text) // 2])
    run = await _propose(app, FakeSurface(), "backup_20261129_020000.sql")
    assert run.proposals == [] and "truncated" in run.text
    # A path is never accepted, only a name from `backups`.
    run = await _propose(app, FakeSurface(), "../../etc/passwd")
    assert run.proposals == [] and "not a backup in SMS_BACKUP_DIR" in run.text


async def test_a_dump_failing_half_way_leaves_the_live_database_and_the_backend(
    app_one: App, sms_dsn: str, backups: Path, pg_server: PgServer
) -> None:
    path = await _dump(sms_dsn, backups / "backup_20261130_020000.sql")
    lines = path.read_text().splitlines(keepends=True)
    copy = next(i for i, line in enumerate(lines) if line.startswith("COPY public.users"))
    lines.insert(copy, "THIS IS NOT SQL;\n")
    path.write_text("".join(lines))
    conn = await asyncpg.connect(sms_dsn)
    await conn.execute("DELETE FROM users WHERE id > 10")
    await conn.close()

    surface = FakeSurface()
    run = await _propose(app_one, surface)
    [proposal] = run.proposals
    assert "SMS_RESTORE_APPROVALS=1" in surface.first_versions[proposal.message_key].text
    assert await app_one.clicks.handle(_click(proposal.id, REQUESTER), surface) == "approved"
    final = _final(surface, "Restoring")
    assert final.status is Status.FAILED, final
    assert "was not touched" in final.text
    assert await _users(sms_dsn) == 10
    live = _dbname(sms_dsn)
    assert not await _databases(pg_server, f"{live}_restore_")
    assert not await _databases(pg_server, f"{live}_before_restore_")
    info = await app_one.deps.docker.status("backend")
    assert info.running


async def test_a_restore_that_does_not_verify_is_swapped_back(
    app_quick: App,
    sms_dsn: str,
    backups: Path,
    pg_server: PgServer,
    sms_containers: SmsContainers,
) -> None:
    await _dump(sms_dsn, backups / "backup_20261130_020000.sql")
    conn = await asyncpg.connect(sms_dsn)
    await conn.execute("DELETE FROM users WHERE id > 10")
    await conn.close()
    sms_containers.remove_health()  # /health answers 404: step 5 cannot verify
    surface = FakeSurface()
    [proposal] = (await _propose(app_quick, surface)).proposals
    assert await app_quick.clicks.handle(_click(proposal.id, REQUESTER), surface) == "approved"
    final = _final(surface, "Restoring")
    assert final.status in (Status.CRIT, Status.FAILED), final
    assert "rolled back" in final.text and "is the old database again" in final.text
    # The escalation notifies (SMS_ESCALATION_MENTION, default @channel) instead of
    # standing escaped in the text.
    assert final.mentions == (Mention("!channel"),) and "<!" not in final.text
    live = _dbname(sms_dsn)
    assert await _users(sms_dsn) == 10  # the old database is live again
    [failed] = await _databases(pg_server, f"{live}_failed_restore_")
    assert await _users(pg_server.dsn_for(failed)) == 18  # kept for a look
    assert not await _databases(pg_server, f"{live}_before_restore_")
    assert (await app_quick.deps.docker.status("backend")).running
    await pg_server.drop_database(pg_server.dsn_for(failed))


async def test_a_role_that_cannot_create_databases_gets_no_proposal(
    app: App, sms_dsn: str, backups: Path, pg_server: PgServer, tmp_path: Path
) -> None:
    await _dump(sms_dsn, backups / "backup_20261130_020000.sql")
    role = f"r{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_server.superuser_dsn)
    await conn.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    await conn.close()
    parts = urlsplit(sms_dsn)
    limited = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}").geturl()
    settings = app.deps.settings.model_copy(update={"sms_database_url": limited})
    async with build_app(settings) as limited_app:
        run = await _propose(limited_app, FakeSurface())
    assert run.proposals == []
    assert f"role {role} cannot create and rename databases" in run.text
    assert f"ALTER ROLE {role} CREATEDB" in run.text
