"""High Error Rate (P2): what the errors say, which status codes, where to read more.

The runbook's steps 1-3: ``docker logs docker-backend-1 | grep ERROR`` with the
lines grouped by pattern (numbers, ids and quoted values replaced by
placeholders, so a thousand timeouts read as one line with a count), the
error rate by status code (500, 422, 403, 404 always shown) with 5xx judged
against ``SMS_THRESHOLD_ERROR_RATE_PCT``, and a Grafana Explore link to the
same lines in Loki.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote, urlencode

from bot.alerts import Alert
from bot.baseline import classify
from bot.catalogue import AlertSpec, ProcedureSpec, RunbookEntry
from bot.deps import Deps
from bot.engine import Outcome, Run
from bot.messages import Field, Link, Status, Table
from bot.redact import redact

__all__ = [
    "ERROR_RATE_BY_STATUS_QUERY",
    "ESCALATION_P2",
    "LOG_LINES",
    "SPEC",
    "ErrorPatterns",
    "ErrorRates",
    "check_error_patterns",
    "check_error_rates",
    "grafana_explore_url",
    "group_errors",
    "high_error_rate",
    "loki_link",
    "normalise",
]

LOG_LINES = 1000
TOP_PATTERNS = 10
SHOWN_STATUSES = ("500", "422", "403", "404")
ROLLBACK_PCT = 10.0
ESCALATION_P2 = (
    "Escalation (runbook, High Error Rate): if the error rate is above 10%, "
    "roll back to the previous version."
)
# Share of all requests, per status code, for 4xx and 5xx answers.
ERROR_RATE_BY_STATUS_QUERY = (
    '100 * sum by (status) (rate(http_requests_total{status=~"5..|4.."}[5m])) '
    "/ scalar(sum(rate(http_requests_total[5m])))"
)
LOKI_DATASOURCE = "Loki"
_EXAMPLE_CHARS = 200
_PATTERN_CHARS = 160

# One pass, leftmost match wins; the alternatives are in priority order.
_VARIABLE = re.compile(
    r"""
    (?P<keep>\b(?:status|status_code|code|HTTP)[\s=:]*[1-5]\d\d\b)   # an HTTP status stays
    | (?P<uuid>\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b)
    | (?P<quoted>"[^"\n]*"|'[^'\n]*')
    | (?P<hex>\b0[xX][0-9a-fA-F]+\b
        | \b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)
    | (?P<number>\d+(?:[.,]\d+)*)
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PLACEHOLDERS = {"uuid": "<uuid>", "quoted": "<str>", "hex": "<hex>", "number": "<n>"}


def _placeholder(match: re.Match[str]) -> str:
    kind = match.lastgroup or "keep"
    return _PLACEHOLDERS.get(kind, match.group(0))


