"""An alert storm: how fast the channel learns of every alert, and how posts are paced.

The bot runs in-process (as ``tests/harness/botapp.py`` runs it) against the
fake Slack; 500 distinct alerts arrive as Alertmanager sends them, one webhook
per group (10 groups of 50). Reported: the highest number of new messages in
any one second of the fake's clock (Slack allows about one per channel), the
posts per second over the storm, the time until the last alert was named
in the channel (in the digest's thread or its own thread), and, once the 500
are sent again as resolved, the time until the last resolution is shown.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

__all__ = ["main"]

LIMIT_S = 600.0


async def _storm() -> None:
    from bot.logs import configure_logging
    from tests.harness.botapp import CHANNEL, Bot
    from tests.harness.fake_slack import FakeSlack
    from tests.integration import test_alert_storm as storm

    configure_logging("WARNING", json=False)

    total = storm.GROUPS * storm.PER_GROUP
    with tempfile.TemporaryDirectory(prefix="sms-bot-storm-") as tmp:
        async with FakeSlack(token="xoxb-test-token") as fake:
            bots = storm.bot.__wrapped__(Path(tmp), fake)  # the test's fixture, unwrapped
            bot: Bot = await bots.__anext__()
            try:
                start = time.monotonic()
                statuses = await asyncio.gather(
                    *(storm.send_group(bot, g) for g in range(storm.GROUPS))
                )
                accepted = time.monotonic() - start
                while len(storm.named(fake)) < total and time.monotonic() - start < LIMIT_S:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                visible = time.monotonic() - start
                named = len(storm.named(fake))
                start = time.monotonic()
                await asyncio.gather(
                    *(storm.send_group(bot, g, "resolved") for g in range(storm.GROUPS))
                )
                while storm.resolved(fake) < total and time.monotonic() - start < LIMIT_S:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                settled = time.monotonic() - start
                resolved = storm.resolved(fake)
            finally:
                await bot.stop()
    posts = fake.messages(CHANNEL)
    stamps = sorted(float(m.ts) for m in posts)
    per_second = Counter(int(ts) for ts in stamps)
    span = max(stamps[-1] - stamps[0], 1.0)
    print(f"storm ({total} alerts in {storm.GROUPS} webhooks, HTTP {sorted(set(statuses))})")
    print(f"  all webhooks answered      : {accepted:.2f} s")
    print(f"  alerts named in the channel: {named} of {total} after {visible:.1f} s")
    print(f"  resolutions shown          : {resolved} of {total} after {settled:.1f} s")
    print(f"  new messages in the channel: {len(posts)} ({len(posts) / span:.2f} per second)")
    print(f"  most in any one second     : {max(per_second.values())}  (Slack allows 1)")


def main() -> None:
    asyncio.run(_storm())


if __name__ == "__main__":
    main()
