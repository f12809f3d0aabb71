"""The Block Kit renderer on its own: exact blocks for small messages, Slack's limits for big ones.

Every payload is checked with the fake Slack's ``validate_blocks``, the same
rules the fake applies before it answers ``invalid_blocks``.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from bot.chat.blockkit import (
    MAX_FALLBACK_TEXT,
    STATUS_EMOJI,
    base_action,
    ephemeral_text,
    escape_mrkdwn,
    mrkdwn_link,
    text_length,
    to_block_kit,
    to_thread_reply,
)
from bot.messages import Button, CodeBlock, Field, Link, Message, Status, StepView, Table
from tests.harness.fake_slack import validate_blocks


def assert_slack_valid(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Block Kit limit holds and the notification text is short and present."""
    assert set(payload) == {"text", "blocks"}
    assert validate_blocks(payload["blocks"]) == []
    assert 0 < text_length(payload["text"]) <= MAX_FALLBACK_TEXT
    json.dumps(payload)  # what chat.postMessage receives must serialise
    blocks: list[dict[str, Any]] = payload["blocks"]
    return blocks


def all_text(blocks: list[dict[str, Any]]) -> str:
    """Every string in the blocks, to search for notes and escapes."""
    return json.dumps(blocks, ensure_ascii=False)


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return texts


# -- status and title --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "emoji"),
    [
        (Status.OK, ":white_check_mark:"),
        (Status.WARN, ":warning:"),
        (Status.CRIT, ":red_circle:"),
        (Status.FAILED, ":x:"),
        (Status.RUNNING, ":hourglass_flowing_sand:"),
        (Status.PENDING, ":white_circle:"),
    ],
)
def test_each_status_shows_its_emoji_in_header_reply_and_fallback(
    status: Status, emoji: str
) -> None:
    msg = Message(title="Morning health check", status=status, text="All five checks ran.\nmore")
    assert STATUS_EMOJI[status] == emoji

    blocks = assert_slack_valid(to_block_kit(msg))
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"{emoji} Morning health check", "emoji": True},
    }
    assert to_block_kit(msg)["text"] == (
        f"{status.value.upper()}: Morning health check — All five checks ran."
    )

    reply = assert_slack_valid(to_thread_reply(msg))
    assert reply[0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": f"{emoji} *Morning health check*"},
    }
    assert not any(b["type"] == "header" for b in reply)


def test_empty_message_is_a_lone_header_with_the_status_word() -> None:
    payload = to_block_kit(Message(title=""))
    blocks = assert_slack_valid(payload)
    assert blocks == [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": ":white_check_mark: OK", "emoji": True},
        }
    ]
    assert payload["text"] == "OK"
    assert assert_slack_valid(to_thread_reply(Message(title="  \n"))) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": ":white_check_mark: *OK*"}}
    ]


def test_whitespace_only_parts_add_no_blocks() -> None:
    msg = Message(title="t", text=" \n\t\n", footer="  ", details=())
    assert [b["type"] for b in assert_slack_valid(to_block_kit(msg))] == ["header"]


def test_title_newlines_collapse_and_long_titles_are_cut_with_an_ellipsis() -> None:
    blocks = assert_slack_valid(to_block_kit(Message(title="Backend\ndown  again")))
    assert blocks[0]["text"]["text"] == ":white_check_mark: Backend down again"

    long = Message(title="x" * 300, status=Status.CRIT)
    header = assert_slack_valid(to_block_kit(long))[0]["text"]["text"]
    assert len(header) == 150
    assert header.startswith(":red_circle: xxx") and header.endswith("x…")
    assert len(to_block_kit(long)["text"]) < 400


# -- element types --------------------------------------------------------------------


