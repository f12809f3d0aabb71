"""The storm digest: past the thread limit, new incidents are listed in one message.

Kept in the store, not in a processor's memory, so every replica adds to
the same digest and only one digest message is posted per minute. Each
listed incident names its digest (the store's ``digest_id``) and lives in
the digest's thread: its resolution is a reply there, and the digest's root
message is never replaced by one incident's.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from bot.chat.base import ChatSurface
from bot.incidents.message import digest_message
from bot.messages import Conversation
from bot.store import Store
from bot.store.base import Digest, Incident
from bot.threads import ThreadRef

__all__ = ["DIGEST_WINDOW", "StormDigest", "in_digest"]

# New storm alerts within this time of a digest's start join it; later ones start another.
DIGEST_WINDOW = timedelta(minutes=1)


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

    async def add(self, incident: Incident, *, now: datetime) -> None:
        """List the incident in this minute's digest.

        Exactly one caller (on any replica) creates the digest and posts its
        message; the others join it. Whoever sees the message posted rebuilds it
        from the incidents stored with the digest, so it lists them all.
        """
        digest, created = await self.store.digest_join(
            incident.id, now=now, window=DIGEST_WINDOW, new_id=uuid.uuid4().hex
        )
        if created:
            where = Conversation(self.surface.name, self.channel)
            ref = await self.surface.post(where, digest_message([incident], digest.started_at))
            posted = await self.store.digest_set_thread(
                digest.id, root_key=ref.id, conversation=ThreadRef.of(ref).encode()
            )
            digest = posted or digest
        if digest.root_key is None or digest.conversation is None:
            # Its creator is posting it; it lists this incident once it has.
            return
        await self._refresh(digest)

    async def _refresh(self, digest: Digest) -> None:
        assert digest.root_key is not None and digest.conversation is not None
        incidents = await self.store.digest_incidents(digest.id)
        # Listed incidents live in the digest's thread; their digest_id says so.
        for listed in incidents:
            if listed.root_key is None:
                await self.store.incident_set_thread(
                    listed.id, root_key=digest.root_key, conversation=digest.conversation
                )
        root = ThreadRef.decode(digest.conversation).root
        await self.surface.update(root, digest_message(incidents, digest.started_at))
