"""The terminal renderers on their own: exact plain lines, bounds, colours."""

from __future__ import annotations

import io
import math
import re

import pytest
from rich.console import Console
from rich.panel import Panel

from bot.chat.render_text import (
    STATUS_STYLES,
    format_duration,
    plain_link,
    status_line,
    step_event_line,
    to_plain_lines,
    to_rich,
)
from bot.messages import Button, CodeBlock, Field, Link, Message, Status, StepView, Table

FULL = Message(
    title="Morning health check",
    status=Status.WARN,
    text="Four of five checks passed.\nDisk is filling up.",
    steps=(
        StepView("Container health", Status.OK, 0.4, "12/12 containers running"),
        StepView("Disk usage", Status.WARN, 12.34, "91% used"),
        StepView("Backups", Status.RUNNING),
    ),
    fields=(Field("disk", "91%", Status.WARN), Field("uptime", "3 days")),
    details=(
        Table("Containers", ("name", "state"), (("docker-backend-1", "running"), ("pg", "up"))),
        CodeBlock("Backend logs", "INFO started\nERROR boom"),
    ),
    buttons=(
        Button("Restart docker-backend-1", "restart", "backend", "danger"),
        Button("Cancel", "cancel", ""),
    ),
    footer="run ab12cd34 · alice · 2.1 s",
)