FULL = Message(
    title="Morning health check",
    status=Status.WARN,
    text="Four of five checks passed.\nDisk is *filling* up.",
    steps=(
        StepView("Container health", Status.OK, 0.4, "12/12 containers running"),
        StepView("Disk usage", Status.WARN, 12.34, "91% used"),
        StepView("Backups", Status.RUNNING),
        StepView("Metrics", Status.PENDING),
    ),
    fields=(Field("disk", "91%", Status.WARN), Field("uptime", "3 days")),
    details=(
        Table("Containers", ("name", "state"), (("docker-backend-1", "running"), ("pg", "up"))),
        CodeBlock("Backend logs", "INFO started\n\tERROR boom"),
    ),
    buttons=(
        Button("Restart docker-backend-1", "restart", "backend", "danger"),
        Button("Acknowledge", "ack", "alert-1", "primary"),
        Button("Cancel", "cancel", ""),
    ),
    footer="run 42 · started by <@U1>",
)


def test_full_message_renders_every_element_in_reading_order() -> None:
    payload = to_block_kit(FULL)
    blocks = assert_slack_valid(payload)
    assert payload["text"] == "WARN: Morning health check — Four of five checks passed."
    assert blocks == [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": ":warning: Morning health check", "emoji": True},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Four of five checks passed.\nDisk is *filling* up.",
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    ":white_check_mark: *Container health* · 0.4s · 12/12 containers running\n"
                    ":warning: *Disk usage* · 12.3s · 91% used\n"
                    ":hourglass_flowing_sand: *Backups* · …\n"
                    ":white_circle: *Metrics*"
                ),
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*disk*\n91% :warning:"},
                {"type": "mrkdwn", "text": "*uptime*\n3 days"},
            ],
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    "*Containers*\n```\n"
                    "name              state\n"
                    "────────────────  ───────\n"
                    "docker-backend-1  running\n"
                    "pg                up\n```"
                ),
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*Backend logs*\n```\nINFO started\n    ERROR boom\n```",
            },
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {
                        "type": "plain_text",
                        "text": "Restart docker-backend-1",
                        "emoji": True,
                    },
                    "action_id": "restart",
                    "value": "backend",
                    "style": "danger",
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
                    "action_id": "ack",
                    "value": "alert-1",
                    "style": "primary",
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Cancel", "emoji": True},
                    "action_id": "cancel",
                },
            ],
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "run 42 · started by &lt;@U1&gt;"}],
        },
    ]


def test_thread_reply_differs_from_root_only_in_its_first_block() -> None:
    root = assert_slack_valid(to_block_kit(FULL))
    reply = assert_slack_valid(to_thread_reply(FULL))
    assert reply[0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": ":warning: *Morning health check*"},
    }
    assert reply[1:] == root[1:]


def test_durations_use_the_short_terminal_format() -> None:
    steps = (
        StepView("a", Status.OK, 0.04),
        StepView("b", Status.OK, 125.0),
        StepView("c", Status.FAILED, 3720.0, "timed out"),
    )
    text = assert_slack_valid(to_block_kit(Message(title="t", steps=steps)))[1]["text"]["text"]
    assert text.split("\n") == [
        ":white_check_mark: *a* · 0.0s",
        ":white_check_mark: *b* · 2m05s",
        ":x: *c* · 1h02m · timed out",
    ]


def test_unknown_button_style_is_left_out_and_empty_label_falls_back() -> None:
    msg = Message(title="t", buttons=(Button("", "open", "1", style="link"),))
    element = assert_slack_valid(to_block_kit(msg))[-1]["elements"][0]
    assert "style" not in element
    assert element["text"]["text"] == "open"


def test_empty_code_block_and_table_still_render_a_fence() -> None:
    msg = Message(title="t", details=(CodeBlock("Logs", ""), Table("Empty", (), ())))
    blocks = assert_slack_valid(to_block_kit(msg))
    assert blocks[1]["text"]["text"] == "*Logs*\n```\n(empty)\n```"
    assert blocks[2]["text"]["text"] == "*Empty*\n```\n(empty)\n```"


