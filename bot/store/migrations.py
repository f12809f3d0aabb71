"""Versioned schema migrations, each written once for both store backends.

Why one text with a few type words filled in per dialect: a new table must
land in SQLite and PostgreSQL together and the same, and the contract tests
then hold both to the same behaviour. To add one, append a ``Migration`` with
the next version number; never edit a migration that has shipped. In the SQL,
``{ts}``, ``{json}``, ``{float}``, ``{empty_json}``, ``{serial_pk}``,
``{seq}`` and ``{id_key}`` are filled from ``DIALECT_WORDS`` (so a literal
brace must be doubled).

Each backend applies pending migrations in version order, each in its own
transaction, and records it in ``schema_migrations`` in that same transaction,
so a migration is either fully applied and recorded or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DIALECT_WORDS", "LATEST_VERSION", "MIGRATIONS", "Migration", "validate_migrations"]

# Where the dialects really differ: time and JSON types, and generated keys.
# SQLite keeps times as fixed-width ISO text in UTC, so text order is time order.
# Tables with a uuid ``id`` and an insertion-order ``seq``: SQLite's rowid must be
# the integer ``seq``, PostgreSQL makes the text ``id`` the primary key.
DIALECT_WORDS: dict[str, dict[str, str]] = {
    "sqlite": {
        "ts": "TEXT",
        "json": "TEXT",
        "float": "REAL",
        "empty_json": "'{}'",
        "serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "seq": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "id_key": "TEXT NOT NULL UNIQUE",
    },
    "postgres": {
        "ts": "TIMESTAMPTZ",
        "json": "JSONB",
        "float": "DOUBLE PRECISION",
        "empty_json": "'{}'::jsonb",
        "serial_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "seq": "BIGINT GENERATED ALWAYS AS IDENTITY",
        "id_key": "TEXT PRIMARY KEY",
    },
}


@dataclass(frozen=True)
class Migration:
    """One schema change: statements with ``DIALECT_WORDS`` placeholders."""

    version: int
    name: str
    sql: tuple[str, ...]

    def statements(self, dialect: str) -> list[str]:
        """The statements for ``dialect`` ("sqlite" or "postgres")."""
        return [statement.format_map(DIALECT_WORDS[dialect]) for statement in self.sql]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, steps and audit",
        (
            """CREATE TABLE runs (seq {seq}, id {id_key}, command TEXT NOT NULL,
            user_id TEXT NOT NULL, source TEXT NOT NULL, conversation TEXT NOT NULL DEFAULT '',
            started_at {ts} NOT NULL, status TEXT NOT NULL, finished_at {ts})""",
            "CREATE INDEX runs_started_at ON runs (started_at DESC, seq DESC)",
            """CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, started_at {ts},
            duration_s {float}, summary TEXT NOT NULL, error TEXT, PRIMARY KEY (run_id, idx))""",
            """CREATE TABLE audit (seq {serial_pk}, at {ts} NOT NULL, actor TEXT NOT NULL,
            source TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
            outcome TEXT NOT NULL, conversation TEXT NOT NULL DEFAULT '',
            detail {json} NOT NULL DEFAULT {empty_json})""",
            "CREATE INDEX audit_at ON audit (at DESC, seq DESC)",
        ),
    ),
    # outbox.state: pending | done | dead. The partial indexes cover the claim query
    # (due pending items, oldest first) and its "earlier item for the same message"
    # check, which also finds an update to coalesce into. No foreign key from
    # proposals to runs: a proposal stands on its own once rendered.
    Migration(
        2,
        "outbox, chat messages and proposals",
        (
            """CREATE TABLE outbox (id {serial_pk}, message_key TEXT NOT NULL, op TEXT NOT NULL,
            surface TEXT NOT NULL, channel TEXT NOT NULL, parent_key TEXT,
            payload {json} NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            created_at {ts} NOT NULL, next_attempt_at {ts} NOT NULL, leased_until {ts},
            state TEXT NOT NULL DEFAULT 'pending', last_error TEXT, finished_at {ts})""",
            "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending'",
            "CREATE INDEX outbox_key ON outbox (message_key, id) WHERE state = 'pending'",
            """CREATE TABLE chat_messages (key TEXT PRIMARY KEY, surface TEXT NOT NULL,
            channel TEXT NOT NULL, ts TEXT, thread_ts TEXT)""",
            """CREATE TABLE proposals (id TEXT PRIMARY KEY, action TEXT NOT NULL,
            args {json} NOT NULL, summary TEXT NOT NULL, run_id TEXT NOT NULL,
            conversation TEXT NOT NULL, message_key TEXT NOT NULL, requested_by TEXT NOT NULL,
            approver_role TEXT NOT NULL, created_at {ts} NOT NULL, expires_at {ts} NOT NULL,
            status TEXT NOT NULL, decided_by TEXT, decided_at {ts}, result TEXT)""",
            "CREATE INDEX proposals_due ON proposals (expires_at) WHERE status = 'pending'",
            "CREATE INDEX audit_action_target_at ON audit (action, target, at)",
        ),
    ),
    # alert_events.state: pending | done. next_attempt_at is NULL until a retry
    # defers the event, so a fresh event is due whatever the replicas' clocks.
    # incidents_open_fingerprint is the rule itself: at most one open incident per
    # fingerprint, whichever replica opens it.
    Migration(
        3,
        "alert inbox and incidents",
        (
            """CREATE TABLE alert_events (id {serial_pk}, fingerprint TEXT NOT NULL,
            status TEXT NOT NULL, labels {json} NOT NULL, annotations {json} NOT NULL,
            starts_at {ts}, ends_at {ts}, generator_url TEXT NOT NULL,
            received_at {ts} NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at {ts}, leased_until {ts},
            last_error TEXT, done_at {ts})""",
            "CREATE INDEX alert_events_pending ON alert_events (id) WHERE state = 'pending'",
            "CREATE INDEX alert_events_fingerprint ON alert_events (fingerprint, id)"
            " WHERE state = 'pending'",
            """CREATE TABLE incidents (seq {seq}, id {id_key}, fingerprint TEXT,
            title TEXT NOT NULL, priority TEXT NOT NULL, procedure TEXT NOT NULL,
            labels {json} NOT NULL, annotations {json} NOT NULL, opened_at {ts} NOT NULL,
            opened_by TEXT NOT NULL, status TEXT NOT NULL, last_seen_at {ts},
            repeats INTEGER NOT NULL DEFAULT 0, root_key TEXT, conversation TEXT,
            acknowledged_by TEXT, acknowledged_at {ts}, escalated_at {ts}, resolved_at {ts},
            record_path TEXT)""",
            "CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (fingerprint)"
            " WHERE status = 'open' AND fingerprint IS NOT NULL",
            "CREATE INDEX incidents_opened_at ON incidents (opened_at, seq)",
            "CREATE INDEX runs_conversation ON runs (conversation, started_at, seq)",
        ),
    ),
    # The primary key is the rule: one row, so one run, per (job, slot). Its index
    # also serves job_last and job_runs, so no second index. Leadership needs no
    # table: an advisory lock (PostgreSQL) or a locked file (SQLite) dies with its holder.
    Migration(
        4,
        "scheduled job slots",
        (
            """CREATE TABLE job_runs (job TEXT NOT NULL, slot {ts} NOT NULL,
            started_at {ts} NOT NULL, runner TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'running', finished_at {ts}, PRIMARY KEY (job, slot))""",
        ),
    ),
    # The markdown record is written to SMS_INCIDENTS_DIR and kept here too, so it
    # survives the loss of that folder and any replica can read it back.
    Migration(5, "incident record text", ("ALTER TABLE incidents ADD COLUMN record_text TEXT",)),
    # A storm's digest is a row, created once under the store's write lock (SQLite)
    # or a transaction-scoped advisory lock (PostgreSQL); each incident names its
    # digest, and the digest message is rebuilt from them on any replica.
    Migration(
        6,
        "alert-storm digests",
        (
            """CREATE TABLE digests (seq {seq}, id {id_key}, started_at {ts} NOT NULL,
            root_key TEXT, conversation TEXT)""",
            "CREATE INDEX digests_started_at ON digests (started_at, seq)",
            "ALTER TABLE incidents ADD COLUMN digest_id TEXT REFERENCES digests (id)",
            "CREATE INDEX incidents_digest ON incidents (digest_id, opened_at, seq)"
            " WHERE digest_id IS NOT NULL",
        ),
    ),
    # Where the bot may answer a Teams conversation: the Bot Framework ConversationReference
    # (serviceUrl, conversation with tenantId, bot) as the protocol spells it, from an activity
    # whose token was valid, so any replica can deliver into it proactively.
    Migration(
        7,
        "teams conversation references",
        (
            """CREATE TABLE teams_conversations (conversation_id TEXT PRIMARY KEY,
            reference TEXT NOT NULL, updated_at {ts} NOT NULL)""",
        ),
    ),
    # Reports and retention: one reading per figure per daily capacity sample (growth per
    # month, the date a resource crosses 80 %); what `rotated KEY` records (the monthly
    # compliance check reads each key's newest rotation); change windows, where the
    # partial unique index is the rule "one open change at a time" on any replica.
    Migration(
        8,
        "capacity samples, key rotations and change windows",
        (
            """CREATE TABLE capacity_samples (at {ts} NOT NULL, metric TEXT NOT NULL,
            value {float} NOT NULL, PRIMARY KEY (metric, at))""",
            """CREATE TABLE key_rotations (seq {serial_pk}, key TEXT NOT NULL,
            rotated_at {ts} NOT NULL, rotated_by TEXT NOT NULL)""",
            "CREATE INDEX key_rotations_key ON key_rotations (key, rotated_at)",
            """CREATE TABLE changes (id TEXT PRIMARY KEY, description TEXT NOT NULL,
            critical INTEGER NOT NULL, started_by TEXT NOT NULL, started_at {ts} NOT NULL,
            status TEXT NOT NULL, conversation TEXT, silence_id TEXT,
            before TEXT NOT NULL DEFAULT '{{}}', ended_at {ts})""",
            "CREATE UNIQUE INDEX changes_one_open ON changes (status) WHERE status = 'open'",
        ),
    ),
    # Proposals that need several different approvers (a restore needs two): each click is
    # a row, and the click that completes the count claims the proposal in the same
    # transaction.
    Migration(
        9,
        "proposal approvals",
        (
            """CREATE TABLE proposal_approvals (seq {serial_pk},
            proposal_id TEXT NOT NULL REFERENCES proposals (id) ON DELETE CASCADE,
            approver TEXT NOT NULL, at {ts} NOT NULL, UNIQUE (proposal_id, approver))""",
        ),
    ),
    # Several replicas: a claim of outbox items writes a fresh claim_token, and marking an
    # item (done, retry, dead), extending its lease or recording where it landed checks the
    # token, so a worker that stalled past its lease cannot act on an item another replica
    # has claimed since (fencing). A job slot's runner renews lease_until while it runs; a
    # running slot whose lease has passed belonged to a replica that stopped. Rows from
    # before this migration have no lease and are never taken for lost.
    Migration(
        10,
        "outbox claim tokens and job slot leases",
        (
            "ALTER TABLE outbox ADD COLUMN claim_token TEXT",
            "ALTER TABLE job_runs ADD COLUMN lease_until {ts}",
            "CREATE INDEX job_runs_running ON job_runs (lease_until) WHERE status = 'running'",
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
        if not migration.sql:
            raise ValueError(f"migration {migration.version} has no SQL")


validate_migrations(MIGRATIONS)
LATEST_VERSION = MIGRATIONS[-1].version
