"""The storm digest: past the thread limit, new incidents are listed in one message.

Kept in the store, not in a processor's memory, so every replica adds to
the same digest and only one digest message is posted per minute. Each
listed incident names its digest (the store's ``digest_id``) and lives in
the digest's thread: its resolution is a reply there, and the digest's root
message is never replaced by one incident's.

Why batches: a storm of hundreds of alerts, one post each, would take as
many seconds to reach the channel (Slack allows about one post a second per
channel) and one message listing them all would be cut at Slack's limits.
So ``add`` only joins the digest, and ``flush`` updates the root message once
(counts by alertname, how many resolved) and names the new alerts, then the
resolved ones, in as few thread replies as hold them.

Why the store says what is left to name, not this replica's memory: an
incident of a digest is named when its thread is set (``root_key``), so the
unnamed ones (``root_key IS NULL``) outlive a replica that dies between
``add`` and ``flush``; any replica's next flush claims them (one guarded
UPDATE: each is named once) and names them. Resolutions are collected in
memory only for the inbox batch that resolved them: the inbox flushes before
it marks the batch's events done, and an event handled again after a crash
finds its incident resolved since it was received and collects it again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from bot.chat.base import ChatSurface
from bot.incidents.message import (
    digest_batch_messages,
    digest_message,
    digest_resolved_messages,
)
from bot.messages import Conversation
from bot.store import Store
from bot.store.base import Digest, Incident
from bot.threads import ThreadRef

__all__ = ["DIGEST_CATCH_UP", "DIGEST_WINDOW", "StormDigest", "in_digest"]

# New storm alerts within this time of a digest's start join it; later ones start another.
DIGEST_WINDOW = timedelta(minutes=1)
# How far back a flush looks for digests with alerts not named yet (by a replica
# that died, or joined before the root was posted): each flush's query stays
# bounded however many storms the store remembers.
DIGEST_CATCH_UP = timedelta(days=1)


def in_digest(incident: Incident) -> bool:
    """Listed in a storm digest: its thread is the digest's, its root message is not its own."""
    if incident.digest_id is not None:
        return True
    # Rows from before the digest_id column (migration 6) said so in their thread text.
    if not incident.conversation:
        return False
    return ThreadRef.decode(incident.conversation).legacy_digest


class StormDigest:
    def __init__(self, store: Store, *, surface: ChatSurface, channel: str) -> None:
        self.store = store
        self.surface = surface
        self.channel = channel
        # Listed incidents resolved since the last flush, announced by it.
        self._resolved: list[Incident] = []

    async def add(self, incident: Incident, *, now: datetime) -> None:
        """Put the incident in this minute's digest; a ``flush`` (any replica's) names it there.

        Exactly one caller (on any replica) creates the digest and posts its
        message; the others join it.
        """
        digest, created = await self.store.digest_join(
            incident.id, now=now, window=DIGEST_WINDOW, new_id=uuid.uuid4().hex
        )
        if created:
            where = Conversation(self.surface.name, self.channel)
            ref = await self.surface.post(where, digest_message([incident], digest.started_at))
            await self.store.digest_set_thread(
                digest.id, root_key=ref.id, conversation=ThreadRef.of(ref).encode()
            )

    def resolved(self, incident: Incident) -> None:
        """A listed incident was resolved: the next ``flush`` says so in its digest's thread."""
        self._resolved.append(incident)

    async def flush(self, *, now: datetime) -> None:
        """Name the digests' unnamed incidents and announce the collected resolutions.

        Each touched digest's root message is updated once. Incidents of a
        digest whose message its creator (maybe another replica) has not posted
        yet wait for a later flush, in the store.
        """
        named: dict[str, list[Incident]] = {}
        touched: dict[str, Digest] = {}
        for digest in await self.store.digests_unnamed(since=now - DIGEST_CATCH_UP):
            claimed = await self.store.digest_name(digest)
            if claimed:
                named[digest.id], touched[digest.id] = claimed, digest
        resolved, self._resolved = self._resolved, []
        by_thread: dict[str, list[Incident]] = {}
        for incident in resolved:
            thread = incident.conversation
            if incident.digest_id is not None:
                found = touched.get(incident.digest_id) or await self.store.digest_get(
                    incident.digest_id
                )
                if found is None or found.conversation is None:
                    self._resolved.append(incident)  # its digest is not posted yet
                    continue
                touched[found.id], thread = found, found.conversation
            if thread:  # (rows from before migration 6 carry the digest's thread)
                by_thread.setdefault(thread, []).append(incident)
        for digest in touched.values():
            assert digest.conversation is not None
            root = ThreadRef.decode(digest.conversation).root
            incidents = await self.store.digest_incidents(digest.id)
            await self.surface.update(root, digest_message(incidents, digest.started_at))
            for reply in digest_batch_messages(named.get(digest.id, [])):
                await self.surface.reply(root, reply)
        for thread, incidents in by_thread.items():
            root = ThreadRef.decode(thread).root
            for reply in digest_resolved_messages(incidents):
                await self.surface.reply(root, reply)
