"""``BOT_STATE_URL`` parsing: which backend a URL picks, and clear refusals."""

from __future__ import annotations

import pytest

from bot.store import PostgresStore, SqliteStore, open_store, sqlite_path, validate_state_url


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///./data/sms-bot.db", "./data/sms-bot.db"),
        ("sqlite:///relative/path.db", "relative/path.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    validate_state_url(url)
    assert sqlite_path(url) == path
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sms:pw@db.internal:5432/smsbot",
        "postgres://sms@127.0.0.1/smsbot",
        "postgresql:///smsbot?host=/var/run/postgresql",
    ],
)
def test_postgres_urls(url: str) -> None:
    validate_state_url(url)
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert "pw" not in repr(store)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (" sqlite:///x.db", "whitespace"),
        ("sqlite://x.db", "three slashes"),
        ("sqlite:///", "no file path"),
        ("sqlite:///data/", "directory"),
        ("sqlite:///x.db?mode=ro", "query"),
        ("postgresql+asyncpg://u@h/db", "SQLAlchemy"),
        ("postgresql:/h/db", "must start with 'postgresql://'"),
        ("postgresql://u@h:notaport/db", "invalid port"),
        ("mysql://u:hunter2@h/db", "unsupported"),
        ("./data/sms-bot.db", "unsupported"),
    ],
)
def test_invalid_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        validate_state_url(url)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match=reason):
        open_store(url)
