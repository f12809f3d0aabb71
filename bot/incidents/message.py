"""An incident as the user sees it in chat: the thread's root message and its buttons.

Derived from the stored ``Incident`` alone, so any replica can re-render it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from bot.config import Settings
from bot.messages import Button, Field, Link, Message, Status, Table
from bot.store.base import Incident

__all__ = [
    "ACK",
    "DIGEST_REPLY_ALERTS",
    "DIGEST_REPLY_TEXT",
    "RESOLVE",
    "SILENCE",
    "SILENCE_HOURS",
    "digest_batch_messages",
    "digest_message",
    "digest_resolved_messages",
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


# Alerts named per thread reply of a storm digest: the monospace tables of one
# Block Kit section (3,000 characters) holds them whole, summaries clipped to
# ``DIGEST_SUMMARY`` characters.
DIGEST_REPLY_ALERTS = 25
DIGEST_SUMMARY = 40  # blockkit clips a table cell there anyway


def _alertname(incident: Incident) -> str:
    return incident.labels.get("alertname", "?")


def _other_labels(incident: Incident) -> str:
    """What tells alerts of one name apart (instance, job...): their other labels."""
    labels = sorted(incident.labels.items())
    return " ".join(f"{k}={v}" for k, v in labels if k != "alertname")[:DIGEST_SUMMARY]


def digest_message(incidents: Sequence[Incident], started: datetime) -> Message:
    """The storm digest: how many alerts of each name this storm minute brought.

    Every alert is named in the digest's thread (``digest_batch_messages``):
    the root message counts them, by alertname, so it stays one screen
    however large the storm.
    """
    counts = Counter(_alertname(i) for i in incidents)
    resolved = Counter(_alertname(i) for i in incidents if i.status == "resolved")
    worst = {name: min(i.priority for i in incidents if _alertname(i) == name) for name in counts}
    rows = tuple(
        (name, str(n), str(resolved[name]), worst[name]) for name, n in sorted(counts.items())
    )
    title = f"Alert storm: {len(incidents)} more alerts since {started:%H:%M:%S} UTC"
    if resolved:
        done = sum(resolved.values())
        title += " (all resolved)" if done == len(incidents) else f" ({done} resolved)"
    return Message(
        title=title,
        status=Status.CRIT,
        text=(
            "Too many new alerts for one thread each: they are counted here by name, each "
            "named in this thread, recorded as incidents, and their resolutions are posted "
            "in this thread. No alert is dropped."
        ),
        details=(Table("Alerts by name", ("alert", "count", "resolved", "worst"), rows),),
    )


def digest_batch_messages(incidents: Sequence[Incident]) -> list[Message]:
    """Thread replies naming every alert of a batch, grouped by alertname.

    As few replies as hold them all, ``DIGEST_REPLY_ALERTS`` alerts each, so a
    storm costs a handful of posts (Slack allows about one a second in a
    channel) and no alert is cut off by a platform's limits.
    """
    ordered = sorted(incidents, key=lambda i: (_alertname(i), i.opened_at, i.title))
    out: list[Message] = []
    for start in range(0, len(ordered), DIGEST_REPLY_ALERTS):
        chunk = ordered[start : start + DIGEST_REPLY_ALERTS]
        groups: dict[str, list[Incident]] = {}
        for incident in chunk:
            groups.setdefault(_alertname(incident), []).append(incident)
        tables = tuple(
            Table(
                f"{name} ({len(group)})",
                ("priority", "alert", "labels"),
                tuple((i.priority, i.title[:DIGEST_SUMMARY], _other_labels(i)) for i in group),
            )
            for name, group in groups.items()
        )
        out.append(
            Message(
                title=f"{len(chunk)} alerts: {', '.join(groups)}",
                status=Status.CRIT,
                details=tables,
            )
        )
    return out


# Characters of text per resolutions reply, counted as Slack counts them after
# escaping (``&<>`` as entities): well inside a Block Kit section (3,000), and
# inside a Teams TextBlock (4,000) even with every character backslash-escaped.
DIGEST_REPLY_TEXT = 1900


def _shown(text: str) -> int:
    """Upper bound of ``text``'s length once a renderer escaped it (see ``DIGEST_REPLY_TEXT``)."""
    return len(text.encode("utf-16-le")) // 2 + 4 * sum(text.count(c) for c in "&<>")


def _alert_id(incident: Incident) -> str:
    """An alert among those of its name, short: the values of its other labels."""
    labels = sorted(incident.labels.items())
    values = " ".join(v for k, v in labels if k != "alertname")
    return (values or incident.title)[:DIGEST_SUMMARY]


def digest_resolved_messages(incidents: Sequence[Incident]) -> list[Message]:
    """Thread replies naming the resolved alerts of a batch, grouped by alertname.

    One line per alertname (``HighCPU (3): node-1, node-2, node-3``), as few
    replies as hold them within ``DIGEST_REPLY_TEXT``: a storm that resolves
    costs a handful of posts rather than one per alert (Slack allows about
    one a second in a channel). Text, not tables: a resolution needs only the
    alert's name, and text holds about four times as many per reply.
    """
    ordered = sorted(incidents, key=lambda i: (_alertname(i), i.opened_at, _alert_id(i)))
    chunks: list[list[tuple[str, list[str]]]] = [[]]
    used = 0
    for incident in ordered:
        name, item = _alertname(incident), _alert_id(incident)
        chunk = chunks[-1]
        same = bool(chunk) and chunk[-1][0] == name
        cost = _shown(f", {item}") if same else _shown(f"\n{name} (000): {item}")
        if chunk and used + cost > DIGEST_REPLY_TEXT:
            chunk = []
            chunks.append(chunk)
            used, same = 0, False
            cost = _shown(f"{name} (000): {item}")
        if same:
            chunk[-1][1].append(item)
        else:
            chunk.append((name, [item]))
        used += cost
    out: list[Message] = []
    for chunk in chunks:
        if not chunk:
            continue
        count = sum(len(items) for _, items in chunk)
        lines = [f"{name} ({len(items)}): {', '.join(items)}" for name, items in chunk]
        out.append(
            Message(
                title=f"Resolved ({count}): {', '.join(name for name, _ in chunk)}",
                status=Status.OK,
                text="\n".join(lines),
            )
        )
    return out
