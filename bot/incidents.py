"""Incidents as the user sees them: the thread's root message and the markdown record.

Both are derived from the stored ``Incident`` (and, for the record, the runs,
steps and audit events of its thread), so any replica can re-render them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from bot.config import Settings
from bot.messages import Button, Field, Link, Message, Status
from bot.store.base import AuditEvent, Incident, RunRecord, StepRecord

__all__ = [
    "ACK",
    "RESOLVE",
    "SILENCE",
    "SILENCE_HOURS",
    "TimelineRun",
    "format_duration",
    "incident_links",
    "incident_message",
    "incident_record",
    "record_filename",
    "write_record",
]

ACK = "incident.ack"
SILENCE = "incident.silence"
RESOLVE = "incident.resolve"
SILENCE_HOURS = (1, 4, 24)

_PRIORITY_NAMES = {"P0": "P0 critical", "P1": "P1 high", "P2": "P2 medium", "P3": "P3 low"}


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _utc(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


def incident_links(incident: Incident, settings: Settings) -> tuple[Link, ...]:
    """Where to look next; each surface renders them as its own links."""
    grafana = settings.sms_grafana_url.rstrip("/")
    links = [Link("Grafana", f"{grafana}/d/system-overview")]
    source = incident.annotations.get("generatorURL") or incident.labels.get("generatorURL")
    if source:
        links.append(Link("Prometheus", source))
    if incident.fingerprint:
        name = incident.labels.get("alertname", "")
        query = quote(f'{{alertname="{name}"}}', safe="")
        alertmanager = settings.sms_alertmanager_url.rstrip("/")
        links.append(Link("Alertmanager", f"{alertmanager}/#/alerts?filter={query}"))
    runbook = incident.annotations.get("runbook") or incident.annotations.get("runbook_url")
    if runbook:
        links.append(Link("Runbook", runbook))
    return tuple(links)


def incident_message(incident: Incident, settings: Settings, *, now: datetime) -> Message:
    """The root message of an incident thread, as it stands."""
    resolved = incident.status == "resolved"
    status = Status.OK if resolved else Status.CRIT
    name = incident.labels.get("alertname") or "Manual incident"
    head = "RESOLVED" if resolved else "FIRING"
    title = f"{head} [{incident.priority}] {name}: {incident.title}"
    fields = [
        Field("Priority", _PRIORITY_NAMES.get(incident.priority, incident.priority)),
        Field("Started", _utc(incident.opened_at)),
    ]
    if resolved and incident.resolved_at:
        took = format_duration((incident.resolved_at - incident.opened_at).total_seconds())
        fields.append(Field("Resolved", f"{_utc(incident.resolved_at)} after {took}", Status.OK))
    else:
        fields.append(
            Field("Open for", format_duration((now - incident.opened_at).total_seconds()))
        )
    if incident.repeats:
        fields.append(Field("Repeats", f"{incident.repeats} (last {_utc(incident.last_seen_at)})"))
    if incident.acknowledged_by:
        fields.append(
            Field(
                "Acknowledged",
                f"by {incident.acknowledged_by} at {_utc(incident.acknowledged_at)}",
            )
        )
    elif incident.escalated_at:
        fields.append(Field("Escalated", _utc(incident.escalated_at), Status.WARN))
    labels = ", ".join(f"{k}={v}" for k, v in sorted(incident.labels.items()) if k != "alertname")
    if labels:
        fields.append(Field("Labels", labels))
    text_lines = []
    description = incident.annotations.get("description")
    if description and description != incident.title:
        text_lines.append(description)
    if incident.procedure:
        text_lines.append(f"Runbook procedure: {incident.procedure} (progress in the thread).")
    buttons: list[Button] = []
    if not resolved:
        if not incident.acknowledged_by:
            buttons.append(Button("Acknowledge", ACK, incident.id, "primary"))
        if incident.fingerprint:
            buttons += [
                Button(f"Silence {h}h", SILENCE, f"{incident.id}:{h}") for h in SILENCE_HOURS
            ]
        else:
            buttons.append(Button("Resolve", RESOLVE, incident.id))
    return Message(
        title=title,
        status=status,
        text="\n".join(text_lines),
        fields=tuple(fields),
        links=incident_links(incident, settings),
        buttons=tuple(buttons),
        footer=f"incident {incident.id[:8]}",
    )


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
        f"- Opened: {_utc(incident.opened_at)} by {incident.opened_by}",
    ]
    if incident.acknowledged_at:
        took = format_duration((incident.acknowledged_at - incident.opened_at).total_seconds())
        lines.append(
            f"- Acknowledged: {_utc(incident.acknowledged_at)} by "
            f"{incident.acknowledged_by} (time to acknowledge: {took})"
        )
    else:
        lines.append("- Acknowledged: never")
    if incident.escalated_at:
        lines.append(f"- Escalated: {_utc(incident.escalated_at)}")
    if incident.resolved_at:
        took = format_duration((incident.resolved_at - incident.opened_at).total_seconds())
        lines.append(f"- Resolved: {_utc(incident.resolved_at)} (time to resolve: {took})")
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
