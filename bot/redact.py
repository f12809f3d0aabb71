"""Mask secrets in text before it is posted to chat (log tails, query text).

Patterns err on the side of masking: a log line with a masked value is still
useful, a leaked password is not.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # key=value / key: value for secret-looking keys (password=..., "token": "...").
    (
        re.compile(
            r"""(?ix)
            (\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[\w-]*\b
             ["']?\s*[:=]\s*["']?)
            ([^\s"',;&]+)
            """
        ),
        r"\1" + MASK,
    ),
    # Authorization headers.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    # user:password@ in URLs (postgresql://user:pw@host).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@"), r"\1:" + MASK + "@"),
    # Slack tokens, GitHub tokens, AWS access key ids, JWTs.
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),
)


def redact(text: str) -> str:
    """Return ``text`` with every secret-looking value replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