def test_ragged_table_rows_keep_their_columns() -> None:
    table = Table("", ("a", "b", "c"), (("1",), ("1", "2", "3", "4")))
    text = assert_slack_valid(to_block_kit(Message(title="t", details=(table,))))[1]["text"]
    assert text["text"] == "```\na  b  c\n─  ─  ─  ─\n1\n1  2  3  4\n```"


def test_table_cells_are_cut_so_one_long_cell_cannot_push_columns_away() -> None:
    table = Table("T", ("name", "note"), (("x" * 200, "ok"),))
    text = assert_slack_valid(to_block_kit(Message(title="t", details=(table,))))[1]["text"]
    row = text["text"].split("\n")[4]
    assert row == "x" * 39 + "…  ok"


def test_ephemeral_text_is_one_escaped_section() -> None:
    payload = ephemeral_text("Usage: /sms logs <SERVICE> [N]\nServices: backend & postgres")
    blocks = assert_slack_valid(payload)
    assert blocks == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Usage: /sms logs &lt;SERVICE&gt; [N]\nServices: backend &amp; postgres",
            },
        }
    ]
    assert payload["text"] == "Usage: /sms logs &lt;SERVICE&gt; [N]"
    assert assert_slack_valid(ephemeral_text(""))[0]["text"]["text"] == "…"
    assert validate_blocks(ephemeral_text("y" * 10_000)["blocks"]) == []


# -- escaping -----------------------------------------------------------------------------

HOSTILE = "<!channel> & <http://evil.example|click> > ok"
ESCAPED = "&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt; &gt; ok"


def test_user_text_is_escaped_in_every_mrkdwn_place() -> None:
    msg = Message(
        title=HOSTILE,
        text=HOSTILE,
        steps=(StepView(HOSTILE, Status.OK, 1.0, HOSTILE),),
        fields=(Field(HOSTILE, HOSTILE),),
        details=(CodeBlock(HOSTILE, HOSTILE), Table(HOSTILE, ("c",), (("<!here> & <x>",),))),
        footer=HOSTILE,
    )
    # text, steps, field, code, table and footer; the reply adds its title section.
    for payload, count in ((to_block_kit(msg), 6), (to_thread_reply(msg), 7)):
        blocks = assert_slack_valid(payload)
        texts = mrkdwn_texts(blocks)
        assert len(texts) == count
        for text in texts:
            assert "<" not in text and ">" not in text, text
            assert re.search(r"&(?!amp;|lt;|gt;)", text) is None, text
            assert ESCAPED in text, text
        assert "&lt;!here&gt; &amp; &lt;x&gt;" in texts[-2]
        assert ESCAPED in payload["text"]
        assert "<!channel>" not in payload["text"]


def test_plain_text_is_not_entity_encoded() -> None:
    """Header and button labels are plain_text: Slack parses no links or mentions there."""
    msg = Message(title="a < b & c", buttons=(Button("Drop <temp> & go", "drop", "x&y"),))
    blocks = assert_slack_valid(to_block_kit(msg))
    assert blocks[0]["text"]["text"] == ":white_check_mark: a < b & c"
    assert blocks[-1]["elements"][0]["text"]["text"] == "Drop <temp> & go"
    assert blocks[-1]["elements"][0]["value"] == "x&y"


def test_escape_mrkdwn_encodes_ampersand_first() -> None:
    assert escape_mrkdwn("&lt; <") == "&amp;lt; &lt;"


def test_code_cannot_close_its_fence_or_carry_terminal_escapes() -> None:
    log = "before\n```\n*not bold* <@U1>\n\x1b[31mred\x1b[0m\rdone"
    text = assert_slack_valid(to_block_kit(Message(title="t", details=(CodeBlock("", log),))))[1]
    body = text["text"]["text"]
    assert body.count("```") == 2
    assert body.startswith("```\n") and body.endswith("\n```")
    assert "\x1b" not in body and "\r" not in body
    assert "&lt;@U1&gt;" in body and "reddone" in body


# -- limits -------------------------------------------------------------------------------


