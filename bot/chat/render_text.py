"""Pure renderers of the neutral message model for a terminal or a log file.

``sms-bot shell`` and ``sms-bot run`` show the same messages the chat
platforms get. Plain lines serve pipes and cron mail, where escape codes
would be noise; the rich renderable serves an interactive terminal. Both
are pure functions of a ``Message`` so they are tested without a surface,
and both bound what they print (a log tail can be thousands of lines) with
a visible note instead of failing or flooding the screen.
"""

from __future__ import annotations

import math
import re

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.style import Style
from rich.table import Table as RichTable
from rich.text import Text

from bot.messages import Button, CodeBlock, Field, Link, Message, Status, StepView, Table

__all__ = [
    "MAX_CODE_LINES",
    "STATUS_STYLES",
    "format_duration",
    "plain_link",
    "status_line",
    "step_event_line",
    "to_plain_lines",
    "to_rich",
]

MAX_CODE_LINES = 100
"""Lines of a code block shown; enough for the usual ``logs SERVICE 100`` tail."""

STATUS_STYLES: dict[Status, str] = {
    Status.PENDING: "dim",
    Status.RUNNING: "cyan",
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.CRIT: "red",
    Status.FAILED: "bold red",
}
"""Terminal colour of each status, shared by every rich render."""

_INDENT = "  "

# ANSI escape sequences (CSI, OSC and two-byte forms) and the other C0/C1
# controls except tab: container logs carry colour codes, and a bare ``\r``
# or ``\x1b[2J`` from a log line must not repaint the operator's terminal.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-_]"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``2m05s``, ``1h02m``: short enough for a step line."""
    if not math.isfinite(seconds):
        return "?s"
    seconds = max(seconds, 0.0)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    total = round(seconds)
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(total, 3600)
    return f"{hours}h{rest // 60:02d}m"


def status_line(msg: Message) -> str:
    """``[OK] Morning health check``: the line a cron log is grepped for."""
    return f"[{msg.status.value.upper()}] {_one_line(msg.title)}".rstrip()


def step_event_line(step: StepView) -> str:
    """One line per step event, for output that cannot be redrawn in place."""
    name = _one_line(step.name)
    if step.status is Status.RUNNING:
        return f"{step.status.icon} {name} …"
    if step.status is Status.PENDING:
        return f"{step.status.icon} {name}"
    line = f"{step.status.icon} {name}"
    if step.duration_s is not None:
        line += f" ({format_duration(step.duration_s)})"
    summary = _one_line(step.summary)
    if summary:
        line += f": {summary}"
    return line


def to_plain_lines(msg: Message, *, max_code_lines: int = MAX_CODE_LINES) -> list[str]:
    """The whole message as escape-free text lines, in the order a reader scans it."""
    lines = [status_line(msg)]
    text = _with_mentions(msg, _clean(msg.text).strip("\n"))
    if text.strip():
        lines.extend(line.rstrip() for line in text.split("\n"))
    lines.extend(_INDENT + plain_link(link) for link in msg.links)
    lines.extend(_plain_step(step) for step in msg.steps)
    lines.extend(_plain_field(f) for f in msg.fields)
    for detail in msg.details:
        if isinstance(detail, Table):
            lines.extend(_plain_table(detail))
        else:
            lines.extend(_plain_code(detail, max_lines=max_code_lines))
    if msg.buttons:
        lines.append((_INDENT + _plain_buttons(msg.buttons)).rstrip())
    if msg.footer.strip():
        lines.append(_one_line(msg.footer))
    return lines


