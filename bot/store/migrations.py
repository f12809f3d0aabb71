"""Versioned schema migrations for both store backends.

Why one list with both dialects side by side: a new table (proposals, outbox,
alerts...) must land in SQLite and PostgreSQL together, and the contract tests
then hold both to the same behaviour. To add one, append a ``Migration`` with
the next version number; never edit a migration that has shipped.

Each backend applies pending migrations in version order, each in its own
transaction, and records it in ``schema_migrations`` in that same transaction,
so a migration is either fully applied and recorded or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "validate_migrations"]


@dataclass(frozen=True)
class Migration:
    """One schema change, written once per dialect."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="runs, steps and audit",
        sqlite=(
            """
            CREATE TABLE runs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                command TEXT NOT NULL,
                user_id TEXT NOT NULL,
                source TEXT NOT NULL,
                conversation TEXT NOT NULL DEFAULT '',
                started_at TEXT NOT NULL,
                status TEXT NOT NULL,
                finished_at TEXT
            )
            """,
            "CREATE INDEX runs_started_at ON runs (started_at DESC, seq DESC)",
            """
            CREATE TABLE steps (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                idx INTEGER NOT NULL,
                name TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at TEXT,
                duration_s REAL,
                summary TEXT NOT NULL,
                error TEXT,
                PRIMARY KEY (run_id, idx)
            )
            """,
            """
            CREATE TABLE audit (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                source TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                outcome TEXT NOT NULL,
                conversation TEXT NOT NULL DEFAULT '',
                detail TEXT NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE INDEX audit_at ON audit (at DESC, seq DESC)",
        ),
        postgres=(
            """
            CREATE TABLE runs (
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                id TEXT PRIMARY KEY,
                command TEXT NOT NULL,
                user_id TEXT NOT NULL,
                source TEXT NOT NULL,
                conversation TEXT NOT NULL DEFAULT '',
                started_at TIMESTAMPTZ NOT NULL,
                status TEXT NOT NULL,
                finished_at TIMESTAMPTZ
            )
            """,
            "CREATE INDEX runs_started_at ON runs (started_at DESC, seq DESC)",
            """
            CREATE TABLE steps (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                idx INTEGER NOT NULL,
                name TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at TIMESTAMPTZ,
                duration_s DOUBLE PRECISION,
                summary TEXT NOT NULL,
                error TEXT,
                PRIMARY KEY (run_id, idx)
            )
            """,
            """
            CREATE TABLE audit (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at TIMESTAMPTZ NOT NULL,
                actor TEXT NOT NULL,
                source TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                outcome TEXT NOT NULL,
                conversation TEXT NOT NULL DEFAULT '',
                detail JSONB NOT NULL DEFAULT '{}'::jsonb
            )
            """,
            "CREATE INDEX audit_at ON audit (at DESC, seq DESC)",
        ),
    ),
    Migration(
        version=2,
        name="outbox, chat messages and proposals",
        # state: pending | done | dead. The partial indexes cover the claim query
        # (due pending items, oldest first) and its "earlier item for the same
        # message" check, which also finds an update to coalesce into. No foreign
        # key from proposals to runs: a proposal stands on its own once rendered.
        sqlite=(
            """
            CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                message_key TEXT NOT NULL,
                op TEXT NOT NULL,
                surface TEXT NOT NULL,
                channel TEXT NOT NULL,
                parent_key TEXT,
                payload TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at TEXT NOT NULL,
                next_attempt_at TEXT NOT NULL,
                leased_until TEXT,
                state TEXT NOT NULL DEFAULT 'pending',
                last_error TEXT,
                finished_at TEXT
            )
            """,
            "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending'",
            "CREATE INDEX outbox_key ON outbox (message_key, id) WHERE state = 'pending'",
            """
            CREATE TABLE chat_messages (
                key TEXT PRIMARY KEY,
                surface TEXT NOT NULL,
                channel TEXT NOT NULL,
                ts TEXT,
                thread_ts TEXT
            )
            """,
            """
            CREATE TABLE proposals (
                id TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                args TEXT NOT NULL,
                summary TEXT NOT NULL,
                run_id TEXT NOT NULL,
                conversation TEXT NOT NULL,
                message_key TEXT NOT NULL,
                requested_by TEXT NOT NULL,
                approver_role TEXT NOT NULL,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                status TEXT NOT NULL,
                decided_by TEXT,
                decided_at TEXT,
                result TEXT
            )
            """,
            "CREATE INDEX proposals_due ON proposals (expires_at) WHERE status = 'pending'",
            "CREATE INDEX audit_action_target_at ON audit (action, target, at)",
        ),
        postgres=(
            """
            CREATE TABLE outbox (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                message_key TEXT NOT NULL,
                op TEXT NOT NULL,
                surface TEXT NOT NULL,
                channel TEXT NOT NULL,
                parent_key TEXT,
                payload JSONB NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at TIMESTAMPTZ NOT NULL,
                next_attempt_at TIMESTAMPTZ NOT NULL,
                leased_until TIMESTAMPTZ,
                state TEXT NOT NULL DEFAULT 'pending',
                last_error TEXT,
                finished_at TIMESTAMPTZ
            )
            """,
            "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending'",
            "CREATE INDEX outbox_key ON outbox (message_key, id) WHERE state = 'pending'",
            """
            CREATE TABLE chat_messages (
                key TEXT PRIMARY KEY,
                surface TEXT NOT NULL,
                channel TEXT NOT NULL,
                ts TEXT,
                thread_ts TEXT
            )
            """,
            """
            CREATE TABLE proposals (
                id TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                args JSONB NOT NULL,
                summary TEXT NOT NULL,
                run_id TEXT NOT NULL,
                conversation TEXT NOT NULL,
                message_key TEXT NOT NULL,
                requested_by TEXT NOT NULL,
                approver_role TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                status TEXT NOT NULL,
                decided_by TEXT,
                decided_at TIMESTAMPTZ,
                result TEXT
            )
            """,
            "CREATE INDEX proposals_due ON proposals (expires_at) WHERE status = 'pending'",
            "CREATE INDEX audit_action_target_at ON audit (action, target, at)",
        ),
    ),
    Migration(
        version=3,
        name="alert inbox and incidents",
        # alert_events.state: pending | done. next_attempt_at is NULL until a retry
        # defers the event, so a fresh event is due whatever the replicas' clocks.
        # alert_events_pending serves the claim (oldest id first);
        # alert_events_fingerprint its "older unprocessed event of the same
        # fingerprint" check. incidents_open_fingerprint is the rule itself: at most
        # one open incident per fingerprint, whichever replica opens it.
        sqlite=(
            """
            CREATE TABLE alert_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                fingerprint TEXT NOT NULL,
                status TEXT NOT NULL,
                labels TEXT NOT NULL,
                annotations TEXT NOT NULL,
                starts_at TEXT,
                ends_at TEXT,
                generator_url TEXT NOT NULL,
                received_at TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT,
                leased_until TEXT,
                last_error TEXT,
                done_at TEXT
            )
            """,
            "CREATE INDEX alert_events_pending ON alert_events (id) WHERE state = 'pending'",
            "CREATE INDEX alert_events_fingerprint ON alert_events (fingerprint, id)"
            " WHERE state = 'pending'",
            """
            CREATE TABLE incidents (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                fingerprint TEXT,
                title TEXT NOT NULL,
                priority TEXT NOT NULL,
                procedure TEXT NOT NULL,
                labels TEXT NOT NULL,
                annotations TEXT NOT NULL,
                opened_at TEXT NOT NULL,
                opened_by TEXT NOT NULL,
                status TEXT NOT NULL,
                last_seen_at TEXT,
                repeats INTEGER NOT NULL DEFAULT 0,
                root_key TEXT,
                conversation TEXT,
                acknowledged_by TEXT,
                acknowledged_at TEXT,
                escalated_at TEXT,
                resolved_at TEXT,
                record_path TEXT
            )
            """,
            "CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (fingerprint)"
            " WHERE status = 'open' AND fingerprint IS NOT NULL",
            "CREATE INDEX incidents_opened_at ON incidents (opened_at, seq)",
            "CREATE INDEX runs_conversation ON runs (conversation, started_at, seq)",
        ),
        postgres=(
            """
            CREATE TABLE alert_events (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                fingerprint TEXT NOT NULL,
                status TEXT NOT NULL,
                labels JSONB NOT NULL,
                annotations JSONB NOT NULL,
                starts_at TIMESTAMPTZ,
                ends_at TIMESTAMPTZ,
                generator_url TEXT NOT NULL,
                received_at TIMESTAMPTZ NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TIMESTAMPTZ,
                leased_until TIMESTAMPTZ,
                last_error TEXT,
                done_at TIMESTAMPTZ
            )
            """,
            "CREATE INDEX alert_events_pending ON alert_events (id) WHERE state = 'pending'",
            "CREATE INDEX alert_events_fingerprint ON alert_events (fingerprint, id)"
            " WHERE state = 'pending'",
            """
            CREATE TABLE incidents (
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                id TEXT PRIMARY KEY,
                fingerprint TEXT,
                title TEXT NOT NULL,
                priority TEXT NOT NULL,
                procedure TEXT NOT NULL,
                labels JSONB NOT NULL,
                annotations JSONB NOT NULL,
                opened_at TIMESTAMPTZ NOT NULL,
                opened_by TEXT NOT NULL,
                status TEXT NOT NULL,
                last_seen_at TIMESTAMPTZ,
                repeats INTEGER NOT NULL DEFAULT 0,
                root_key TEXT,
                conversation TEXT,
                acknowledged_by TEXT,
                acknowledged_at TIMESTAMPTZ,
                escalated_at TIMESTAMPTZ,
                resolved_at TIMESTAMPTZ,
                record_path TEXT
            )
            """,
            "CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (fingerprint)"
            " WHERE status = 'open' AND fingerprint IS NOT NULL",
            "CREATE INDEX incidents_opened_at ON incidents (opened_at, seq)",
            "CREATE INDEX runs_conversation ON runs (conversation, started_at, seq)",
        ),
    ),
    Migration(
        version=4,
        name="scheduled job slots",
        # The primary key is the rule: one row, so one run, per (job, slot), claimed
        # with INSERT ... ON CONFLICT DO NOTHING by whichever replica gets there
        # first. Its index also serves job_last and job_runs (WHERE job = ? ORDER
        # BY slot DESC, read backwards), so no second index. status: running | ok |
        # warn | crit | failed. Leadership needs no table: it is an advisory lock
        # (PostgreSQL) or a locked file (SQLite), freed when its holder dies.
        sqlite=(
            """
            CREATE TABLE job_runs (
                job TEXT NOT NULL,
                slot TEXT NOT NULL,
                started_at TEXT NOT NULL,
                runner TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'running',
                finished_at TEXT,
                PRIMARY KEY (job, slot)
            )
            """,
        ),
        postgres=(
            """
            CREATE TABLE job_runs (
                job TEXT NOT NULL,
                slot TIMESTAMPTZ NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                runner TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'running',
                finished_at TIMESTAMPTZ,
                PRIMARY KEY (job, slot)
            )
            """,
        ),
    ),
    Migration(
        version=5,
        name="incident record text",
        # The markdown record is written to SMS_INCIDENTS_DIR and kept here too, so
        # it survives the loss of that folder and any replica can read it back.
        sqlite=("ALTER TABLE incidents ADD COLUMN record_text TEXT",),
        postgres=("ALTER TABLE incidents ADD COLUMN record_text TEXT",),
    ),
    Migration(
        version=6,
        name="alert-storm digests",
        # A storm's digest was a processor's memory, so two replicas posted two.
        # Now it is a row, created once under the store's write lock (SQLite) or
        # a transaction-scoped advisory lock (PostgreSQL); each incident names
        # its digest, and the digest message is rebuilt from them on any replica.
        sqlite=(
            """
            CREATE TABLE digests (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                started_at TEXT NOT NULL,
                root_key TEXT,
                conversation TEXT
            )
            """,
            "CREATE INDEX digests_started_at ON digests (started_at, seq)",
            "ALTER TABLE incidents ADD COLUMN digest_id TEXT REFERENCES digests (id)",
            "CREATE INDEX incidents_digest ON incidents (digest_id, opened_at, seq)"
            " WHERE digest_id IS NOT NULL",
        ),
        postgres=(
            """
            CREATE TABLE digests (
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                id TEXT PRIMARY KEY,
                started_at TIMESTAMPTZ NOT NULL,
                root_key TEXT,
                conversation TEXT
            )
            """,
            "CREATE INDEX digests_started_at ON digests (started_at, seq)",
            "ALTER TABLE incidents ADD COLUMN digest_id TEXT REFERENCES digests (id)",
            "CREATE INDEX incidents_digest ON incidents (digest_id, opened_at, seq)"
            " WHERE digest_id IS NOT NULL",
        ),
    ),
    # Version 7 belongs to the Teams branch (i10-teams); this placeholder only keeps
    # the numbering whole on the recovery branch and is replaced by it at merge time.
    Migration(
        version=7,
        name="reserved (Teams)",
        sqlite=("SELECT 1",),
        postgres=("SELECT 1",),
    ),
    # --- migration 8 (recovery, issue 11): approvals of proposals needing several ----
    Migration(
        version=8,
        name="proposal approvals",
        # A restore needs two different approvers: each click is a row, and the
        # click that completes the count claims the proposal in the same transaction.
        sqlite=(
            """
            CREATE TABLE proposal_approvals (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                proposal_id TEXT NOT NULL REFERENCES proposals (id) ON DELETE CASCADE,
                approver TEXT NOT NULL,
                at TEXT NOT NULL,
                UNIQUE (proposal_id, approver)
            )
            """,
        ),
        postgres=(
            """
            CREATE TABLE proposal_approvals (
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                proposal_id TEXT NOT NULL REFERENCES proposals (id) ON DELETE CASCADE,
                approver TEXT NOT NULL,
                at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (proposal_id, approver)
            )
            """,
        ),
    ),
)


def validate_migrations(migrations: Sequence[Migration]) -> None:
    """Fail fast on a list a backend could apply wrongly (gaps, duplicates, empty SQL)."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration {migration.name!r} has version {migration.version}, "
                f"expected {expected}: versions must be 1, 2, 3... in order"
            )
        if not migration.sqlite or not migration.postgres:
            raise ValueError(f"migration {migration.version} needs SQL for both backends")


validate_migrations(MIGRATIONS)
LATEST_VERSION = MIGRATIONS[-1].version
