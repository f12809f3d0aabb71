"""Incidents: the service that owns their threads and lifecycle, their message and record.

``service`` opens, repeats, acknowledges, silences, resolves and escalates
incidents; ``digest`` lists them in one message during an alert storm;
``message`` is how an incident looks in chat; ``record`` is the markdown
record written when it is resolved.
"""

from __future__ import annotations

from bot.incidents.digest import StormDigest, in_digest
from bot.incidents.message import (
    ACK,
    RESOLVE,
    SILENCE,
    SILENCE_HOURS,
    digest_message,
    format_duration,
    incident_links,
    incident_message,
)
from bot.incidents.record import TimelineRun, incident_record, record_filename, write_record
from bot.incidents.service import IncidentService

__all__ = [
    "ACK",
    "RESOLVE",
    "SILENCE",
    "SILENCE_HOURS",
    "IncidentService",
    "StormDigest",
    "TimelineRun",
    "digest_message",
    "format_duration",
    "in_digest",
    "incident_links",
    "incident_message",
    "incident_record",
    "record_filename",
    "write_record",
]