def to_rich(msg: Message, *, max_code_lines: int = MAX_CODE_LINES) -> RenderableType:
    """The same content as ``to_plain_lines``, coloured by status for a terminal.

    Every piece of message text goes in as ``Text`` (never markup), so a log
    line containing ``[bold]`` or ``:smile:`` is shown as written.
    """
    style = STATUS_STYLES[msg.status]
    parts: list[RenderableType] = []
    text = _with_mentions(msg, _clean(msg.text).strip("\n").rstrip())
    if text.strip():
        parts.append(Text(text))
    if msg.links:
        parts.append(_rich_links(msg.links))
    if msg.steps:
        parts.append(_rich_steps(msg.steps))
    if msg.fields:
        parts.append(_rich_fields(msg.fields))
    for detail in msg.details:
        if isinstance(detail, Table):
            parts.append(_rich_table(detail))
        else:
            parts.append(_rich_code(detail, max_lines=max_code_lines))
    if msg.buttons:
        parts.append(_rich_buttons(msg.buttons))
    if msg.footer.strip():
        parts.append(Text(_one_line(msg.footer), style="dim"))
    title = Text.assemble(
        (f"{msg.status.icon} {msg.status.value.upper()}", f"bold {style}"),
        " ",
        (_one_line(msg.title), "bold"),
    )
    return Panel(
        Group(*parts),
        title=title,
        title_align="left",
        border_style=style,
        box=box.ROUNDED,
    )


# -- plain pieces -------------------------------------------------------------