def normalise(line: str) -> str:
    """The shape of a log line: what varies from one occurrence to the next is a placeholder."""
    return " ".join(_VARIABLE.sub(_placeholder, line).split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class ErrorGroup:
    pattern: str
    count: int
    example: str


def group_errors(text: str) -> list[ErrorGroup]:
    """ERROR lines of ``text`` grouped by pattern, most frequent first (ties: first seen first).

    Lines are redacted before anything else, so neither a pattern nor an
    example can carry a secret.
    """
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for raw in text.splitlines():
        if "ERROR" not in raw:
            continue
        line = redact(raw.strip())
        pattern = normalise(line)
        counts[pattern] += 1
        examples.setdefault(pattern, line)
    # Counter.most_common keeps insertion order among equal counts.
    return [ErrorGroup(p, n, examples[p]) for p, n in counts.most_common()]


@dataclass(frozen=True)
class ErrorPatterns(Outcome):
    groups: tuple[ErrorGroup, ...] = ()
    lines: int = 0


async def check_error_patterns(deps: Deps, *, lines: int = LOG_LINES) -> ErrorPatterns:
    """Steps 1-2: the backend's ERROR lines, grouped; top ``TOP_PATTERNS`` as a table."""
    container = deps.docker.container_name("backend")
    text = await deps.docker.logs("backend", tail=lines)
    got = len(text.splitlines())
    groups = group_errors(text)
    total = sum(g.count for g in groups)
    if not groups:
        return ErrorPatterns(
            Status.OK, f"no ERROR line in the last {got} lines of {container}", lines=got
        )
    top = groups[:TOP_PATTERNS]
    shown = f"top {len(top)} of {len(groups)}" if len(groups) > len(top) else f"{len(groups)}"
    table = Table(
        title=f"{container}: ERROR lines by pattern ({shown} patterns, last {got} lines)",
        columns=("pattern", "count", "example"),
        rows=tuple(
            (_clip(g.pattern, _PATTERN_CHARS), str(g.count), _clip(g.example, _EXAMPLE_CHARS))
            for g in top
        ),
    )
    first = top[0]
    noun = "pattern" if len(groups) == 1 else "patterns"
    summary = (
        f"{total} ERROR line{'' if total == 1 else 's'} in the last {got} of {container}, "
        f"{len(groups)} {noun}; "
        f"most frequent ({first.count}x): {_clip(first.pattern, 80)}"
    )
    return ErrorPatterns(Status.WARN, summary, details=(table,), groups=tuple(groups), lines=got)


@dataclass(frozen=True)
class ErrorRates(Outcome):
    """Per status code, percent of all requests; ``server_pct`` is the 5xx total (None: no data)."""

    by_status: tuple[tuple[str, float], ...] = ()
    server_pct: float | None = None


def _pct(value: float) -> str:
    return f"{value:.1f}%" if value >= 0.1 or value == 0 else f"{value:.2f}%"


async def check_error_rates(deps: Deps) -> ErrorRates:
    """Step 2 in numbers: 4xx and 5xx as shares of all requests over 5 minutes."""
    threshold = deps.settings.sms_threshold_error_rate_pct
    samples = await deps.prometheus.query(ERROR_RATE_BY_STATUS_QUERY)
    rates: dict[str, float] = {}
    for sample in samples:
        if not math.isnan(sample.value):
            code = sample.labels.get("status", "?")
            rates[code] = rates.get(code, 0.0) + sample.value
    if samples and not rates:
        # Every value NaN: the total request rate was zero.
        return ErrorRates(Status.WARN, "no requests in the last 5 minutes")
    for code in SHOWN_STATUSES:
        rates.setdefault(code, 0.0)
    server = sum(v for code, v in rates.items() if code.startswith("5"))
    client = sum(v for code, v in rates.items() if code.startswith("4"))
    status = classify(server, threshold, unit="%")
    others = sorted(
        ((code, value) for code, value in rates.items() if code not in SHOWN_STATUSES),
        key=lambda kv: (-kv[1], kv[0]),
    )
    ordered = [(code, rates[code]) for code in SHOWN_STATUSES] + others
    table = Table(
        title="Error rate by status code (share of all requests, last 5 minutes)",
        columns=("status", "rate"),
        rows=(
            *((code, _pct(value)) for code, value in ordered),
            ("5xx total", f"{_pct(server)} ({threshold.describe()})"),
            ("4xx total", _pct(client)),
        ),
    )
    shown = ", ".join(f"{code} {_pct(rates[code])}" for code in SHOWN_STATUSES)
    summary = f"5xx {_pct(server)} ({status.value}); {shown}"
    fields = (Field("5xx error rate", f"{_pct(server)} ({threshold.describe()})", status),)
    return ErrorRates(
        status,
        summary,
        fields=fields,
        details=(table,),
        by_status=tuple(ordered),
        server_pct=server,
    )


def grafana_explore_url(grafana_url: str, expr: str, *, datasource: str = LOKI_DATASOURCE) -> str:
    """A Grafana Explore link that opens ``expr`` over the last hour."""
    state = {
        "datasource": datasource,
        "queries": [{"refId": "A", "expr": expr}],
        "range": {"from": "now-1h", "to": "now"},
    }
    query = urlencode(
        {"orgId": "1", "left": json.dumps(state, separators=(",", ":"))}, quote_via=quote
    )
    return f"{grafana_url.rstrip('/')}/explore?{query}"


async def loki_link(deps: Deps) -> Outcome:
    """Step 3: where to read every ERROR line, beyond the last thousand."""
    container = deps.docker.container_name("backend")
    expr = f'{{container="{container}"}} |= "ERROR"'
    url = grafana_explore_url(deps.settings.sms_grafana_url, expr)
    link = Link("Grafana Explore", url)
    return Outcome(Status.OK, expr, fields=(Field("Loki logs (Grafana Explore)", link),))


def _conclusion(patterns: ErrorPatterns | None, rates: ErrorRates | None) -> str:
    lines: list[str] = []
    if rates is None:
        lines.append("The error rate could not be read from Prometheus.")
    elif rates.server_pct is not None:
        lines.append(f"5xx error rate {_pct(rates.server_pct)} ({rates.status.value}).")
    if patterns is None:
        lines.append("The backend's log could not be read.")
    elif patterns.groups:
        first = patterns.groups[0]
        lines.append(f"Most frequent error ({first.count}x): {_clip(first.example, 120)}")
    else:
        lines.append("No ERROR line in the backend's recent log.")
    lines.append("Next (runbook): review recent deployments and configuration changes.")
    if rates is not None and rates.server_pct is not None and rates.server_pct > ROLLBACK_PCT:
        lines.append(ESCALATION_P2)
    return "\n".join(lines)


async def high_error_rate(run: Run, *, alert: Alert | None = None) -> None:
    """P2: ERROR lines by pattern, error rate by status code, the Loki link.

    ``alert`` is the Alertmanager alert that started the run, None when run by hand.
    """
    deps = run.deps
    patterns = await run.step(
        "ERROR lines in backend logs, grouped by pattern", check_error_patterns(deps)
    )
    rates = await run.step("Error rate by status code", check_error_rates(deps))
    await run.step("Logs in Grafana/Loki", loki_link(deps))
    run.text = _conclusion(patterns, rates)


SPEC = ProcedureSpec(
    name="high_error_rate",
    summary="P2: group the backend's errors and read error rates by status code",
    alert=AlertSpec(
        alertnames=("HighErrorRate",),
        priority="P2",
        title="P2 High error rate: diagnosis",
        bind=lambda alert: partial(high_error_rate, alert=alert),
    ),
    runbook=(
        RunbookEntry(
            "P2 High error rate (> 5%)",
            "alert; respond in 15-30 min",
            "ERROR lines by pattern, errors by status code, Loki logs",
        ),
    ),
)
