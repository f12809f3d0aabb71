"""An alert storm end to end: 500 alerts, every one named in Slack, posts paced per channel.

The bot runs in-process (``tests/harness/botapp.py``) against the fake Slack;
the alerts come as Alertmanager sends them, one webhook per group. Pacing is
read from the messages' ``ts``, which the fake stamps with its clock when it
accepts each post: no assertion here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from tests.harness.botapp import CHANNEL, SECRET, WEBHOOK_TOKEN, Bot, Clock
from tests.harness.docker import wait_until
from tests.harness.fake_slack import FakeSlack
from tests.harness.serve_env import unreachable_sms

pytestmark = pytest.mark.integration

GROUPS = 10
PER_GROUP = 50


@pytest.fixture
async def bot(tmp_path: Path, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    settings = load_settings(
        _env_file=None,
        **unreachable_sms(tmp_path),
        bot_state_url=f"sqlite:///{tmp_path}/state.db",
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SECRET,
        slack_api_url=fake_slack.api_url,
        slack_alert_channel=CHANNEL,
        alert_webhook_token=WEBHOOK_TOKEN,
    )
    b = Bot(settings, Clock())
    await b.start()
    yield b
    await b.stop()


def storm_alert(group: int, n: int, status: str = "firing") -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    instance = f"node-{group:02d}-{n:03d}"  # fixed width: no name is part of another
    return {
        "status": status,
        "labels": {"alertname": f"Storm{group}", "instance": instance, "severity": "warning"},
        "annotations": {"summary": f"Storm{group} on {instance}"},
        "startsAt": now,
        "endsAt": now if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": f"storm-{group}-{n}",
    }


async def send_group(bot: Bot, group: int, status: str = "firing") -> int:
    body = {
        "version": "4",
        "status": status,
        "receiver": "sms-bot",
        "groupKey": f'{{}}:{{alertname="Storm{group}"}}',
        "groupLabels": {"alertname": f"Storm{group}"},
        "alerts": [storm_alert(group, n, status) for n in range(PER_GROUP)],
    }
    assert bot.client is not None
    resp = await bot.client.post(
        "/alerts/alertmanager", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    )
    return resp.status


def resolved(fake: FakeSlack) -> int:
    """How many resolutions the channel shows: ``Resolved (N)`` replies count N, others one."""
    count = 0
    for m in fake.messages(CHANNEL):
        if m.is_reply and m.text.startswith("OK: Resolved"):
            found = re.match(r"OK: Resolved \((\d+)\)", m.text)
            count += int(found.group(1)) if found else 1
    return count


def named(fake: FakeSlack) -> set[str]:
    """The storm's instances that some message in the channel names."""
    text = " ".join(json.dumps(m.blocks) + m.text for m in fake.messages(CHANNEL))
    return {
        f"node-{g:02d}-{n:03d}"
        for g in range(GROUPS)
        for n in range(PER_GROUP)
        if f"node-{g:02d}-{n:03d}" in text
    }


async def test_a_storm_of_500_names_every_alert_and_paces_posts_per_channel(
    bot: Bot, fake_slack: FakeSlack
) -> None:
    statuses = await asyncio.gather(*(send_group(bot, g) for g in range(GROUPS)))
    assert statuses == [200] * GROUPS
    total = GROUPS * PER_GROUP

    async def all_named() -> bool:
        return len(named(fake_slack)) == total

    # A few minutes: about one post a second, each naming up to 40 alerts.
    await wait_until(all_named, timeout=240, what="every alert of the storm named", interval=1)
    assert bot.app is not None
    assert len(await bot.app.deps.store.incidents_open()) == total  # none dropped

    posts = fake_slack.messages(CHANNEL)  # roots and replies: each was a chat.postMessage
    digests = [m for m in posts if not m.is_reply and m.text.startswith("CRIT: Alert storm: ")]
    assert len(digests) == 1
    # The digest counts by alertname; its thread names each alert, grouped by alertname.
    root_text = json.dumps(digests[0].blocks)
    assert all(f"Storm{g}" in root_text for g in range(GROUPS))
    replies = fake_slack.replies(digests[0].ts)
    assert len(replies) < total // 10  # a reply per batch, not a post per alert
    # Paced: at most one new message per second in the channel, by the fake's clock.
    stamps = sorted(float(m.ts) for m in posts)
    per_second = Counter(int(ts) for ts in stamps)
    assert max(per_second.values()) == 1, per_second.most_common(3)
    gaps = [b - a for a, b in pairwise(stamps)]
    assert min(gaps) >= 0.95

    # The storm resolves: its resolutions come as a few replies too, still paced.
    statuses = await asyncio.gather(*(send_group(bot, g, "resolved") for g in range(GROUPS)))
    assert statuses == [200] * GROUPS

    async def all_resolved() -> bool:
        return resolved(fake_slack) == total

    await wait_until(all_resolved, timeout=120, what="every resolution shown", interval=1)
    assert bot.app is not None and await bot.app.deps.store.incidents_open() == []
    resolutions = [m for m in fake_slack.replies(digests[0].ts) if "Resolved (" in m.text]
    assert len(resolutions) < total // 10  # was a reply per alert (8 minutes at 1 a second)
    # Each digested alert is named in them (the first few had threads of their own).
    text = " ".join(json.dumps(m.blocks) for m in resolutions)
    shown = [f"node-{g:02d}-{n:03d}" in text for g in range(GROUPS) for n in range(PER_GROUP)]
    counted = sum(int(re.findall(r"\d+", m.text)[0]) for m in resolutions)
    own = bot.settings.sms_alert_threads_per_minute
    assert sum(shown) == counted >= total - own
    stamps = sorted(float(m.ts) for m in fake_slack.messages(CHANNEL))
    assert max(Counter(int(ts) for ts in stamps).values()) == 1
