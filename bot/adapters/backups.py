"""Backup files in ``SMS_BACKUP_DIR`` (runbook: Backup Verification, Manual Backup).

Directory listings run in a worker thread so a slow or hung mount cannot
block the event loop; callers bound them with a timeout.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.errors import AdapterError

__all__ = ["BackupDirMissing", "BackupError", "BackupFile", "BackupStore"]

# What the SMS backup service writes: backup_YYYYMMDD_HHMMSS.sql, maybe compressed/encrypted.
_BACKUP_SUFFIXES = (".sql", ".sql.gz", ".gz", ".dump", ".enc", ".sql.enc", ".backup", ".zip")


class BackupError(AdapterError):
    """The backup directory could not be read."""


class BackupDirMissing(BackupError):
    """``SMS_BACKUP_DIR`` does not exist or is not a directory."""


@dataclass(frozen=True)
class BackupFile:
    name: str
    path: Path
    modified: datetime  # aware UTC
    size: int

    def age_hours(self, now: datetime) -> float:
        return (now - self.modified).total_seconds() / 3600


class BackupStore:
    """Lists backup files, newest first."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def newest(self, count: int = 5) -> list[BackupFile]:
        """The ``count`` most recently written backup files."""
        return await asyncio.to_thread(self._scan, count)

    def _scan(self, count: int) -> list[BackupFile]:
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
                    stat = entry.stat()
                    files.append(
                        BackupFile(
                            name=entry.name,
                            path=Path(entry.path),
                            modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                            size=stat.st_size,
                        )
                    )
        except OSError as exc:
            raise BackupError(f"cannot read backup directory {self.directory}: {exc}") from exc
        files.sort(key=lambda f: f.modified, reverse=True)
        return files[:count]
