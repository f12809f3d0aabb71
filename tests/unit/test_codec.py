"""The stored form of a message: every element back exactly as it was, through strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from bot.chat.codec import (
    FORMAT_VERSION,
    MessageDecodeError,
    message_from_json,
    message_to_json,
)
from bot.messages import Button, CodeBlock, Field, Link, Message, Status, StepView, Table

EVERYTHING = Message(
    title="Backend down <prod> & *bold*",
    status=Status.CRIT,
    text="Backend answers 502\nsince 09:12 — ünïcödé ✓",
    fields=(
        Field("Service", "backend"),
        Field("Error rate", "12 %", Status.CRIT),
        Field("Dashboard", Link("Grafana", "https://grafana.example/d/abc?x=1&y=2")),
        Field("Silence", Link("1 h", "https://am.example/#/silences/new"), Status.WARN),
        Field("", ""),
    ),
    steps=(
        StepView("Check container status", Status.OK, 0.30000000000000004, "running"),
        StepView("Tail backend logs", Status.FAILED, 12.0),
        StepView("Check database", Status.RUNNING),
        StepView("Wait", Status.PENDING, 0.0, ""),
        StepView("Forever", Status.WARN, math.inf),
        StepView("Negative", Status.OK, -math.inf),
    ),
    details=(
        CodeBlock("Backend logs", "line 1\n```\nline 3\t<tab>"),
        Table("Containers", ("name", "state"), (("backend", "exited"), ("db", "running"))),
        Table("Empty", (), ()),
        CodeBlock("", ""),
    ),
    buttons=(
        Button("Restart", "restart", "p-1", "danger"),
        Button("Ignore", "ignore", '{"id": "p-1"}', "primary"),
        Button("Details", "details", ""),
    ),
    footer="run r-42 · 3.1 s",
    links=(Link("Runbook", "https://wiki/runbook#backend"), Link("", "")),
)


def _through_the_store(d: dict[str, Any]) -> dict[str, Any]:
    """What the outbox gives back: the store writes strict JSON (no NaN) and reads it again."""
    value = json.loads(json.dumps(d, sort_keys=True, allow_nan=False))
    assert isinstance(value, dict)
    return value


def test_every_element_comes_back_exactly() -> None:
    assert message_from_json(_through_the_store(message_to_json(EVERYTHING))) == EVERYTHING


@pytest.mark.parametrize("status", list(Status))
def test_every_status_comes_back(status: Status) -> None:
    msg = Message(
        "t",
        status=status,
        fields=(Field("f", "v", status),),
        steps=(StepView("s", status),),
    )
    assert message_from_json(_through_the_store(message_to_json(msg))) == msg


def test_a_plain_message_is_stored_small() -> None:
    assert message_to_json(Message("Health check")) == {
        "v": FORMAT_VERSION,
        "title": "Health check",
        "status": "ok",
    }
    assert message_from_json({"title": "Health check"}) == Message("Health check")


def test_a_text_value_and_a_link_value_stay_apart() -> None:
    msg = Message(
        "t",
        fields=(
            Field("as text", '{"label": "x", "url": "y"}'),
            Field("as link", Link("x", "y")),
        ),
    )
    back = message_from_json(_through_the_store(message_to_json(msg)))
    assert isinstance(back.fields[0].value, str)
    assert back.fields[1].value == Link("x", "y")


def test_a_duration_that_is_not_a_number_survives_strict_json() -> None:
    msg = Message("t", steps=(StepView("s", Status.OK, math.nan),))
    [step] = message_from_json(_through_the_store(message_to_json(msg))).steps
    assert step.duration_s is not None and math.isnan(step.duration_s)


def test_keys_it_does_not_know_are_ignored() -> None:
    # A newer replica may add elements; this one shows what it knows.
    d = message_to_json(EVERYTHING)
    d["mood"] = "grim"
    d["steps"][0]["colour"] = "red"
    assert message_from_json(d) == EVERYTHING


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {},
        {"title": 3},
        {"title": "t", "v": 2},
        {"title": "t", "status": "exploded"},
        {"title": "t", "text": None},
        {"title": "t", "fields": {}},
        {"title": "t", "fields": [{"label": "l", "value": 3}]},
        {"title": "t", "fields": [{"label": "l", "value": {"label": "x"}}]},
        {"title": "t", "fields": [{"label": "l", "value": "v", "status": "meh"}]},
        {"title": "t", "steps": [{"name": "s"}]},
        {"title": "t", "steps": [{"name": "s", "status": "ok", "duration_s": "soon"}]},
        {"title": "t", "steps": [{"name": "s", "status": "ok", "duration_s": True}]},
        {"title": "t", "details": [{"kind": "chart", "title": "x"}]},
        {"title": "t", "details": [{"kind": "table", "title": "x", "columns": [1]}]},
        {"title": "t", "details": [{"kind": "table", "title": "x", "rows": ["ab"]}]},
        {"title": "t", "details": [{"kind": "table", "title": "x", "rows": [[None]]}]},
        {"title": "t", "buttons": [{"label": "b", "action": "a"}]},
        {"title": "t", "buttons": [{"label": "b", "action": "a", "value": "v", "style": 1}]},
        {"title": "t", "links": ["https://x"]},
    ],
)
def test_what_is_not_a_message_is_refused(bad: Any) -> None:
    with pytest.raises(MessageDecodeError):
        message_from_json(bad)
