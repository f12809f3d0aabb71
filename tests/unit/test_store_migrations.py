"""The migration list itself: numbered 1..N, one SQL text filled in per dialect."""

from __future__ import annotations

import re

import pytest

from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, validate_migrations
from bot.store.sqlite import SqliteStore


def test_shipped_migrations_are_consecutive_and_complete() -> None:
    validate_migrations(MIGRATIONS)
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert all(m.sql for m in MIGRATIONS)


def test_type_words_are_filled_in_per_dialect() -> None:
    job_runs = MIGRATIONS[3]
    assert "slot TEXT NOT NULL" in job_runs.statements("sqlite")[0]
    assert "slot TIMESTAMPTZ NOT NULL" in job_runs.statements("postgres")[0]
    for dialect in ("sqlite", "postgres"):
        assert not [
            s for m in MIGRATIONS for s in m.statements(dialect) if re.search(r"\{\w+\}", s)
        ]


@pytest.mark.parametrize(
    ("migrations", "reason"),
    [
        ((Migration(2, "skips one", ("SELECT 1",)),), "expected 1"),
        ((Migration(1, "a", ("SELECT 1",)), Migration(1, "dup", ("SELECT 1",))), "expected 2"),
        ((Migration(1, "empty", ()),), "no SQL"),
    ],
)
def test_bad_migration_lists_are_refused(migrations: tuple[Migration, ...], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_migrations(migrations)
    with pytest.raises(ValueError, match=reason):
        SqliteStore(":memory:", migrations=migrations)
