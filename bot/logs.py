"""structlog set-up: JSON lines for the server, short key=value lines for terminals.

Why structlog is loaded here, without rich's traceback and pretty-printer:
``import structlog`` loads ``structlog.dev`` and ``structlog.tracebacks``,
which import ``rich.traceback`` and ``rich.pretty`` (and with them pygments)
whenever rich is installed, and it is, for the terminal surface. No log here
uses them (terminal lines are plain, tracebacks plain text, the server's
lines JSON), yet they were a tenth of ``sms-bot run health``'s start-up.
While structlog loads, those two modules are marked absent, so structlog
takes the path it takes without rich; afterwards they import as usual.
``bot.cli`` imports this module before anything else that logs.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

__all__ = ["configure_logging"]

_NOT_WANTED = ("rich.traceback", "rich.pretty")


def _load_structlog() -> ModuleType:
    """``structlog``, loaded without ``_NOT_WANTED`` unless something loaded them already."""
    if "structlog" not in sys.modules:
        hidden = [name for name in _NOT_WANTED if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # "import" raises ImportError
        try:
            import structlog  # noqa: F401  # loaded for the whole process, here first
        finally:
            for name in hidden:
                if sys.modules.get(name, ModuleType(name)) is None:
                    del sys.modules[name]
    return sys.modules["structlog"]


_load_structlog()

import structlog  # noqa: E402  # already loaded above, without rich's extras


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
        processors += [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
