"""The incident record the runbook asks for ("Document incident in incidents/").

Written from the stored incident and the runs, steps and audit events of its
thread, so whichever replica resolves it writes the same record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bot.incidents.message import format_duration, utc
from bot.store.base import AuditEvent, Incident, RunRecord, StepRecord

__all__ = ["TimelineRun", "incident_record", "record_filename", "write_record"]


def record_filename(incident: Incident) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", incident.title.lower()).strip("-")[:60] or "incident"
    return f"{incident.opened_at.strftime('%Y%m%d-%H%M%S')}-{incident.priority}-{slug}.md"


class TimelineRun:
    """A run of the thread with its steps, for the record."""

    def __init__(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        self.run = run
        self.steps = list(steps)


def incident_record(
    incident: Incident,
    *,
    runs: Sequence[TimelineRun],
    audit: Sequence[AuditEvent],
) -> str:
    """The markdown record the runbook asks for ("Document incident in incidents/")."""
    name = incident.labels.get("alertname") or "Manual incident"
    lines = [
        f"# {incident.priority} {name}: {incident.title}",
        "",
        f"- Incident: `{incident.id}`",
        f"- Opened: {utc(incident.opened_at)} by {incident.opened_by}",
    ]
    if incident.acknowledged_at:
        took = format_duration((incident.acknowledged_at - incident.opened_at).total_seconds())
        lines.append(
            f"- Acknowledged: {utc(incident.acknowledged_at)} by "
            f"{incident.acknowledged_by} (time to acknowledge: {took})"
        )
    else:
        lines.append("- Acknowledged: never")
    if incident.escalated_at:
        lines.append(f"- Escalated: {utc(incident.escalated_at)}")
    if incident.resolved_at:
        took = format_duration((incident.resolved_at - incident.opened_at).total_seconds())
        lines.append(f"- Resolved: {utc(incident.resolved_at)} (time to resolve: {took})")
    if incident.repeats:
        lines.append(f"- Repeat notifications: {incident.repeats}")
    if incident.labels:
        lines += ["", "## Labels", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(incident.labels.items())]
    if incident.annotations:
        lines += ["", "## Annotations", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(incident.annotations.items())]

    events: list[tuple[datetime, str]] = [(incident.opened_at, f"Alert {name} firing")]
    for item in runs:
        events.append((item.run.started_at, f"Run `{item.run.command}` by {item.run.user}"))
        for step in item.steps:
            at = step.started_at or item.run.started_at
            took = f" ({step.duration_s:.1f} s)" if step.duration_s is not None else ""
            events.append((at, f"  step {step.name}: {step.status}{took} {step.summary}".rstrip()))
        if item.run.finished_at:
            events.append((item.run.finished_at, f"Run finished: {item.run.status}"))
    for event in audit:
        events.append(
            (event.at, f"{event.action} {event.target}: {event.outcome} by {event.actor}")
        )
    if incident.acknowledged_at:
        events.append((incident.acknowledged_at, f"Acknowledged by {incident.acknowledged_by}"))
    if incident.escalated_at:
        events.append((incident.escalated_at, "Escalated: not acknowledged in time"))
    if incident.resolved_at:
        events.append((incident.resolved_at, "Resolved"))
    events.sort(key=lambda e: e[0])
    lines += ["", "## Timeline", ""]
    lines += [f"- {at.strftime('%H:%M:%S')} {text}" for at, text in events]
    return "\n".join(lines) + "\n"


def write_record(directory: str | Path, incident: Incident, text: str) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    target = path / record_filename(incident)
    target.write_text(text, encoding="utf-8")
    return target