def huge_message() -> Message:
    steps = tuple(
        StepView(
            f"Step {i:02d} " + "n" * 40,
            Status.FAILED if i == 3 else Status.OK,
            i * 0.1,
            "summary " * 12,
        )
        for i in range(60)
    )
    return Message(
        title="T" * 300,
        status=Status.CRIT,
        text="\n".join(f"paragraph {i} " + "w" * 80 for i in range(400)),
        steps=steps,
        fields=tuple(Field(f"field {i}", "v" * 2500, Status.WARN) for i in range(12)),
        details=(
            CodeBlock("Backend logs", "\n".join(f"log line {i:05d}" for i in range(10_000))),
            Table("Rows", ("id", "value"), tuple((str(i), f"value {i}") for i in range(500))),
        ),
        buttons=tuple(
            Button(f"Restart number {i} " + "L" * 100, "restart", f"id-{i}" + "v" * 2100)
            for i in range(30)
        ),
        footer="footer " * 1000,
    )


def test_a_message_beyond_every_limit_is_cut_with_notes_and_stays_valid() -> None:
    for render in (to_block_kit, to_thread_reply):
        payload = render(huge_message())
        blocks = assert_slack_valid(payload)
        assert len(blocks) <= 50
        text = all_text(blocks)

        # The text: first lines kept, the rest announced.
        assert "paragraph 0 " in text
        assert re.search(r"… \d+ more lines not shown", text)

        # Steps: the newest kept, the earlier ones counted by status (the failure too).
        steps_text = "\n".join(
            b["text"]["text"] for b in blocks if "Step " in b.get("text", {}).get("text", "")
        )
        assert "*Step 59 " in steps_text
        note = re.search(r"_… (\d+) earlier steps not shown:_ (.*)", steps_text)
        assert note is not None
        hidden = int(note.group(1))
        assert 0 < hidden < 60
        assert note.group(2) == f"{hidden - 1} :white_check_mark: 1 :x:"
        assert steps_text.count("*Step ") == 60 - hidden

        # Fields: 12 fields in two sections, values cut to fit 2000.
        field_blocks = [b for b in blocks if "fields" in b]
        assert [len(b["fields"]) for b in field_blocks] == [10, 2]
        assert all(f["text"].endswith("… :warning:") for b in field_blocks for f in b["fields"])

        # The log keeps its last lines and says how many came before.
        code = next(b["text"]["text"] for b in blocks if "*Backend logs*" in str(b))
        assert code.rstrip("`\n").endswith("log line 09999")
        shown = code.count("log line ")
        assert f"_… {10_000 - shown} earlier lines not shown_" in code

        # The table keeps its first rows.
        table = next(b["text"]["text"] for b in blocks if "*Rows*" in str(b))
        rows = len(re.findall(r"^\d+ +value \d+$", table, flags=re.MULTILINE))
        assert "0    value 0" in table
        assert f"_… {500 - rows} more rows not shown_" in table

        # 30 buttons: two actions blocks, unique ids, cut labels and values.
        actions = [b for b in blocks if b["type"] == "actions"]
        assert [len(b["elements"]) for b in actions] == [25, 5]
        elements = [e for b in actions for e in b["elements"]]
        ids = [e["action_id"] for e in elements]
        assert ids == ["restart"] + [f"restart#{n}" for n in range(2, 31)]
        assert {base_action(i) for i in ids} == {"restart"}
        assert all(len(e["text"]["text"]) == 75 for e in elements)
        assert all(len(e["value"]) == 2000 for e in elements)

        footer = blocks[-1]
        assert footer["type"] == "context"
        assert footer["elements"][-1]["text"].startswith("footer footer")


def test_steps_fit_in_few_sections_when_they_can() -> None:
    steps = tuple(StepView(f"Step {i}", Status.OK, 0.1, "s" * 200) for i in range(30))
    blocks = assert_slack_valid(to_block_kit(Message(title="t", steps=steps)))
    step_texts = [b["text"]["text"] for b in blocks[1:]]
    assert 2 <= len(step_texts) <= 3
    assert "\n".join(step_texts).count("*Step ") == 30
    assert "not shown" not in all_text(blocks)


