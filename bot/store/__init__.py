"""The bot's own state: one ``Store`` of repositories, one set of queries, two dialects.

The records (``RunRecord``, ``Incident``, ...) are imported from ``bot.store.base``.

``BOT_STATE_URL`` picks the backend. ``validate_state_url`` is what config
validation calls so a typo fails at start with a reason, not at first use.

Why the names below load on first use: importing the package (as
configuration does, for ``validate_state_url``) must not load the queries nor
either driver; ``open_store`` loads the one backend the URL names.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bot.store.url import sqlite_path, validate_state_url

if TYPE_CHECKING:
    from bot.store.base import StoreUnavailable, UnknownRun
    from bot.store.migrations import LATEST_VERSION, MIGRATIONS, Migration
    from bot.store.postgres import PostgresStore
    from bot.store.sql import Store
    from bot.store.sqlite import SqliteStore

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoreUnavailable",
    "UnknownRun",
    "open_store",
    "sqlite_path",
    "validate_state_url",
]

# Name -> the module that defines it, imported when the name is first asked for.
_LAZY = {
    "LATEST_VERSION": "migrations",
    "MIGRATIONS": "migrations",
    "Migration": "migrations",
    "PostgresStore": "postgres",
    "SqliteStore": "sqlite",
    "Store": "sql",
    "StoreUnavailable": "base",
    "UnknownRun": "base",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def open_store(url: str) -> Store:
    """Build (not yet open) the store a state URL names; ``await store.open()`` next."""
    validate_state_url(url)
    if url.lower().startswith("sqlite:"):
        from bot.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url))
    from bot.store.postgres import PostgresStore

    return PostgresStore(url)