def _clean(text: str) -> str:
    """Text with terminal control sequences removed (newlines and tabs kept)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def _with_mentions(msg: Message, text: str) -> str:
    """The text after the names of those it mentions (every surface's: a terminal has none)."""
    labels: list[str] = []
    for mention in msg.mentions:
        label = _one_line(mention.label)
        if label and label not in labels:
            labels.append(label)
    if not labels:
        return text
    return " ".join(labels) + (f" {text}" if text.strip() else "")


def _one_line(text: str) -> str:
    """Collapse newlines: a title or summary with a newline would break the line layout."""
    return " ".join(_clean(text).split())


def _plain_step(step: StepView) -> str:
    parts = [f"{step.status.icon} {_one_line(step.name)}"]
    if step.duration_s is not None:
        parts.append(format_duration(step.duration_s))
    summary = _one_line(step.summary)
    if summary:
        parts.append(summary)
    return _INDENT + "  ".join(parts)


def plain_link(link: Link) -> str:
    """``label: url``: a terminal or a log file cannot hide the address behind the label."""
    label = _one_line(link.label)
    url = _link_url(link)
    return f"{label}: {url}" if label else url


def _link_url(link: Link) -> str:
    # A URL has no spaces; whatever whitespace a label or template left in is dropped.
    return "".join(_clean(link.url).split())


def _field_value(value: str | Link) -> str:
    if isinstance(value, Link):
        return plain_link(value)
    return _one_line(value)


def _plain_field(f: Field) -> str:
    line = f"{_INDENT}{_one_line(f.label)}: {_field_value(f.value)}"
    if f.status is not None:
        line += f" [{f.status.value.upper()}]"
    return line.rstrip()


def _plain_buttons(buttons: tuple[Button, ...]) -> str:
    return "  ".join(f"[{i}] {_one_line(b.label)}" for i, b in enumerate(buttons, start=1))


def _table_cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and rows padded to one width, so ragged rows never shift columns."""
    width = max([len(table.columns), *(len(row) for row in table.rows)])
    header = [_one_line(c) for c in table.columns] + [""] * (width - len(table.columns))
    rows = [[_one_line(c) for c in row] + [""] * (width - len(row)) for row in table.rows]
    return header, rows


def _plain_table(table: Table) -> list[str]:
    lines: list[str] = []
    if table.title.strip():
        lines.append(_INDENT + _one_line(table.title))
    header, rows = _table_cells(table)
    if not header:
        return lines
    widths = [max(cell_len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        padded = (c + " " * (w - cell_len(c)) for c, w in zip(cells, widths, strict=True))
        return (_INDENT * 2 + "  ".join(padded)).rstrip()

    if any(header):
        lines.append(fmt(header))
    lines.extend(fmt(row) for row in rows)
    return lines


def _truncated(text: str, max_lines: int) -> tuple[list[str], int]:
    """The last ``max_lines`` lines and how many earlier ones were left out.

    The end is kept because code blocks are mostly log tails and tracebacks,
    where the newest lines say what went wrong.
    """
    lines = _clean(text).rstrip("\n").split("\n")
    if lines == [""]:
        lines = []
    limit = max(max_lines, 0)
    hidden = max(len(lines) - limit, 0)
    return lines[hidden:], hidden


def _hidden_note(hidden: int) -> str:
    return f"… {hidden} earlier line{'s' if hidden != 1 else ''} not shown"


def _plain_code(block: CodeBlock, *, max_lines: int) -> list[str]:
    lines: list[str] = []
    if block.title.strip():
        lines.append(_INDENT + _one_line(block.title))
    shown, hidden = _truncated(block.text, max_lines)
    if hidden:
        lines.append(_INDENT * 2 + _hidden_note(hidden))
    lines.extend((_INDENT * 2 + line.expandtabs(4)).rstrip() for line in shown)
    return lines


# -- rich pieces --------------------------------------------------------------


def _rich_steps(steps: tuple[StepView, ...]) -> RichTable:
    table = RichTable(box=None, show_header=False, pad_edge=False, expand=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True, style="dim", min_width=6)
    table.add_column()
    for step in steps:
        style = STATUS_STYLES[step.status]
        duration = format_duration(step.duration_s) if step.duration_s is not None else ""
        table.add_row(
            Text(step.status.icon, style=style),
            Text(_one_line(step.name)),
            Text(duration),
            Text(_one_line(step.summary), style=style if step.status.is_bad else ""),
        )
    return table


def _rich_fields(fields: tuple[Field, ...]) -> RichTable:
    table = RichTable(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for f in fields:
        value = _rich_link(f.value) if isinstance(f.value, Link) else Text(_one_line(f.value))
        if f.status is not None:
            value.stylize(STATUS_STYLES[f.status])
            value.append(f" {f.status.icon}", style=STATUS_STYLES[f.status])
        table.add_row(Text(_one_line(f.label)), value)
    return table


def _rich_link(link: Link) -> Text:
    """``label: url`` with the url clickable in terminals that support links (OSC 8)."""
    url = _link_url(link)
    label = _one_line(link.label)
    text = Text()
    if label:
        text.append(label, style="bold")
        text.append(": ")
    text.append(url, style=Style(link=url) if url else "")
    return text


def _rich_links(links: tuple[Link, ...]) -> Text:
    text = Text()
    for i, link in enumerate(links):
        if i:
            text.append("\n")
        text.append_text(_rich_link(link))
    return text


def _rich_table(table: Table) -> RenderableType:
    header, rows = _table_cells(table)
    rich_table = RichTable(
        title=Text(_one_line(table.title), style="bold") if table.title.strip() else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_header=any(header),
    )
    for column in header:
        rich_table.add_column(Text(column))
    for row in rows:
        rich_table.add_row(*(Text(cell) for cell in row))
    return rich_table


def _rich_code(block: CodeBlock, *, max_lines: int) -> Panel:
    shown, hidden = _truncated(block.text, max_lines)
    body = Text()
    if hidden:
        body.append(_hidden_note(hidden) + ("\n" if shown else ""), style="dim italic")
    body.append("\n".join(line.expandtabs(4) for line in shown))
    title = Text(_one_line(block.title)) if block.title.strip() else None
    return Panel(body, title=title, title_align="left", box=box.SQUARE, border_style="dim")


def _rich_buttons(buttons: tuple[Button, ...]) -> Text:
    text = Text()
    for i, button in enumerate(buttons, start=1):
        if i > 1:
            text.append("  ")
        style = {"danger": "bold red", "primary": "bold"}.get(button.style or "", "")
        text.append(f"[{i}] ", style="dim")
        text.append(_one_line(button.label), style=style)
    return text