def test_more_fields_than_three_sections_hold_end_with_a_note() -> None:
    fields = tuple(Field(f"f{i}", str(i)) for i in range(45))
    blocks = assert_slack_valid(to_block_kit(Message(title="t", fields=fields)))
    sections = [b["fields"] for b in blocks if "fields" in b]
    assert [len(s) for s in sections] == [10, 10, 10]
    assert sections[-1][-1]["text"] == "_… 16 more fields not shown_"
    assert sections[-1][-2]["text"] == "*f28*\n28"


def test_more_buttons_than_two_actions_blocks_hold_are_announced() -> None:
    buttons = tuple(Button(f"b{i}", f"act{i}", str(i)) for i in range(60))
    blocks = assert_slack_valid(to_block_kit(Message(title="t", buttons=buttons)))
    assert [len(b["elements"]) for b in blocks if b["type"] == "actions"] == [25, 25]
    assert blocks[-1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "_… 10 more actions not shown_"}],
    }


def test_more_details_than_blocks_are_announced_and_the_budget_holds() -> None:
    details = tuple(CodeBlock(f"log {i}", "x") for i in range(80))
    buttons = tuple(Button(f"b{i}", "a", str(i)) for i in range(50))
    msg = Message(title="t", text="hello", details=details, buttons=buttons, footer="f")
    blocks = assert_slack_valid(to_block_kit(msg))
    assert len(blocks) == 50
    shown = sum(1 for b in blocks if b.get("text", {}).get("text", "").startswith("*log "))
    assert blocks[-1]["elements"][0]["text"] == f"_… {80 - shown} more details not shown_"
    assert blocks[-1]["elements"][-1]["text"] == "f"


def test_action_ids_stay_unique_and_within_255_even_for_long_actions() -> None:
    long_action = "a" * 300
    buttons = (
        Button("one", long_action, "1"),
        Button("two", long_action, "2"),
        Button("three", "a" * 254 + "b", "3"),
        Button("four", "", "4"),
        Button("five", "", "5"),
    )
    elements = assert_slack_valid(to_block_kit(Message(title="t", buttons=buttons)))[-1]["elements"]
    ids = [e["action_id"] for e in elements]
    assert len(set(ids)) == 5
    assert all(len(i) <= 255 for i in ids)
    assert ids[1].endswith("#2") and ids[4] == "button#2"


def test_lengths_are_counted_in_utf16_units() -> None:
    """An emoji is one character to Python and two UTF-16 units: limits use the larger."""
    log = "\n".join("🔥" * 50 for _ in range(200))
    block = assert_slack_valid(to_block_kit(Message(title="t", details=(CodeBlock("", log),))))[1]
    assert text_length(block["text"]["text"]) <= 3000
    assert len(block["text"]["text"]) > 1000


def test_one_enormous_line_is_cut_not_dropped() -> None:
    msg = Message(
        title="t",
        text="z" * 10_000,
        steps=(StepView("s" * 5000, Status.OK, 1.0, "u" * 5000),),
        details=(CodeBlock("c", "q" * 10_000),),
    )
    blocks = assert_slack_valid(to_block_kit(msg))
    assert blocks[1]["text"]["text"].startswith("zzz") and blocks[1]["text"]["text"].endswith("…")
    assert blocks[2]["text"]["text"].startswith(":white_check_mark: *sss")
    assert "qqq…\n```" in blocks[3]["text"]["text"]


def test_entities_are_never_split_by_a_cut() -> None:
    msg = Message(title="t", text="&" * 5000, details=(CodeBlock("", "<" * 5000),))
    blocks = assert_slack_valid(to_block_kit(msg))
    for text in mrkdwn_texts(blocks):
        assert re.search(r"&(?!amp;|lt;|gt;)", text) is None


