"""The fake Slack Web API driven by the real slack_sdk client, and the signing helpers.

If these pass, a test that points the bot's ``AsyncWebClient`` at the fake
exercises the same requests, answers and errors it would see from Slack.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.chat.blockkit import to_block_kit
from bot.messages import Button, CodeBlock, Message, Status, StepView
from tests.harness import fake_slack as fake_slack_plugin
from tests.harness.fake_slack import BOT_USER_ID, FakeSlack, validate_blocks
from tests.harness.slack_signing import (
    block_actions_body,
    block_actions_payload,
    sign,
    signed_headers,
    slash_command_body,
)

fake_slack = fake_slack_plugin.fake_slack  # the plugin's fixture, until conftest loads it

TOKEN = "xoxb-test-token"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_764_140_000

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}


def client_for(fake: FakeSlack, token: str | None = TOKEN) -> AsyncWebClient:
    """The bot's client as the bot builds it, with no retries so every answer surfaces."""
    return AsyncWebClient(token=token, base_url=fake.api_url, retry_handlers=[])


@pytest.fixture
async def client(fake_slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    yield client_for(fake_slack)


async def api_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# -- round trips -------------------------------------------------------------------------


async def test_auth_test_answers_the_bot_identity(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    response = await client.auth_test()
    assert response["ok"] is True
    assert (response["team_id"], response["user_id"], response["bot_id"]) == (
        "T0001",
        "U0BOT",
        "B0001",
    )
    assert response["url"] == f"{fake_slack.url}/"
    assert fake_slack.calls[-1] == ("auth.test", {}, 200)


async def test_post_message_by_name_or_id_records_it_with_increasing_ts(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    first = await client.chat_postMessage(channel="#sms-alerts", text="one", blocks=[SECTION])
    second = await client.chat_postMessage(channel="C0ALERTS", text="two")
    third = await client.chat_postMessage(channel="sms-alerts", text="three")

    assert first["channel"] == second["channel"] == third["channel"] == "C0ALERTS"
    assert re.fullmatch(r"\d{10}\.\d{6}", first["ts"])
    assert float(first["ts"]) < float(second["ts"]) < float(third["ts"])
    assert first["message"]["blocks"] == [SECTION]
    assert first["message"]["user"] == BOT_USER_ID

    recorded = fake_slack.messages("#sms-alerts")
    assert [(m.ts, m.text) for m in recorded] == [
        (first["ts"], "one"),
        (second["ts"], "two"),
        (third["ts"], "three"),
    ]
    assert fake_slack.message(first["ts"]).blocks == [SECTION]
    method, args, status = fake_slack.calls[0]
    assert (method, status) == ("chat.postMessage", 200)
    assert args == {"channel": "#sms-alerts", "text": "one", "blocks": [SECTION]}


async def test_thread_replies_are_recorded_under_their_root(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C0ALERTS", text="BackendDown")
    reply = await client.chat_postMessage(channel="C0ALERTS", text="step 1", thread_ts=root["ts"])
    assert reply["message"]["thread_ts"] == root["ts"]
    assert [m.text for m in fake_slack.replies(root["ts"])] == ["step 1"]
    assert fake_slack.message(reply["ts"]).is_reply
    assert not fake_slack.message(root["ts"]).is_reply


def _meta(key: str) -> dict[str, Any]:
    return {"event_type": "sms_bot_outbox", "event_payload": {"key": key}}


async def test_history_keeps_metadata_and_pages_like_slack(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    ts = []
    for i in range(5):
        posted = await client.chat_postMessage(
            channel="C0ALERTS", text=f"m{i}", metadata=_meta(f"k{i}")
        )
        ts.append(posted["ts"])
    await client.chat_postMessage(channel="C0ALERTS", text="reply", thread_ts=ts[0])
    assert fake_slack.message(ts[2]).metadata == _meta("k2")

    # Newest first, roots only, oldest exclusive; metadata only when asked for.
    plain = await client.conversations_history(channel="C0ALERTS", oldest=ts[0])
    assert [m["text"] for m in plain["messages"]] == ["m4", "m3", "m2", "m1"]
    assert all("metadata" not in m for m in plain["messages"])
    inclusive = await client.conversations_history(channel="C0ALERTS", oldest=ts[0], inclusive=True)
    assert len(inclusive["messages"]) == 5

    seen, cursor, pages = [], None, 0
    while True:
        page = await client.conversations_history(
            channel="C0ALERTS", include_all_metadata=True, limit=2, cursor=cursor
        )
        pages += 1
        seen += [m["metadata"]["event_payload"]["key"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
        assert page["has_more"] is bool(cursor)
        if not cursor:
            break
    assert (pages, seen) == (3, ["k4", "k3", "k2", "k1", "k0"])
    latest = await client.conversations_history(channel="C0ALERTS", latest=ts[1])
    assert [m["text"] for m in latest["messages"]] == ["m0"]


async def test_history_takes_an_id_and_a_member(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.add_channel("#private", "C0PRIV", member=False)
    for channel, error in (("#sms-alerts", "channel_not_found"), ("C0PRIV", "not_in_channel")):
        failed = await api_error(client.conversations_history(channel=channel))
        assert failed.response["error"] == error
    bad = await api_error(client.conversations_history(channel="C0ALERTS", cursor="%%%"))
    assert bad.response["error"] == "invalid_cursor"


async def test_replies_give_the_thread_oldest_first_with_metadata(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C0ALERTS", text="root", metadata=_meta("r"))
    for i in range(3):
        await client.chat_postMessage(
            channel="C0ALERTS", text=f"r{i}", thread_ts=root["ts"], metadata=_meta(f"r{i}")
        )
    thread = await client.conversations_replies(
        channel="C0ALERTS", ts=root["ts"], include_all_metadata=True, limit=3
    )
    assert [m["text"] for m in thread["messages"]] == ["root", "r0", "r1"]
    assert thread["messages"][1]["metadata"] == _meta("r0")
    rest = await client.conversations_replies(
        channel="C0ALERTS", ts=root["ts"], cursor=thread["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in rest["messages"]] == ["r2"] and "metadata" not in rest["messages"][0]
    missing = await api_error(client.conversations_replies(channel="C0ALERTS", ts="1.000001"))
    assert missing.response["error"] == "thread_not_found"


async def test_conversations_list_names_the_channels(client: AsyncWebClient) -> None:
    listed = await client.conversations_list()
    assert {"id": "C0ALERTS", "name": "sms-alerts"}.items() <= listed["channels"][0].items()


async def test_a_slow_answer_times_out_the_client_but_the_post_is_made(
    fake_slack: FakeSlack,
) -> None:
    impatient = AsyncWebClient(
        token=TOKEN,
        base_url=fake_slack.api_url,
        timeout=0.2,  # type: ignore[arg-type]
        retry_handlers=[],
    )
    fake_slack.slow_next(1, delay_s=5, method="chat.postMessage")
    assert (await impatient.auth_test())["ok"] is True  # another method: answered at once
    with pytest.raises(TimeoutError):
        await impatient.chat_postMessage(channel="C0ALERTS", text="late", metadata=_meta("x"))
    [posted] = fake_slack.messages("C0ALERTS")
    assert (posted.text, posted.metadata) == ("late", _meta("x"))
    assert (await impatient.chat_postMessage(channel="C0ALERTS", text="on time"))["ok"] is True


async def test_unknown_thread_ts_is_accepted_like_slack_unless_strict(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    reply = await client.chat_postMessage(channel="C0ALERTS", text="x", thread_ts="1.000001")
    assert fake_slack.message(reply["ts"]).thread_ts == "1.000001"

    error = await api_error(client.chat_postMessage(channel="C0ALERTS", text="x", thread_ts="0"))
    assert error.response["error"] == "invalid_thread_ts"

    fake_slack.strict_threads = True
    error = await api_error(
        client.chat_postMessage(channel="C0ALERTS", text="x", thread_ts="1.000001")
    )
    assert error.response["error"] == "thread_not_found"


async def test_update_keeps_the_latest_version_and_counts_updates(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C0ALERTS", text="running", blocks=[SECTION])
    done = {"type": "section", "text": {"type": "mrkdwn", "text": "done"}}
    updated = await client.chat_update(
        channel="C0ALERTS", ts=posted["ts"], text="ok", blocks=[done]
    )
    assert (updated["channel"], updated["ts"], updated["text"]) == ("C0ALERTS", posted["ts"], "ok")

    # Leaving blocks out keeps them, as Slack does.
    await client.chat_update(channel="C0ALERTS", ts=posted["ts"], text="ok again")

    message = fake_slack.message(posted["ts"])
    assert (message.text, message.blocks, message.updates) == ("ok again", [done], 2)
    assert message.versions == [("running", [SECTION]), ("ok", [done])]
    assert len(fake_slack.messages("C0ALERTS")) == 1


async def test_post_ephemeral_answers_message_ts_and_is_recorded(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    response = await client.chat_postEphemeral(channel="C0ALERTS", user="U1", text="only you")
    assert re.fullmatch(r"\d{10}\.\d{6}", response["message_ts"])
    [ephemeral] = fake_slack.ephemerals
    assert (ephemeral.channel, ephemeral.user, ephemeral.text) == ("C0ALERTS", "U1", "only you")
    assert ephemeral.message_ts == response["message_ts"]
    assert fake_slack.messages("C0ALERTS") == []


async def test_form_encoded_calls_with_token_in_the_body_work(fake_slack: FakeSlack) -> None:
    """slack_sdk sends some methods as forms; Slack also takes the token as a field."""
    client = client_for(fake_slack, token=None)
    response = await client.api_call(
        "chat.postMessage",
        data={"token": TOKEN, "channel": "C0ALERTS", "text": "t", "blocks": json.dumps([SECTION])},
    )
    assert response["ok"] is True
    assert fake_slack.message(response["ts"]).blocks == [SECTION]
    assert "token" not in fake_slack.calls[-1].args


async def test_block_kit_renderer_output_is_accepted(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    msg = Message(
        title="x" * 400,
        status=Status.FAILED,
        steps=tuple(StepView(f"step {i}", Status.OK, 1.0, "s" * 300) for i in range(80)),
        details=(CodeBlock("log", "\n".join(str(i) for i in range(20_000))),),
        buttons=tuple(Button("Restart", "restart", str(i)) for i in range(40)),
    )
    response = await client.chat_postMessage(channel="C0ALERTS", **to_block_kit(msg))
    assert response["ok"] is True


# -- Slack's errors --------------------------------------------------------------------------


async def test_channel_errors(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    fake_slack.add_channel("#private", "C0PRIV", member=False)
    error = await api_error(client.chat_postMessage(channel="#private", text="x"))
    assert error.response["error"] == "not_in_channel"
    assert error.response.status_code == 200

    error = await api_error(client.chat_postMessage(channel="#nowhere", text="x"))
    assert error.response["error"] == "channel_not_found"

    fake_slack.channel("C0PRIV").member = True
    assert (await client.chat_postMessage(channel="C0PRIV", text="x"))["channel"] == "C0PRIV"


async def test_update_of_an_unknown_message(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    error = await api_error(client.chat_update(channel="C0ALERTS", ts="1.000001", text="x"))
    assert error.response["error"] == "message_not_found"

    # A message from another channel is not found either.
    other = fake_slack.add_channel("ops")
    posted = await client.chat_postMessage(channel=other.id, text="x")
    error = await api_error(client.chat_update(channel="C0ALERTS", ts=posted["ts"], text="y"))
    assert error.response["error"] == "message_not_found"


async def test_auth_errors(fake_slack: FakeSlack) -> None:
    error = await api_error(
        client_for(fake_slack, token="xoxb-wrong").chat_postMessage(channel="C0ALERTS", text="x")
    )
    assert error.response["error"] == "invalid_auth"
    error = await api_error(client_for(fake_slack, token=None).auth_test())
    assert error.response["error"] == "not_authed"
    assert fake_slack.messages("C0ALERTS") == []


async def test_invalid_blocks_and_no_text(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    too_many = [SECTION] * 51
    error = await api_error(client.chat_postMessage(channel="C0ALERTS", text="x", blocks=too_many))
    assert error.response["error"] == "invalid_blocks"
    assert error.response["errors"] == ["blocks: 51 blocks, more than 50"]

    # slack_sdk warns about the missing text before sending; Slack then refuses.
    with pytest.warns(UserWarning, match="`text` argument is missing"):
        error = await api_error(client.chat_postMessage(channel="C0ALERTS", text=""))
    assert error.response["error"] == "no_text"

    with pytest.warns(UserWarning, match="`text` argument is missing"):
        error = await api_error(client.chat_postEphemeral(channel="C0ALERTS", user="U1", text=""))
    assert error.response["error"] == "no_text"
    assert fake_slack.messages("C0ALERTS") == [] and fake_slack.ephemerals == []


async def test_ephemeral_to_a_user_outside_the_channel(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.add_channel("oncall", "C0ONCALL", users={"U1"})
    error = await api_error(client.chat_postEphemeral(channel="C0ONCALL", user="U2", text="x"))
    assert error.response["error"] == "user_not_in_channel"


# -- failure injection ----------------------------------------------------------------------


async def test_rate_limit_surfaces_retry_after(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.rate_limit_next(2, retry_after=7)
    for _ in range(2):
        error = await api_error(client.chat_postMessage(channel="C0ALERTS", text="x"))
        assert error.response.status_code == 429
        assert error.response.headers["Retry-After"] == "7"
        assert error.response["error"] == "ratelimited"
    assert (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ok"] is True
    assert [c.status for c in fake_slack.calls] == [429, 429, 200]
    assert len(fake_slack.messages("C0ALERTS")) == 1


async def test_rate_limit_of_one_method_in_one_channel(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.add_channel("#ops", "C0OPS")
    fake_slack.rate_limit_next(1, retry_after=3, method="chat.postMessage", channel="#sms-alerts")
    assert (await client.chat_postMessage(channel="C0OPS", text="x"))["ok"] is True
    assert (await client.auth_test())["ok"] is True
    error = await api_error(client.chat_postMessage(channel="#sms-alerts", text="x"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "3"
    assert (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ok"] is True
    assert [c.status for c in fake_slack.calls] == [200, 200, 429, 200]


async def test_server_errors_surface_and_then_pass(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.fail_next(1)
    error = await api_error(client.chat_postMessage(channel="C0ALERTS", text="x"))
    assert error.response.status_code == 500
    assert (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ok"] is True

    fake_slack.fail_next(1, status=502)
    error = await api_error(client.chat_update(channel="C0ALERTS", ts="1.1", text="x"))
    assert error.response.status_code == 502
    assert [(c.method, c.status) for c in fake_slack.calls] == [
        ("chat.postMessage", 500),
        ("chat.postMessage", 200),
        ("chat.update", 502),
    ]


async def test_down_until_up(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    fake_slack.down()
    for _ in range(3):
        error = await api_error(client.chat_postMessage(channel="C0ALERTS", text="x"))
        assert error.response.status_code == 503
    fake_slack.up()
    assert (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ok"] is True
    assert len(fake_slack.messages("C0ALERTS")) == 1


async def test_error_next_hits_one_call_of_one_method(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.error_next("chat.postMessage", "is_archived")
    assert (await client.auth_test())["ok"] is True
    error = await api_error(client.chat_postMessage(channel="C0ALERTS", text="x"))
    assert (error.response.status_code, error.response["error"]) == (200, "is_archived")
    assert (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ok"] is True


async def test_reset_failures_clears_everything(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.fail_next(3)
    fake_slack.rate_limit_next(3)
    fake_slack.error_next("chat.postMessage", "fatal_error")
    fake_slack.down()
    fake_slack.reset_failures()
    assert (await client.chat_postMessage(channel="C0ALERTS", text="x"))["ok"] is True


# -- response_url -------------------------------------------------------------------------------


async def post_json(url: str, body: object) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status, await response.json()


async def test_response_url_records_and_routes_like_slack(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C0ALERTS", text="Restart?", blocks=[SECTION])
    url = fake_slack.response_url("#sms-alerts", user="U7", message_ts=root["ts"])
    assert url.startswith(f"{fake_slack.url}/response/")

    assert await post_json(url, {"text": "only you", "response_type": "ephemeral"}) == (
        200,
        {"ok": True},
    )
    assert await post_json(url, {"text": "everyone", "response_type": "in_channel"}) == (
        200,
        {"ok": True},
    )
    assert await post_json(url, {"text": "Restarted", "replace_original": True}) == (
        200,
        {"ok": True},
    )

    assert [r.response_type for r in fake_slack.responses] == [
        "ephemeral",
        "in_channel",
        "ephemeral",
    ]
    assert [(e.user, e.text) for e in fake_slack.ephemerals] == [("U7", "only you")]
    assert [m.text for m in fake_slack.messages("C0ALERTS")] == ["Restarted", "everyone"]
    assert fake_slack.message(root["ts"]).updates == 1


async def test_response_url_limits_and_validation(fake_slack: FakeSlack) -> None:
    url = fake_slack.response_url("C0ALERTS")
    status, body = await post_json(url, {"text": "x", "blocks": [{"type": "section"}]})
    assert (status, body["error"]) == (400, "invalid_blocks")
    for _ in range(FakeSlack.RESPONSE_URL_USES):
        assert (await post_json(url, {"text": "x"}))[0] == 200
    assert await post_json(url, {"text": "x"}) == (404, {"ok": False, "error": "used_url"})
    unknown = f"{fake_slack.url}/response/0000"
    assert await post_json(unknown, {"text": "x"}) == (404, {"ok": False, "error": "expired_url"})
    assert len(fake_slack.responses) == FakeSlack.RESPONSE_URL_USES


# -- the validator ---------------------------------------------------------------------------------


def button(**overrides: Any) -> dict[str, Any]:
    element = {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "go"}
    return {**element, **overrides}


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        ("[]", "blocks: must be a list"),
        ([SECTION] * 51, "more than 50"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "more than 3000"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": ""}}], "non-empty"),
        ([{"type": "section"}], "needs text or fields"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}], "more than 150"),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}], "must be one of"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "1 to 10"),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
            "more than 2000",
        ),
        ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], "1 to 10"),
        (
            [{"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(26)]}],
            "1 to 25",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [button(text={"type": "plain_text", "text": "x" * 76})],
                }
            ],
            "more than 75",
        ),
        ([{"type": "actions", "elements": [button(action_id="a" * 256)]}], "longer than 255"),
        ([{"type": "actions", "elements": [button(value="v" * 2001)]}], "at most 2000"),
        ([{"type": "actions", "elements": [button(style="link")]}], "'primary' or 'danger'"),
        (
            [
                {"type": "actions", "elements": [button()]},
                {"type": "actions", "elements": [button()]},
            ],
            "not unique",
        ),
        ([{"type": "video"}], "unknown block type"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "🔥" * 1501}}], "3002 characters"),
    ],
)
def test_validator_reports_each_broken_limit(blocks: object, problem: str) -> None:
    problems = validate_blocks(blocks)
    assert len(problems) == 1, problems
    assert problem in problems[0]


def test_validator_accepts_what_slack_accepts() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "x" * 150}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3000}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2000}] * 10},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10},
        {"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(25)]},
    ]
    assert validate_blocks(blocks + [SECTION] * 44) == []


# -- signing -------------------------------------------------------------------------------


class FixedClock(Clock):
    def now(self) -> float:
        return float(NOW)


VERIFIER = SignatureVerifier(SECRET, clock=FixedClock())


def test_signature_is_accepted_by_slack_sdk() -> None:
    body = slash_command_body("health")
    headers = sign(body, secret=SECRET, timestamp=NOW)
    assert headers["X-Slack-Request-Timestamp"] == str(NOW)
    assert headers["X-Slack-Signature"].startswith("v0=")
    assert VERIFIER.is_valid_request(body, headers)
    assert VERIFIER.is_valid_request(body.decode(), headers)
    assert signed_headers(body, secret=SECRET, timestamp=NOW) == {
        "Content-Type": "application/x-www-form-urlencoded",
        **headers,
    }


def test_tampered_body_wrong_secret_and_stale_or_future_timestamps_are_rejected() -> None:
    body = slash_command_body("health")
    headers = sign(body, secret=SECRET, timestamp=NOW)
    assert not VERIFIER.is_valid_request(slash_command_body("restart backend"), headers)
    assert not VERIFIER.is_valid_request(body, sign(body, secret="other", timestamp=NOW))
    assert not VERIFIER.is_valid_request(body, sign(body, secret=SECRET, timestamp=NOW - 301))
    assert not VERIFIER.is_valid_request(body, sign(body, secret=SECRET, timestamp=NOW + 301))
    assert VERIFIER.is_valid_request(body, sign(body, secret=SECRET, timestamp=NOW - 299))


def test_sign_defaults_to_now() -> None:
    body = b"x=1"
    assert SignatureVerifier(SECRET).is_valid_request(body, sign(body, secret=SECRET))


def test_slash_command_body_has_every_field_slack_sends() -> None:
    body = slash_command_body(
        "logs backend 50", user_id="U9", channel_id="C9", response_url="http://r", trigger_id="t1"
    )
    fields = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
    assert set(fields) == {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    }
    assert (fields["command"], fields["text"], fields["user_id"], fields["channel_id"]) == (
        "/sms",
        "logs backend 50",
        "U9",
        "C9",
    )
    assert (fields["response_url"], fields["trigger_id"]) == ("http://r", "t1")
    assert parse_qs(slash_command_body("").decode(), keep_blank_values=True)["text"] == [""]


def test_block_actions_body_is_a_payload_field_with_the_real_shape() -> None:
    body = block_actions_body(
        "restart#2",
        "proposal-1",
        user_id="U9",
        channel_id="C9",
        message_ts="1.000100",
        response_url="http://r",
        thread_ts="1.000001",
    )
    [raw] = parse_qs(body.decode())["payload"]
    payload = json.loads(raw)
    assert payload == block_actions_payload(
        "restart#2",
        "proposal-1",
        user_id="U9",
        channel_id="C9",
        message_ts="1.000100",
        response_url="http://r",
        thread_ts="1.000001",
        trigger_id=payload["trigger_id"],
    ) | {"actions": payload["actions"]}
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U9" and payload["user"]["team_id"] == "T0001"
    assert payload["channel"]["id"] == "C9"
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1.000100",
        "channel_id": "C9",
        "is_ephemeral": False,
        "thread_ts": "1.000001",
    }
    assert payload["message"]["ts"] == "1.000100"
    [action] = payload["actions"]
    assert (action["action_id"], action["value"], action["type"]) == (
        "restart#2",
        "proposal-1",
        "button",
    )
    assert action["block_id"] and re.fullmatch(r"\d+\.\d{6}", action["action_ts"])


# -- Bolt end to end -------------------------------------------------------------------------------


def bolt_request(body: bytes, *, secret: str = SECRET) -> AsyncBoltRequest:
    """A request as Bolt's HTTP adapters build it from a signed POST."""
    headers: dict[str, str | Sequence[str]] = dict(signed_headers(body, secret=secret))
    return AsyncBoltRequest(body=body.decode(), headers=headers)


async def test_bolt_verifies_our_signature_and_talks_to_the_fake(fake_slack: FakeSlack) -> None:
    """A real AsyncApp: signature check, auth.test, a command answered through response_url."""
    app = AsyncApp(
        client=client_for(fake_slack),
        signing_secret=SECRET,
        process_before_response=True,  # the listener finishes before dispatch returns
    )
    seen: list[str] = []

    @app.command("/sms")
    async def on_sms(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        seen.append(command["text"])
        await respond(text=f"ran {command['text']}", response_type="in_channel")

    @app.action(re.compile(r"^restart(#\d+)?$"))
    async def on_restart(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        seen.append(body["actions"][0]["value"])

    url = fake_slack.response_url("C0ALERTS")
    body = slash_command_body("health", channel_id="C0ALERTS", response_url=url)
    response = await app.async_dispatch(bolt_request(body))
    assert response.status == 200
    click = block_actions_body("restart#2", "proposal-1", channel_id="C0ALERTS")
    response = await app.async_dispatch(bolt_request(click))
    assert response.status == 200
    assert seen == ["health", "proposal-1"]
    assert [m.text for m in fake_slack.messages("C0ALERTS")] == ["ran health"]
    assert fake_slack.calls_to("auth.test")

    forged = await app.async_dispatch(bolt_request(body, secret="wrong"))
    assert forged.status == 401
    assert seen == ["health", "proposal-1"]