def render(renderable: object, *, color: bool = False) -> str:
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=100,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
    )
    console.print(renderable)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "0.0s"),
        (0.4, "0.4s"),
        (12.34, "12.3s"),
        (59.94, "59.9s"),
        (59.96, "1m00s"),
        (125.0, "2m05s"),
        (3725.0, "1h02m"),
        (-1.0, "0.0s"),
        (math.nan, "?s"),
        (math.inf, "?s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("status", list(Status))
def test_status_line_names_every_status(status: Status) -> None:
    line = status_line(Message(title="Nightly backup", status=status))
    assert line == f"[{status.value.upper()}] Nightly backup"


@pytest.mark.parametrize("status", list(Status))
def test_every_status_renders_in_both_forms(status: Status) -> None:
    msg = Message(
        title="Check",
        status=status,
        steps=(StepView("Step one", status, 1.0, "said something"),),
        fields=(Field("metric", "42", status),),
    )
    lines = to_plain_lines(msg)
    assert lines[0] == f"[{status.value.upper()}] Check"
    assert lines[1].startswith(f"  {status.icon} Step one  1.0s  said something")
    assert lines[2] == f"  metric: 42 [{status.value.upper()}]"
    text = render(to_rich(msg))
    assert status.value.upper() in text
    assert "Step one" in text and "said something" in text and "42" in text


@pytest.mark.parametrize(
    ("status", "sgr"),
    [
        (Status.OK, "32"),
        (Status.WARN, "33"),
        (Status.CRIT, "31"),
        (Status.FAILED, "31"),
        (Status.RUNNING, "36"),
    ],
)
def test_rich_colours_follow_status(status: Status, sgr: str) -> None:
    rendered = to_rich(Message(title="Check", status=status))
    assert isinstance(rendered, Panel)
    assert rendered.border_style == STATUS_STYLES[status]
    coloured = render(rendered, color=True)
    assert f"\x1b[{sgr}m" in coloured or f"\x1b[1;{sgr}m" in coloured


def test_step_event_lines() -> None:
    assert step_event_line(StepView("Container health", Status.RUNNING)) == "◔ Container health …"
    assert (
        step_event_line(StepView("Container health", Status.OK, 0.4, "12/12 running"))
        == "✓ Container health (0.4s): 12/12 running"
    )
    assert step_event_line(StepView("Database", Status.FAILED, 5.0)) == "✗ Database (5.0s)"
    assert step_event_line(StepView("Database", Status.CRIT, None, "down")) == "✗ Database: down"
    assert step_event_line(StepView("Queued", Status.PENDING)) == "○ Queued"
    assert (
        step_event_line(StepView("Multi\nline", Status.OK, 1, "a\nb")) == "✓ Multi line (1.0s): a b"
    )


def test_full_message_as_plain_lines() -> None:
    assert to_plain_lines(FULL) == [
        "[WARN] Morning health check",
        "Four of five checks passed.",
        "Disk is filling up.",
        "  ✓ Container health  0.4s  12/12 containers running",
        "  ! Disk usage  12.3s  91% used",
        "  ◔ Backups",
        "  disk: 91% [WARN]",
        "  uptime: 3 days",
        "  Containers",
        "    name              state",
        "    docker-backend-1  running",
        "    pg                up",
        "  Backend logs",
        "    INFO started",
        "    ERROR boom",
        "  [1] Restart docker-backend-1  [2] Cancel",
        "run ab12cd34 · alice · 2.1 s",
    ]


def test_table_columns_align_with_ragged_rows_and_wide_characters() -> None:
    table = Table(
        "Slow queries",
        ("pid", "duration", "query"),
        (("12", "2m05s", "SELECT 1"), ("3456", "0.4s"), ("7", "1s", "日本語", "extra")),
    )
    lines = to_plain_lines(Message(title="q", details=(table,)))
    assert lines[1:] == [
        "  Slow queries",
        "    pid   duration  query",
        "    12    2m05s     SELECT 1",
        "    3456  0.4s",
        "    7     1s        日本語    extra",
    ]


def test_long_code_block_keeps_the_newest_lines_with_a_note() -> None:
    text = "\n".join(f"line {i}" for i in range(1, 411))
    lines = to_plain_lines(Message(title="logs", details=(CodeBlock("Backend logs", text),)))
    assert lines[1] == "  Backend logs"
    assert lines[2] == "    … 310 earlier lines not shown"
    assert lines[3] == "    line 311"
    assert lines[-1] == "    line 410"
    assert len(lines) == 3 + 100

    short = to_plain_lines(
        Message(title="logs", details=(CodeBlock("tail", "a\nb\nc\nd"),)), max_code_lines=3
    )
    assert short[1:] == ["  tail", "    … 1 earlier line not shown", "    b", "    c", "    d"]

    rich_text = render(to_rich(Message(title="logs", details=(CodeBlock("Backend logs", text),))))
    assert "… 310 earlier lines not shown" in rich_text
    assert "line 410" in rich_text
    assert re.search(r"line 310\b", rich_text) is None


def test_empty_things_do_not_crash() -> None:
    empty = Message(title="")
    assert to_plain_lines(empty) == ["[OK]"]
    assert "OK" in render(to_rich(empty))

    odd = Message(
        title="   ",
        text="\n\n",
        fields=(Field("", ""),),
        details=(Table("", (), ()), CodeBlock("", ""), Table("", ("a",), ((),))),
        buttons=(Button("", "x", ""),),
        footer="  ",
    )
    assert to_plain_lines(odd) == ["[OK]", "  :", "    a", "", "  [1]"]
    assert "[1]" in render(to_rich(odd))


def test_terminal_control_sequences_are_removed_and_markup_is_literal() -> None:
    msg = Message(
        title="\x1b[2JCleared?",
        text="[bold]not bold[/bold] :smile:",
        details=(CodeBlock("log", "\x1b[31mERROR\x1b[0m boom\r\n\tindented\x07"),),
    )
    lines = to_plain_lines(msg)
    assert lines == [
        "[OK] Cleared?",
        "[bold]not bold[/bold] :smile:",
        "  log",
        "    ERROR boom",
        "        indented",
    ]
    coloured = render(to_rich(msg), color=True)
    assert "\x1b[2J" not in coloured
    assert "[bold]not bold[/bold] :smile:" in render(to_rich(msg))


def test_rich_render_has_every_part() -> None:
    text = render(to_rich(FULL))
    for expected in (
        "WARN",
        "Morning health check",
        "Four of five checks passed.",
        "Container health",
        "0.4s",
        "12/12 containers running",
        "12.3s",
        "Backups",
        "disk",
        "91%",
        "Containers",
        "docker-backend-1",
        "running",
        "Backend logs",
        "ERROR boom",
        "[1] Restart docker-backend-1",
        "[2] Cancel",
        "run ab12cd34 · alice · 2.1 s",
    ):
        assert expected in text, expected


def test_links_render_as_label_and_url_in_plain_and_rich() -> None:
    msg = Message(
        title="FIRING",
        status=Status.CRIT,
        fields=(Field("Loki logs", Link("Grafana Explore", "http://g:3000/explore?x=1")),),
        links=(Link("Grafana", "http://g:3000/d/system-overview"),),
    )
    lines = to_plain_lines(msg)
    assert "  Grafana: http://g:3000/d/system-overview" in lines
    assert "  Loki logs: Grafana Explore: http://g:3000/explore?x=1" in lines
    assert not any("<http" in line or "|Grafana" in line for line in lines)
    assert plain_link(Link("Grafana", "http://g")) == "Grafana: http://g"

    text = render(to_rich(msg))
    assert "Grafana: http://g:3000/d/system-overview" in text
    coloured = render(to_rich(msg), color=True)
    # A terminal that supports links (OSC 8) gets a clickable url.
    assert "\x1b]8;" in coloured and "http://g:3000/d/system-overview" in coloured
