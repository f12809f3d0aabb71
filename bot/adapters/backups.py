"""Backup files in ``SMS_BACKUP_DIR`` (runbook: Backup Verification, Manual Backup).

Directory listings run in a worker thread so a slow or hung mount cannot
block the event loop; callers bound them with a timeout.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from bot.errors import AdapterError

__all__ = [
    "SAFETY_DUMP_PREFIX",
    "BackupDirMissing",
    "BackupError",
    "BackupFile",
    "BackupKind",
    "BackupStore",
    "BackupUnreadable",
    "Backups",
]

# What ``restore`` writes before it swaps databases: pre_restore_YYYYMMDD_HHMMSS.sql.
SAFETY_DUMP_PREFIX = "pre_restore_"

# What the SMS backup service writes: backup_YYYYMMDD_HHMMSS.sql, maybe compressed/encrypted.
_BACKUP_SUFFIXES = (".sql", ".sql.gz", ".gz", ".dump", ".enc", ".sql.enc", ".backup", ".zip")
# How much of a file the readability check reads: enough to judge, little enough for a huge dump.
_HEAD_BYTES = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_PGDUMP_MAGIC = b"PGDMP"  # pg_dump's custom format (.dump, .backup)
_ZIP_MAGIC = b"PK\x03\x04"
_PG_DUMP_HEADER = "-- PostgreSQL database dump"
# What the first statement of a plain SQL dump may start with.
_SQL_STARTS = (
    "--",
    "/*",
    "\\connect",
    "alter ",
    "begin",
    "comment ",
    "copy ",
    "create ",
    "drop ",
    "grant ",
    "insert ",
    "select ",
    "set ",
    "start transaction",
)


class BackupError(AdapterError):
    """The backup directory could not be read."""


class BackupDirMissing(BackupError):
    """``SMS_BACKUP_DIR`` does not exist or is not a directory."""


class BackupUnreadable(BackupError):
    """A backup file is empty, cannot be read, or is not what its name says."""


class BackupKind(StrEnum):
    """Who wrote a file: the backup schedule, or ``restore`` as its safety dump.

    A safety dump is a copy of the database just before a restore, not a
    backup of the schedule: counted as one it would make the backups look
    fresh (morning check, ``BackupStale``) and close the SLA's RPO gaps.
    """

    SCHEDULED = "scheduled"
    SAFETY_DUMP = "safety dump"


@dataclass(frozen=True)
class BackupFile:
    name: str
    path: Path
    modified: datetime  # aware UTC
    size: int
    kind: BackupKind = BackupKind.SCHEDULED

    def age_hours(self, now: datetime) -> float:
        return (now - self.modified).total_seconds() / 3600


class Backups(Protocol):
    """The backup directory as procedures see it; ``BackupStore`` is the real one."""

    @property
    def directory(self) -> Path: ...

    async def newest(self, count: int = 5, *, safety_dumps: bool = False) -> list[BackupFile]: ...

    async def check_readable(self, file: BackupFile) -> str: ...


class BackupStore:
    """Lists backup files, newest first."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def newest(self, count: int = 5, *, safety_dumps: bool = False) -> list[BackupFile]:
        """The ``count`` most recently written backup files.

        Backups of the schedule only, unless ``safety_dumps``: then restore's
        safety dumps too, each marked by its ``kind``. The one place that
        decides, so no freshness or RPO figure can count a safety dump.
        """
        return await asyncio.to_thread(self._scan, count, safety_dumps)

    def _scan(self, count: int, safety_dumps: bool) -> list[BackupFile]:
        if not self.directory.is_dir():
            raise BackupDirMissing(f"backup directory {self.directory} does not exist")
        files: list[BackupFile] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if not entry.is_file() or entry.name.startswith("."):
                        continue
                    if not entry.name.lower().endswith(_BACKUP_SUFFIXES):
                        continue
                    kind = _kind(entry.name)
                    if kind is BackupKind.SAFETY_DUMP and not safety_dumps:
                        continue
                    stat = entry.stat()
                    files.append(
                        BackupFile(
                            name=entry.name,
                            path=Path(entry.path),
                            modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                            size=stat.st_size,
                            kind=kind,
                        )
                    )
        except OSError as exc:
            raise BackupError(f"cannot read backup directory {self.directory}: {exc}") from exc
        files.sort(key=lambda f: f.modified, reverse=True)
        return files[:count]

    async def check_readable(self, file: BackupFile) -> str:
        """Read the head of ``file`` and say what it is; raise ``BackupUnreadable`` if unusable.

        Not a test restore: it catches the usual ways a backup is useless
        (empty, truncated to nothing, not gzip/SQL although named so) without
        reading a whole multi-gigabyte dump. It runs in a worker thread.
        """
        return await asyncio.to_thread(_describe, file.path)


def _kind(name: str) -> BackupKind:
    if name.startswith(SAFETY_DUMP_PREFIX):
        return BackupKind.SAFETY_DUMP
    return BackupKind.SCHEDULED


def _describe(path: Path) -> str:
    name = path.name
    lower = name.lower()
    try:
        with path.open("rb") as stream:
            head = stream.read(_HEAD_BYTES)
    except OSError as exc:
        raise BackupUnreadable(f"{name}: cannot be read: {exc.strerror or exc}") from exc
    if not head:
        raise BackupUnreadable(f"{name}: the file is empty")
    if lower.endswith(".gz"):
        if not head.startswith(_GZIP_MAGIC):
            raise BackupUnreadable(f"{name}: not gzip data (no gzip header)")
        try:
            inner = _gunzip_head(head)
        except (OSError, EOFError, zlib.error) as exc:
            raise BackupUnreadable(f"{name}: corrupt gzip data: {exc}") from exc
        if not inner:
            raise BackupUnreadable(f"{name}: the compressed dump is empty")
        if lower.endswith(".sql.gz") or _looks_like_sql(inner):
            _require_sql(name, inner)
            return f"gzip-compressed {_sql_kind(inner)}"
        return "gzip data, decompresses"
    if lower.endswith((".dump", ".backup")):
        if head.startswith(_PGDUMP_MAGIC):
            return "pg_dump custom-format archive"
        _require_sql(name, head)
        return _sql_kind(head)
    if lower.endswith(".zip"):
        if not head.startswith(_ZIP_MAGIC):
            raise BackupUnreadable(f"{name}: not a zip archive (no zip header)")
        return "zip archive"
    if lower.endswith(".enc"):
        return "encrypted (content not checked without the backup encryption key)"
    _require_sql(name, head)
    return _sql_kind(head)


def _gunzip_head(head: bytes) -> bytes:
    """Decompress what the head holds; a truncated stream is fine, corrupt data is not."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = decompressor.decompress(head, _HEAD_BYTES)
    if not out and decompressor.eof:
        # A complete gzip member that holds nothing; double-check with the gzip module.
        return gzip.decompress(head)
    return out


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The head may end inside a multi-byte character; only that is forgiven.
        if exc.start >= len(data) - 3:
            return data[: exc.start].decode("utf-8")
        return None


def _looks_like_sql(data: bytes) -> bool:
    text = _text(data)
    if text is None or "\x00" in text:
        return False
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.lower().startswith(_SQL_STARTS)


def _require_sql(name: str, data: bytes) -> None:
    if not _looks_like_sql(data):
        raise BackupUnreadable(f"{name}: does not start like a SQL dump")


def _sql_kind(data: bytes) -> str:
    text = _text(data) or ""
    if _PG_DUMP_HEADER in text[:1024]:
        return "PostgreSQL database dump (plain SQL)"
    return "SQL text"
