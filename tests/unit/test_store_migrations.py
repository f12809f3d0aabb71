"""The migration list itself: numbered 1..N, SQL for both backends."""

from __future__ import annotations

import pytest

from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration, validate_migrations
from bot.store.sqlite import SqliteStore


def test_shipped_migrations_are_consecutive_and_complete() -> None:
    validate_migrations(MIGRATIONS)
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert all(m.sqlite and m.postgres for m in MIGRATIONS)


@pytest.mark.parametrize(
    ("migrations", "reason"),
    [
        ((Migration(2, "skips one", ("SELECT 1",), ("SELECT 1",)),), "expected 1"),
        (
            (
                Migration(1, "a", ("SELECT 1",), ("SELECT 1",)),
                Migration(1, "dup", ("SELECT 1",), ("SELECT 1",)),
            ),
            "expected 2",
        ),
        ((Migration(1, "sqlite only", ("SELECT 1",), ()),), "both backends"),
    ],
)
def test_bad_migration_lists_are_refused(migrations: tuple[Migration, ...], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_migrations(migrations)
    with pytest.raises(ValueError, match=reason):
        SqliteStore(":memory:", migrations=migrations)
