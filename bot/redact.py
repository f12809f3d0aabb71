"""Mask secrets in text before it is posted to chat (log tails, query text), and in URLs.

Patterns err on the side of masking: a log line with a masked value is still
useful, a leaked password is not. A URL known to be one (a setting printed
by ``check-config``) is parsed instead (``redact_url``): a password may hold
spaces, ``@`` or nothing before it, which no pattern over free text gets right.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MASK", "redact", "redact_url"]

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
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@"), r"\1:" + MASK + "@"),
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


# Query parameters that carry a secret (libpq's ?password=, ?sslpassword=, tokens, keys).
_SECRET_PARAM = re.compile(r"(?i)pass|pwd|secret|token|api[_-]?key|access[_-]?key|credential")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo and secret query parameters masked.

    The userinfo's password is everything between its first ``:`` and the
    *last* ``@`` of the authority, as PostgreSQL drivers read it
    (``postgresql://u:Pw@x@host`` has the password ``Pw@x``; ``://:Pw@host``
    has no user). When a password holds a ``/``, ``?`` or ``#`` the
    authority seems to end early; the last ``@`` of the whole URL is taken
    then, masking more rather than less. Text that is not a URL is returned
    as it is.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    rest = url[scheme.end() :]
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    at = authority.rfind("@") if "@" in authority else rest.rfind("@")
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    hostpart, question, query = rest.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        rest = f"{hostpart}?{_redact_query(query)}{hash_}{fragment}"
    return url[: scheme.end()] + rest


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY_END = re.compile(r"[/?#]")


def _redact_query(query: str) -> str:
    fields = []
    for field in query.split("&"):
        key, eq, _value = field.partition("=")
        if eq and _SECRET_PARAM.search(unquote(key)):
            field = f"{key}={MASK}"
        fields.append(field)
    return "&".join(fields)
