"""Who did what: every command, click and action, in the store and a JSON-lines file.

The file is the copy an auditor can ``grep`` without database access; the
store copy is what the bot itself reads back (incident timelines).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from bot.store import Store
from bot.store.base import AuditEvent, StoreUnavailable

__all__ = ["AuditLog"]

log = structlog.get_logger(__name__)


class AuditLog:
    """Writes audit events to the store and appends them to a JSON-lines file."""

    def __init__(self, store: Store, path: str | Path | None) -> None:
        self._store = store
        self._path = Path(path) if path else None
        self._lock = asyncio.Lock()

    async def record(
        self,
        *,
        at: datetime,
        actor: str,
        source: str,
        action: str,
        target: str,
        outcome: str,
        conversation: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        event = AuditEvent(
            at=at,
            actor=actor,
            source=source,
            action=action,
            target=target,
            outcome=outcome,
            conversation=conversation,
            detail=dict(detail or {}),
        )
        try:
            await self._store.audit(event)
        except StoreUnavailable as exc:
            # The file copy below still keeps the event; the store outage is logged.
            log.error("audit.store_failed", error=str(exc), action=action, target=target)
        if self._path is not None:
            line = json.dumps(
                {
                    "at": event.at.isoformat(),
                    "actor": event.actor,
                    "source": event.source,
                    "action": event.action,
                    "target": event.target,
                    "outcome": event.outcome,
                    "conversation": event.conversation,
                    "detail": dict(event.detail),
                },
                default=str,
            )
            async with self._lock:
                await asyncio.to_thread(self._append, line)
        return event

    def _append(self, line: str) -> None:
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