def test_base_action_strips_only_the_uniqueness_suffix() -> None:
    assert base_action("restart") == "restart"
    assert base_action("restart#2") == "restart"
    assert base_action("restart#12") == "restart"


def test_random_messages_always_stay_within_slack_limits() -> None:
    """Any input: arbitrary Unicode, control characters, markup, sizes from 0 to huge."""
    rng = random.Random(20251126)
    alphabet = "aZ09 <>&*_`~|:#@!\n\t\r\x1b\x00🔥é中\u200b```"

    def junk(max_len: int) -> str:
        return "".join(rng.choices(alphabet, k=rng.randint(0, max_len)))

    for _ in range(30):
        msg = Message(
            title=junk(400),
            status=rng.choice(list(Status)),
            text=junk(rng.choice([10, 5000])),
            fields=tuple(
                Field(junk(50), junk(rng.choice([10, 3000])), rng.choice([None, *Status]))
                for _ in range(rng.randint(0, 40))
            ),
            steps=tuple(
                StepView(
                    junk(300), rng.choice(list(Status)), rng.choice([None, 0.5, 1e9]), junk(900)
                )
                for _ in range(rng.randint(0, 70))
            ),
            details=tuple(
                CodeBlock(junk(50), junk(rng.choice([10, 6000])))
                if rng.random() < 0.5
                else Table(
                    junk(20),
                    tuple(junk(10) for _ in range(rng.randint(0, 5))),
                    tuple(
                        tuple(junk(60) for _ in range(rng.randint(0, 6)))
                        for _ in range(rng.randint(0, 40))
                    ),
                )
                for _ in range(rng.randint(0, 45))
            ),
            buttons=tuple(
                Button(
                    junk(100),
                    rng.choice(["a", "b", junk(300)]),
                    rng.choice(["1", "v" * 2100]),
                    rng.choice([None, "primary", "danger", "link"]),
                )
                for _ in range(rng.randint(0, 60))
            ),
            footer=junk(4000),
        )
        for payload in (to_block_kit(msg), to_thread_reply(msg)):
            blocks = assert_slack_valid(payload)
            for text in mrkdwn_texts(blocks):
                assert "<" not in text and ">" not in text
                assert "\x1b" not in text and "\x00" not in text


# -- links ---------------------------------------------------------------------------


def test_links_are_real_slack_links_not_escaped_text() -> None:
    msg = Message(
        title="FIRING [P0] BackendDown",
        status=Status.CRIT,
        text="Backend <down> & out",
        fields=(Field("Silence", Link("Alertmanager", "http://am:9093/#/silences/s1")),),
        links=(
            Link("Grafana", "http://grafana:3000/d/system-overview"),
            Link("Prometheus", "http://prom:9090/graph?g0.expr=up&g0.tab=1"),
        ),
    )
    blocks = assert_slack_valid(to_block_kit(msg))
    texts = mrkdwn_texts(blocks)
    assert texts[0] == "Backend &lt;down&gt; &amp; out"  # text is still escaped
    assert texts[1] == (
        "<http://grafana:3000/d/system-overview|Grafana> · "
        "<http://prom:9090/graph?g0.expr=up&amp;g0.tab=1|Prometheus>"
    )
    assert "*Silence*\n<http://am:9093/#/silences/s1|Alertmanager>" in texts
    assert "&lt;http" not in all_text(blocks)


def test_link_url_and_label_are_escaped_as_slack_requires() -> None:
    link = Link("a|b <c> & d", "http://x/?q=<1>|2&z")
    assert mrkdwn_link(link) == "<http://x/?q=&lt;1&gt;%7C2&amp;z|a¦b &lt;c&gt; &amp; d>"
    # A url that cannot fit is shown as its label, never as a cut (broken) link.
    assert mrkdwn_link(Link("Loki", "http://x/" + "a" * 700)) == "Loki"
    # Whitespace in a url (a template's newline) is dropped.
    assert mrkdwn_link(Link("G", "http://g/\n d")) == "<http://g/d|G>"
