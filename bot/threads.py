"""Where a thread lives, and the one text form it is stored in.

Incidents, digests and proposals each keep the message their thread hangs
from: on which surface, in which channel, under which message key, and
whether that message is itself a reply in another thread (a proposal under
a run's status message) or a post of its own (an incident's root message).
That used to be JSON written by ``encode_thread`` and patched by hand (a
``"digest"`` key added to it); now ``ThreadRef`` is the one type and
``encode``/``decode`` the one codec. Whether an incident is listed in a
storm digest is the store's ``digest_id`` column, not part of this text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.messages import Conversation, MessageRef

__all__ = ["ThreadRef"]


@dataclass(frozen=True)
class ThreadRef:
    """A thread's root message: its conversation (surface, channel, parent thread) and key."""

    conversation: Conversation
    root_key: str
    # Only ever read: rows written before migration 6 marked digest members in this
    # text. Nothing writes it now; the store's ``digest_id`` says it instead.
    legacy_digest: bool = False

    @classmethod
    def of(cls, ref: MessageRef) -> ThreadRef:
        return cls(ref.conversation, ref.id)

    @property
    def root(self) -> MessageRef:
        return MessageRef(self.conversation, self.root_key)

    @property
    def surface(self) -> str:
        return self.conversation.surface

    @property
    def channel(self) -> str:
        return self.conversation.channel

    @property
    def is_reply(self) -> bool:
        """True when the root message is itself a reply in another thread (a proposal)."""
        return self.conversation.thread is not None

    def encode(self) -> str:
        c = self.conversation
        return json.dumps(
            {
                "surface": c.surface,
                "channel": c.channel,
                "thread": c.thread,
                "reply_url": c.reply_url,
                "root": self.root_key,
            },
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str) -> ThreadRef:
        """Read any stored form: keys that are missing default, unknown keys are ignored."""
        data = json.loads(text)
        return cls(
            conversation=Conversation(
                surface=data["surface"],
                channel=data.get("channel", ""),
                thread=data.get("thread"),
                reply_url=data.get("reply_url"),
            ),
            root_key=data["root"],
            legacy_digest=bool(data.get("digest", False)),
        )
