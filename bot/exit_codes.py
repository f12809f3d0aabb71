"""What ``sms-bot run`` and the other terminal commands exit with (cron reads these).

A module of its own so that the command line can answer a usage or
configuration error without importing the dispatcher and everything behind it.
"""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed or is critical
EXIT_USAGE = 2  # a usage or configuration error
