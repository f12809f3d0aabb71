"""``BOT_STATE_URL``: which backend, which file or server; checked without loading a driver.

Kept apart from the backends so configuration validation (``check-config``,
every start) costs no asyncpg, aiosqlite or query code.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["MEMORY", "redact_dsn", "sqlite_path", "validate_state_url"]

MEMORY = ":memory:"
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_EXAMPLES = (
    "sqlite:///./data/sms-bot.db, sqlite:////abs/path.db, sqlite:///:memory:, "
    "postgresql://user:pass@host:5432/db"
)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite:///`` URL (``:memory:`` kept as is)."""
    if not url.startswith(_SQLITE_PREFIX):
        raise ValueError(
            f"SQLite state URL must start with 'sqlite:///' (three slashes, no host), "
            f"got {url!r}; examples: {_EXAMPLES}"
        )
    path = url[len(_SQLITE_PREFIX) :]
    if not path:
        raise ValueError(f"SQLite state URL {url!r} has no file path; examples: {_EXAMPLES}")
    if "?" in path or "#" in path:
        raise ValueError(f"SQLite state URL {url!r} must not have query parameters")
    if path != MEMORY and path.endswith("/"):
        raise ValueError(f"SQLite state URL {url!r} names a directory, not a database file")
    return path


def validate_state_url(url: str) -> None:
    """Raise ``ValueError`` explaining what is wrong with a ``BOT_STATE_URL``."""
    if not url or not url.strip():
        raise ValueError(f"state URL is empty; examples: {_EXAMPLES}")
    if url != url.strip():
        raise ValueError(f"state URL {url!r} has surrounding whitespace")
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        sqlite_path(url)
        return
    if scheme in _POSTGRES_SCHEMES:
        if not url.lower().startswith(f"{scheme}://"):
            raise ValueError(
                f"PostgreSQL state URL {redact_dsn(url)!r} must start with '{scheme}://'"
            )
        try:
            port = urlsplit(url).port  # parses the port; raises on garbage
        except ValueError as exc:
            raise ValueError(f"PostgreSQL state URL has an invalid port: {exc}") from exc
        if port == 0:
            raise ValueError("PostgreSQL state URL has port 0")
        return
    if scheme.startswith(("postgresql+", "postgres+", "sqlite+")):
        raise ValueError(
            f"state URL scheme {scheme!r} is an SQLAlchemy driver spelling; "
            f"use plain 'postgresql://' or 'sqlite:///'"
        )
    raise ValueError(
        f"unsupported state URL {redact_dsn(url)!r}: expected sqlite:/// or postgresql://; "
        f"examples: {_EXAMPLES}"
    )
