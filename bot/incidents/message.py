"""An incident as the user sees it in chat: the thread's root message and its buttons.

Derived from the stored ``Incident`` alone, so any replica can re-render it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from bot.config import Settings
from bot.messages import Button, Field, Link, Message, Status, Table
from bot.store.base import Incident

__all__ = [
    "ACK",
    "RESOLVE",
    "SILENCE",
    "SILENCE_HOURS",
    "digest_message",
    "format_duration",
    "incident_links",
    "incident_message",
    "utc",
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


def utc(at: datetime | None) -> str:
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
        Field("Started", utc(incident.opened_at)),
    ]
    if resolved and incident.resolved_at:
        took = format_duration((incident.resolved_at - incident.opened_at).total_seconds())
        fields.append(Field("Resolved", f"{utc(incident.resolved_at)} after {took}", Status.OK))
    else:
        fields.append(
            Field("Open for", format_duration((now - incident.opened_at).total_seconds()))
        )
    if incident.repeats:
        fields.append(Field("Repeats", f"{incident.repeats} (last {utc(incident.last_seen_at)})"))
    if incident.acknowledged_by:
        fields.append(
            Field(
                "Acknowledged",
                f"by {incident.acknowledged_by} at {utc(incident.acknowledged_at)}",
            )
        )
    elif incident.escalated_at:
        fields.append(Field("Escalated", utc(incident.escalated_at), Status.WARN))
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


def digest_message(incidents: Sequence[Incident], started: datetime) -> Message:
    """The storm digest: every incident of a storm minute in one message."""
    rows = tuple((i.priority, i.labels.get("alertname", "?"), i.title[:120]) for i in incidents)
    return Message(
        title=f"Alert storm: {len(incidents)} more alerts since {started:%H:%M:%S} UTC",
        status=Status.CRIT,
        text=(
            "Too many new alerts for one thread each: they are listed here, recorded as "
            "incidents, and their resolutions are posted in this thread. No alert is dropped."
        ),
        details=(Table("Alerts", ("priority", "alert", "summary"), rows),),
    )
