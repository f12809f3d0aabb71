"""structlog set-up: JSON lines for the server, short key=value lines for terminals."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


class _StderrLogger:
    """Writes each event to whatever ``sys.stderr`` is at that moment.

    structlog's ``PrintLogger`` keeps the file it was created with; when stderr
    is replaced later (a redirect, a test's capture) it would write to a closed file.
    """

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure_logging(level: str, *, json: bool) -> None:
    """Send structured events to stderr at ``level`` (stdout stays for chat output)."""
    numeric = logging.getLevelName(level.upper())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
