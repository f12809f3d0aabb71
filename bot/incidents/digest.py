"""The storm digest: past the thread limit, new incidents are listed in one message.

Kept in the store, not in a processor's memory, so every replica adds to
the same digest and only one digest message is posted per minute. Each
listed incident names its digest (the store's ``digest_id``) and lives in
the digest's thread: its resolution is a reply there, and the digest's root
message is never replaced by one incident's.

Why batches: a storm of hundreds of alerts, one post each, would take as
many seconds to reach the channel (Slack allows about one post a second per
channel) and one message listing them all would be cut at Slack's limits.
So ``add`` only joins the digest; ``flush``, after each batch the alert inbox
handled, updates the root message once (counts by alertname) and names every
alert of the batch in as few thread replies as hold them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from bot.chat.base import ChatSurface
from bot.incidents.message import digest_batch_messages, digest_message
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
        # Digest id -> incidents joined since its last flush (this replica's).
        self._unlisted: dict[str, list[Incident]] = {}

    async def add(self, incident: Incident, *, now: datetime) -> None:
        """Put the incident in this minute's digest; ``flush`` names it there.

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
        self._unlisted.setdefault(digest.id, []).append(incident)

    async def flush(self) -> None:
        """Update each digest that gained incidents and name them in its thread.

        A digest whose message its creator (maybe another replica) has not
        posted yet keeps its incidents for the next flush.
        """
        for digest_id in list(self._unlisted):
            digest = await self.store.digest_get(digest_id)
            if digest is None or digest.root_key is None or digest.conversation is None:
                continue
            new = self._unlisted.pop(digest_id)
            await self._refresh(digest, new)

    async def _refresh(self, digest: Digest, new: list[Incident]) -> None:
        assert digest.root_key is not None and digest.conversation is not None
        # Listed incidents live in the digest's thread; their digest_id says so.
        for listed in new:
            if listed.root_key is None:
                await self.store.incident_set_thread(
                    listed.id, root_key=digest.root_key, conversation=digest.conversation
                )
        root = ThreadRef.decode(digest.conversation).root
        incidents = await self.store.digest_incidents(digest.id)
        await self.surface.update(root, digest_message(incidents, digest.started_at))
        for reply in digest_batch_messages(new):
            await self.surface.reply(root, reply)
