"""Mentions: one neutral model, each surface showing its own (issue 10)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.alerts import Alert, AlertBatch
from bot.chat.adaptive_card import to_adaptive_card
from bot.chat.blockkit import to_thread_reply
from bot.chat.codec import message_from_json, message_to_json
from bot.chat.fanout import FanOut
from bot.chat.render_text import to_plain_lines
from bot.config import parse_slack_mentions, parse_teams_mentions
from bot.deps import Deps
from bot.engine import Engine
from bot.errors import ConfigError
from bot.incidents import IncidentService
from bot.messages import Conversation, Mention, Message, MessageRef, Status
from handlers.alerts import AlertProcessor
from procedures.catalogue import CATALOGUE
from tests.fakes import NOW, FakeSurface
from tests.harness.card_rules import validate_card
from tests.unit.conftest import make_settings

AAD = "00000000-0000-0000-0000-0000000000a1"
ANA = Mention(f"teams:{AAD}", "Ana Lima")
MENTIONS = (Mention("!channel"), Mention("U0123ABC"), ANA)


def _msg(*mentions: Mention, text: str = "P0 incident not acknowledged.") -> Message:
    return Message(title="Escalation", status=Status.WARN, text=text, mentions=mentions)


def test_block_kit_shows_slack_mentions_as_markup_and_leaves_out_teams_ones() -> None:
    section = to_thread_reply(_msg(*MENTIONS))["blocks"][1]["text"]["text"]
    assert section == "<!channel> <@U0123ABC> P0 incident not acknowledged."
    only_teams = to_thread_reply(_msg(ANA))["blocks"][1]["text"]["text"]
    assert only_teams == "P0 incident not acknowledged."


def test_block_kit_never_makes_markup_of_an_id_of_another_shape() -> None:
    bad = (Mention("<http://evil|x>"), Mention("!subteam^S1|x> <!channel"), Mention("u1"))
    section = to_thread_reply(_msg(*bad, Mention("!subteam^S0ONCALL")))["blocks"][1]
    assert section["text"]["text"] == "<!subteam^S0ONCALL> P0 incident not acknowledged."


def test_block_kit_mentions_alone_when_there_is_no_text() -> None:
    blocks = to_thread_reply(_msg(Mention("!here"), text=""))["blocks"]
    assert blocks[1]["text"]["text"] == "<!here>"


def test_adaptive_card_shows_teams_mentions_with_their_entities() -> None:
    card = to_adaptive_card(_msg(*MENTIONS))
    assert validate_card(card) == []
    assert card["body"][1]["text"] == "<at>Ana Lima</at> P0 incident not acknowledged."
    assert card["msteams"]["entities"] == [
        {
            "type": "mention",
            "text": "<at>Ana Lima</at>",
            "mentioned": {"id": AAD, "name": "Ana Lima"},
        }
    ]
    assert "channel" not in json_text(card)


def test_adaptive_card_without_teams_mentions_has_no_entities() -> None:
    card = to_adaptive_card(_msg(Mention("!channel")))
    assert "entities" not in card["msteams"]
    assert card["body"][1]["text"] == "P0 incident not acknowledged."


def test_adaptive_card_mention_name_cannot_break_the_tag() -> None:
    card = to_adaptive_card(_msg(Mention(f"teams:{AAD}", "</at>**Eve** <b>")))
    tag = card["msteams"]["entities"][0]["text"]
    assert tag == "<at>/atEve b</at>"
    assert validate_card(card) == []


def test_card_rules_refuse_an_entity_the_body_does_not_show() -> None:
    card = to_adaptive_card(_msg(ANA))
    card["body"][1]["text"] = "no tag here"
    assert any("in no TextBlock" in p for p in validate_card(card))
    card["msteams"]["entities"] = [{"type": "mention", "text": "<at>x</at>"}]
    assert any("mentioned" in p for p in validate_card(card))


def test_console_shows_every_mention_by_name() -> None:
    lines = to_plain_lines(_msg(*MENTIONS))
    assert lines[1] == "@channel @U0123ABC @Ana Lima P0 incident not acknowledged."


def test_codec_round_trips_mentions_and_omits_none() -> None:
    msg = _msg(*MENTIONS)
    stored = message_to_json(msg)
    assert stored["mentions"] == [
        {"user_id": "!channel"},
        {"user_id": "U0123ABC"},
        {"user_id": f"teams:{AAD}", "name": "Ana Lima"},
    ]
    assert message_from_json(stored) == msg
    assert "mentions" not in message_to_json(_msg())


def json_text(card: dict[str, object]) -> str:
    return json.dumps(card)


def test_slack_mention_setting_is_parsed_into_mentions() -> None:
    assert parse_slack_mentions("<!channel> <@U0123|ana>, <!subteam^S0123>") == (
        Mention("!channel"),
        Mention("U0123", "ana"),
        Mention("!subteam^S0123"),
    )
    assert parse_slack_mentions("") == ()
    with pytest.raises(ValueError, match="not a Slack mention"):
        parse_slack_mentions("@oncall")


def test_teams_mention_setting_is_parsed_into_mentions() -> None:
    assert parse_teams_mentions(f"teams:{AAD}=Ana Lima, teams:bo@contoso.com=Bo") == (
        ANA,
        Mention("teams:bo@contoso.com", "Bo"),
    )
    assert parse_teams_mentions("") == ()
    for bad, why in (
        (f"teams:{AAD}", "Display Name"),
        (f"{AAD}=Ana", "teams:"),
        ("teams:nope=Ana", "AAD object id"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_teams_mentions(bad)


def test_settings_carry_both_kinds_of_escalation_mention(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, sms_escalation_mention="<!here>", teams_escalation_mention=f"teams:{AAD}=Ana Lima"
    )
    assert settings.escalation_mentions == (Mention("!here"), ANA)
    with pytest.raises(ConfigError, match=r"SMS_ESCALATION_MENTION: .@oncall. is not"):
        make_settings(tmp_path, sms_escalation_mention="@oncall")


@dataclass
class _Keyed(FakeSurface):
    """A fake surface that takes the outbox's keys, as the fan-out needs."""

    async def post(  # type: ignore[override]
        self, where: Conversation, msg: Message, *, key: str | None = None
    ) -> MessageRef:
        ref = await super().post(where, msg)
        return MessageRef(where, key or ref.id)


