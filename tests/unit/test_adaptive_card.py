"""The Adaptive Card renderer on its own, checked against the card rules, not only by snapshot.

Every card goes through ``validate_card`` (the rules the fake connector also
applies): required properties per element type, 1.5 element types only, and
the serialized size under Teams' 28 KB message limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.chat.adaptive_card import (
    CARD_VERSION,
    MAX_CARD_BYTES,
    STATUS_COLOR,
    STATUS_STYLE,
    card_size,
    escape_markdown,
    markdown_link,
    to_adaptive_card,
)
from bot.messages import Button, CodeBlock, Field, Link, Message, Status, StepView, Table
from tests.harness.card_rules import validate_card


def valid(card: dict[str, Any]) -> dict[str, Any]:
    assert validate_card(card) == []
    assert card_size(card) <= MAX_CARD_BYTES
    return card


def texts(card: dict[str, Any]) -> list[str]:
    """Every TextBlock text, in order, nested containers included."""
    found: list[str] = []

    def walk(elements: list[dict[str, Any]]) -> None:
        for element in elements:
            if element["type"] == "TextBlock":
                found.append(element["text"])
            walk(element.get("items", []))

    walk(card["body"])
    return found


def all_text(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False).replace("\u00a0", " ")


def test_the_validator_catches_what_it_should() -> None:
    assert validate_card({"type": "AdaptiveCard", "version": "1.5", "body": []}) == []
    bad = {
        "type": "AdaptiveCard",
        "version": "2.0",
        "body": [
            {"type": "Markdown", "text": "x"},
            {"type": "TextBlock"},
            {"type": "TextBlock", "text": "x", "color": "red"},
            {"type": "FactSet", "facts": [{"title": "a"}]},
        ],
        "actions": [{"type": "Action.Execute", "title": "Go"}, {"type": "Action.Submit"}],
    }
    problems = validate_card(bad)
    assert len(problems) == 7, problems
    huge = {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "TextBlock", "text": "x" * 30_000}],
    }
    assert any("byte limit" in p for p in validate_card(huge))


def test_small_message_has_header_text_facts_steps_details_footer_and_buttons() -> None:
    msg = Message(
        title="Health check",
        status=Status.WARN,
        text="4 of 5 checks passed",
        fields=(
            Field("p95", "620 ms", Status.WARN),
            Field("Dashboard", Link("Grafana", "http://grafana.local/d/sms")),
        ),
        steps=(
            StepView("Check containers", Status.OK, 0.4, "12/12 running"),
            StepView("Check database", Status.FAILED, 5.0, "timed out"),
        ),
        details=(
            CodeBlock("backend logs", "line 1\nline 2"),
            Table("Containers", ("name", "state"), (("backend", "up"), ("postgres", "up"))),
        ),
        buttons=(Button("Restart backend", "approve", "prop-123", style="danger"),),
        footer="run r-42",
        links=(Link("Runbook", "https://wiki.example/runbook"),),
    )
    card = valid(to_adaptive_card(msg))
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == CARD_VERSION == "1.5"
    header = card["body"][0]
    assert header["type"] == "Container"
    assert header["style"] == "warning"
    assert header["items"][0]["color"] == "warning"
    assert "Health check" in header["items"][0]["text"]
    facts = next(e for e in card["body"] if e["type"] == "FactSet")["facts"]
    assert facts[0] == {"title": "p95", "value": "620 ms ! WARN"}
    assert facts[1] == {"title": "Dashboard", "value": "[Grafana](http://grafana.local/d/sms)"}
    lines = texts(card)
    assert "[Runbook](https://wiki.example/runbook)" in lines
    step_lines = [line for t in lines for line in t.split("\n") if "Check " in line]
    assert len(step_lines) == 2
    assert "0.4s" in step_lines[0] and "12/12 running" in step_lines[0]
    failed = next(e for e in card["body"] if e.get("text", "").startswith("✗ **Check database"))
    assert failed["color"] == "attention"
    mono = [e for e in card["body"] if e.get("fontType") == "Monospace"]
    assert len(mono) == 2
    assert mono[0]["wrap"] is True
    assert mono[0]["text"] == "line\u00a01\nline\u00a02"
    table_lines = mono[1]["text"].split("\n")
    assert table_lines[0].replace("\u00a0", " ") == "name      state"
    assert table_lines[1].replace("\u00a0", " ") == "backend   up"
    assert any("run r\\-42" in t or "run r-42" in t for t in lines)
    assert not any("truncated" in t for t in lines)


def test_button_is_action_execute_with_submit_fallback_carrying_only_action_and_value() -> None:
    msg = Message("Proposal", buttons=(Button("Approve", "approve", "p-1", style="primary"),))
    (action,) = valid(to_adaptive_card(msg))["actions"]
    assert action["type"] == "Action.Execute"
    assert action["verb"] == "approve"
    assert action["title"] == "Approve"
    assert action["data"] == {"action": "approve", "value": "p-1"}
    assert action["style"] == "positive"
    assert action["fallback"]["type"] == "Action.Submit"
    assert action["fallback"]["data"] == {"action": "approve", "value": "p-1"}


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_its_colour(status: Status) -> None:
    card = valid(to_adaptive_card(Message("t", status=status)))
    header = card["body"][0]
    assert header["style"] == STATUS_STYLE[status]
    assert header["items"][0]["color"] == STATUS_COLOR[status]
    assert status.value.upper() in header["items"][1]["text"]


def test_status_colours_tell_good_from_bad() -> None:
    assert STATUS_STYLE[Status.OK] == "good"
    assert STATUS_STYLE[Status.CRIT] == STATUS_STYLE[Status.FAILED] == "attention"
    assert STATUS_STYLE[Status.WARN] == "warning"


def test_markdown_in_text_is_shown_as_written() -> None:
    nasty = "**bold** _it_ [click](http://evil) <at>all</at> # head\n- item\n1. one `code` \\"
    card = valid(to_adaptive_card(Message("t", text=nasty)))
    shown = texts(card)[2]
    assert shown == escape_markdown(nasty)
    for raw in ("**bold**", "[click](", "<at>", "`code`"):
        assert raw not in shown
    assert "\\*\\*bold\\*\\*" in shown
    assert "\n\\- item" in shown and "\n\\1. one" in shown


def test_link_markdown_and_urls_that_are_not_links() -> None:
    assert markdown_link(Link("Grafana", "https://g.example/d?a=1&b=2")) == (
        "[Grafana](https://g.example/d?a=1&b=2)"
    )
    assert markdown_link(Link("A [b]", "https://x.example/p(1) q")) == (
        "[A \\[b\\]](https://x.example/p%281%29q)"
    )
    # javascript: or relative URLs are never made links
    assert "](" not in markdown_link(Link("x", "javascript:alert(1)"))
    assert markdown_link(Link("", "https://x.example")) == "[https://x.example](https://x.example)"


def test_empty_title_and_values_still_make_a_valid_card() -> None:
    msg = Message("", fields=(Field("", ""),), steps=(StepView("", Status.PENDING),))
    valid(to_adaptive_card(msg))


def test_huge_message_fits_28_kb_with_a_truncation_note() -> None:
    log = "\n".join(
        f"2026-11-30T10:00:{i % 60:02d} ERROR request {i} failed ❌" for i in range(2000)
    )
    msg = Message(
        "Diagnose backend",
        status=Status.CRIT,
        text="Backend is down",
        steps=tuple(
            StepView(f"Step {i}", Status.OK if i % 7 else Status.WARN, 1.5, f"summary {i}")
            for i in range(200)
        ),
        details=(
            CodeBlock("backend logs", log),
            Table("rows", ("a", "b"), tuple((str(i), "x" * 40) for i in range(500))),
        ),
        buttons=(Button("Restart", "approve", "p-9"),),
    )
    card = to_adaptive_card(msg)
    assert validate_card(card) == []
    assert card_size(card) <= MAX_CARD_BYTES < 28 * 1024
    assert any("Details truncated" in t for t in texts(card))
    # Every step fits once the details are cut; the newest log lines are the ones kept,
    # and the buttons are never cut.
    text = all_text(card)
    assert "**Step 0**" in text and "**Step 199**" in text
    assert "request 1999 failed" in text
    assert "request 0 failed" not in text
    assert card["actions"][0]["data"] == {"action": "approve", "value": "p-9"}
    # The header survives whatever is cut.
    assert "Diagnose backend" in card["body"][0]["items"][0]["text"]


def test_steps_are_cut_after_the_details_and_keep_the_latest() -> None:
    msg = Message(
        "Long run",
        steps=tuple(StepView(f"Step number {i} " + "y" * 150, Status.OK, 1.0) for i in range(400)),
        details=(CodeBlock("log", "z" * 100),),
    )
    card = valid(to_adaptive_card(msg))
    text = all_text(card)
    assert "detail blocks not shown" in text
    assert "earlier steps not shown" in text
    assert "Step number 399" in text
    assert "Step number 0 " not in text


def test_pathological_text_and_fields_never_crash() -> None:
    msg = Message(
        "x" * 10_000,
        text="😀" * 50_000,
        fields=tuple(Field(f"f{i}", "v" * 2000) for i in range(500)),
        footer="f" * 5000,
    )
    valid(to_adaptive_card(msg))
