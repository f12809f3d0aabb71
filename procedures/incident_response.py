"""The runbook's Incident Response Procedures, in one import for tests and readers.

Each procedure lives in its own module (``backend_down``, ``slow_responses``,
``high_error_rate``) with its checks; the terminate action approved from a
slow-query proposal is in ``terminate``. Alert routing and the click handler
find them through the catalogue (``procedures/catalogue.py``).
"""

from __future__ import annotations

from procedures.backend_down import backend_down
from procedures.high_error_rate import high_error_rate
from procedures.slow_responses import slow_responses
from procedures.terminate import TERMINATE_ACTION, terminate_action

__all__ = [
    "TERMINATE_ACTION",
    "backend_down",
    "high_error_rate",
    "slow_responses",
    "terminate_action",
]