async def test_an_escalation_in_slack_and_teams_mentions_each_its_own(
    deps: Deps, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path,
        sms_escalation_mention="<!subteam^S0ONCALL>",
        teams_escalation_mention=f"teams:{AAD}=Ana Lima",
    )
    deps = replace(deps, settings=settings)
    slack, teams = _Keyed(name="slack"), _Keyed(name="teams")
    fanout = FanOut({"slack": slack, "teams": teams})
    both = fanout.where([("slack", "C0ALERTS"), ("teams", "19:ops@thread.tacv2")])

    def service(deps: Deps) -> IncidentService:
        return IncidentService(
            deps,
            Engine(deps),
            catalogue=CATALOGUE,
            surface=fanout,
            channel=both.channel,
            places_for=lambda _priority: both,
        )

    processor = AlertProcessor(deps, service(deps))
    alert = Alert(
        fingerprint="fp0",
        status="firing",
        labels={"alertname": "BackendDown", "instance": "sms-1", "priority": "P0"},
        annotations={"summary": "backend down"},
        starts_at=NOW - timedelta(minutes=1),
    )
    await processor.receive(
        AlertBatch(receiver="sms-bot", status="firing", group_key="g", alerts=(alert,))
    )
    while await processor.process_once():
        pass
    later = replace(deps, clock=lambda: NOW + timedelta(minutes=6))
    assert await service(later).escalate_due() == 1

    slack_reply = [m for m in slack.replies() if m.title == "Escalation"][-1]
    teams_reply = [m for m in teams.replies() if m.title == "Escalation"][-1]
    slack_text = to_thread_reply(slack_reply)["blocks"][1]["text"]["text"]
    assert slack_text.startswith("<!subteam^S0ONCALL> P0 incident not acknowledged")
    assert "Ana" not in slack_text
    card = to_adaptive_card(teams_reply)
    assert validate_card(card) == []
    assert card["body"][1]["text"].startswith("<at>Ana Lima</at> P0 incident not acknowledged")
    assert card["msteams"]["entities"] == [
        {
            "type": "mention",
            "text": "<at>Ana Lima</at>",
            "mentioned": {"id": AAD, "name": "Ana Lima"},
        }
    ]
    assert "subteam" not in json_text(card)
