from __future__ import annotations

import math

import pytest

from bot.baseline import classify, format_value, plausible
from bot.config import Threshold
from bot.messages import Status, worst
from bot.redact import redact, redact_url


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("ERROR db timeout password=hunter2", "hunter2"),
        ('{"api_key": "abc123def"}', "abc123def"),
        ("DB_PASSWORD: 'p@ss w0rd'", "p@ss"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJhbGci"),
        ("connecting to postgresql://sms_user:topsecret@db:5432/sms", "topsecret"),
        ("token xoxb-1234567890-abcdefghij", "xoxb-1234567890"),
        ("aws AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP"),
        ("SECRET_KEY=django-insecure-123", "django-insecure-123"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "[REDACTED]" in out


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://:OnlyPw123@host/db", "postgresql://:[REDACTED]@host/db"),
        ("postgresql://u:my secret pw@host:5432/db", "postgresql://u:[REDACTED]@host:5432/db"),
        ("postgresql://u:Pw@x@host/db", "postgresql://u:[REDACTED]@host/db"),
        ("postgres://u:p:w@host/db", "postgres://u:[REDACTED]@host/db"),
        (
            "postgresql://host/db?sslmode=require&password=QueryPw",
            "postgresql://host/db?sslmode=require&password=[REDACTED]",
        ),
        (
            "postgresql://u@host/db?sslpassword=KeyPw#frag",
            "postgresql://u@host/db?sslpassword=[REDACTED]#frag",
        ),
        ("postgresql://u:PW%40x@h1:5432,h2/db", "postgresql://u:[REDACTED]@h1:5432,h2/db"),
        # A '/' or '?' in the password ends the authority early: mask up to the last '@'.
        ("postgresql://u:pa/ss@host/db", "postgresql://u:[REDACTED]@host/db"),
        ("postgresql://u:p?w@host/db", "postgresql://u:[REDACTED]@host/db"),
        # Nothing secret: left as it is.
        ("postgresql://sms_user@localhost:5432/sms", "postgresql://sms_user@localhost:5432/sms"),
        ("sqlite:///./data/sms-bot.db", "sqlite:///./data/sms-bot.db"),
        ("http://localhost:9090/?query=up", "http://localhost:9090/?query=up"),
        ("#sms-alerts", "#sms-alerts"),
    ],
)
def test_urls_are_masked_by_parsing_them(url: str, masked: str) -> None:
    assert redact_url(url) == masked


def test_a_url_password_with_no_user_is_masked_in_free_text_too() -> None:
    assert redact("dsn postgresql://:OnlyPw123@host/db") == "dsn postgresql://:[REDACTED]@host/db"


def test_ordinary_lines_are_untouched() -> None:
    line = "INFO GET /api/v1/students 200 12ms user=42 tokens_used"
    assert redact(line) == line


@pytest.mark.parametrize(
    ("value", "threshold", "expected"),
    [
        (350, Threshold(500, 1000), Status.OK),
        (500, Threshold(500, 1000), Status.OK),
        (501, Threshold(500, 1000), Status.WARN),
        (1000, Threshold(500, 1000), Status.WARN),
        (1001, Threshold(500, 1000), Status.CRIT),
        (30, Threshold(20, 10), Status.OK),
        (19.9, Threshold(20, 10), Status.WARN),
        (9, Threshold(20, 10), Status.CRIT),
        (None, Threshold(2, 5), Status.WARN),
        (math.nan, Threshold(2, 5), Status.WARN),
    ],
)
def test_classify_against_the_baseline_table(
    value: float | None, threshold: Threshold, expected: Status
) -> None:
    assert classify(value, threshold) is expected


def test_format_value() -> None:
    assert format_value(349.6, "ms") == "350 ms"
    assert format_value(1.333, "%") == "1.3%"
    assert format_value(30.22, "req/s") == "30.22 req/s"
    assert format_value(None, "%") == "no data"


def test_worst() -> None:
    assert worst([]) is Status.OK
    assert worst([Status.OK, Status.WARN]) is Status.WARN
    assert worst([Status.CRIT, Status.FAILED, Status.WARN]) is Status.FAILED
    assert worst([Status.FAILED, Status.CRIT]) is Status.FAILED


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.0, "%", True),
        (100.0, "%", True),
        (100.5, "%", False),
        (-0.1, "%", False),
        (7512.0, "%", False),
        (2500.0, "ms", True),
        (-3.0, "ms", False),
        (-1.0, "req/s", False),
        (1e6, "req/s", True),
        (math.nan, "ms", False),
        (math.inf, "ms", False),
        (-math.inf, "req/s", False),
    ],
)
def test_plausible_values(value: float, unit: str, expected: bool) -> None:
    assert plausible(value, unit) is expected


@pytest.mark.parametrize(
    ("value", "unit", "threshold"),
    [
        (7512.0, "%", Threshold(2, 5)),  # an inverted ratio must not read CRIT ...
        (-5.0, "%", Threshold(2, 5)),  # ... nor a negative one OK
        (-120.0, "ms", Threshold(500, 1000)),
        (-3.0, "req/s", Threshold(20, 10)),  # lower is worse: not "critical" either
        (math.inf, "ms", Threshold(500, 1000)),
        (math.nan, "%", Threshold(80, 95)),
    ],
)
def test_implausible_values_are_warnings_not_verdicts(
    value: float, unit: str, threshold: Threshold
) -> None:
    assert classify(value, threshold, unit=unit) is Status.WARN
    assert format_value(value, unit).endswith(": implausible (check `SMS_PROMQL`)")


def test_implausible_values_show_what_the_query_returned() -> None:
    assert format_value(7512.3, "%") == "7512.3%: implausible (check `SMS_PROMQL`)"
    assert format_value(-120.0, "ms") == "-120 ms: implausible (check `SMS_PROMQL`)"
    assert format_value(math.inf, "req/s") == "+Inf req/s: implausible (check `SMS_PROMQL`)"
    assert format_value(math.nan, "%") == "NaN: implausible (check `SMS_PROMQL`)"
    assert format_value(0.0, "%") == "0.0%"
