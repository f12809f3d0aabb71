"""A surface that writes to the bot's log: where alert threads go when no chat is configured.

It keeps ``sms-bot serve`` useful without Slack: alerts are still stored,
processed, run through their procedures and recorded, and each message is a
structured log event that an operator can follow.
"""

from __future__ import annotations

import uuid

import structlog

from bot.chat.render_text import to_plain_lines
from bot.messages import Conversation, Message, MessageRef

__all__ = ["LogSurface"]

log = structlog.get_logger("sms_bot.chat")


class LogSurface:
    name = "log"

    async def post(
        self, where: Conversation, msg: Message, *, key: str | None = None
    ) -> MessageRef:
        ref = MessageRef(where, key or uuid.uuid4().hex)
        log.info("chat.post", message_key=ref.id, channel=where.channel, text=_text(msg))
        return ref

    async def update(self, ref: MessageRef, msg: Message) -> None:
        if msg.status.is_done:
            log.info("chat.update", message_key=ref.id, text=_text(msg))

    async def reply(self, ref: MessageRef, msg: Message, *, key: str | None = None) -> MessageRef:
        new = MessageRef(ref.conversation, key or uuid.uuid4().hex)
        log.info("chat.reply", message_key=new.id, thread=ref.id, text=_text(msg))
        return new

    async def ephemeral(self, where: Conversation, user: str, msg: Message) -> None:
        log.info("chat.ephemeral", user=user, text=_text(msg))


def _text(msg: Message) -> str:
    return "\n".join(to_plain_lines(msg))
