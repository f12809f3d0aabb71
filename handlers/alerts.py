"""Alerts: the webhook stores them; the processor turns them into incident threads.

``POST /alerts/alertmanager`` answers 200 only once every alert of the
delivery is in the store, so an acknowledged alert is never lost, even if
the bot is killed the next instant. The processor (one per replica; the
store leases events) then opens a thread for the first ``firing`` of a
fingerprint and starts the routed procedure in it, folds repeats into the
same thread, and on ``resolved`` turns the root message green, posts the
resolution and writes the incident record. Past
``SMS_ALERT_THREADS_PER_MINUTE`` new threads a minute, alerts go into one
digest message instead, and none is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import structlog
from aiohttp import web

from bot.alerts import MAX_WEBHOOK_BYTES, Alert, AlertBatch, WebhookInvalid, parse_webhook
from bot.catalogue import Catalogue
from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.engine import Engine, Procedure
from bot.events import Command
from bot.http import read_body
from bot.incidents import TimelineRun, incident_message, incident_record, write_record
from bot.messages import Conversation, Message, MessageRef, Status, Table
from bot.proposals import decode_thread, encode_thread
from bot.routing import route_alert
from bot.store.base import AlertEvent, Digest, Incident, NewAlertEvent, StoreUnavailable
from procedures.catalogue import CATALOGUE

__all__ = ["AlertProcessor", "alert_webhook_route", "procedure_for"]

log = structlog.get_logger(__name__)

# After this many failed attempts an alert is posted as received instead.
MAX_ATTEMPTS = 10
# New storm alerts within this time of a digest's start join it; later ones start another.
DIGEST_WINDOW = timedelta(minutes=1)


def procedure_for(name: str, alert: Alert | None, catalogue: Catalogue = CATALOGUE) -> Procedure:
    """The routed procedure, bound to its alert."""
    spec = catalogue.alert(name)
    if spec is None:
        raise KeyError(name)
    return spec.bind(alert)


def alert_from_event(event: AlertEvent) -> Alert:
    return Alert(
        fingerprint=event.fingerprint,
        status=event.status,
        labels=event.labels,
        annotations=event.annotations,
        starts_at=event.starts_at,
        ends_at=event.ends_at,
        generator_url=event.generator_url,
    )


class AlertProcessor:
    def __init__(
        self,
        deps: Deps,
        engine: Engine,
        *,
        surface: ChatSurface,
        channel: str,
        surfaces: Mapping[str, ChatSurface] | None = None,
        catalogue: Catalogue = CATALOGUE,
        places_for: Callable[[str], Conversation] | None = None,
    ) -> None:
        self.deps = deps
        self.engine = engine
        self.surface = surface
        self.channel = channel
        # Priority -> where a new incident's thread opens (several surfaces through
        # ``bot.chat.fanout.FanOut``); None: ``channel`` on ``surface``.
        self.places_for = places_for
        # Where incidents may live besides the alert surface (a manual incident is
        # opened where its command came from), by the name stored in its thread.
        self._surfaces = {**(surfaces or {}), surface.name: surface}
        self._wake = asyncio.Event()
        self._catalogue = catalogue
        self._routes = catalogue.routes()

    # -- the webhook side ----------------------------------------------------------

    async def receive(self, batch: AlertBatch) -> int:
        """Store every alert of a delivery; only then may the webhook answer 200."""
        events = [
            NewAlertEvent(
                fingerprint=a.fingerprint,
                status=a.status,
                labels=dict(a.labels),
                annotations=dict(a.annotations),
                starts_at=a.starts_at,
                ends_at=a.ends_at,
                generator_url=a.generator_url,
            )
            for a in batch.alerts
        ]
        if events:
            await self.deps.store.alert_events_add(events, received_at=self.deps.clock())
            self._wake.set()
        # Checked after the commit: a store deleted or replaced under the bot still
        # takes writes, so only a store that is still there may be promised with a 200
        # (and one lost between a check and the write is caught too). A 503 after a
        # write that was kept makes Alertmanager send the alerts again; the repeat
        # lands on the fingerprint's open incident (``incident_open_for``, and
        # ``incident_open`` refuses a second one), so it opens no second thread.
        await self.deps.store.ping()
        return len(events)

    # -- the processing side -------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, idle_s: float = 1.0) -> None:
        """Process stored alerts until cancelled; also escalate unacknowledged incidents."""
        while True:
            try:
                worked = await self.process_once()
                await self.escalate_due()
            except StoreUnavailable as exc:
                log.error("alerts.store_unavailable", error=str(exc))
                worked = 0
            if not worked:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_s)

    async def process_once(self) -> int:
        events = await self.deps.store.alert_events_claim(now=self.deps.clock())
        for event in events:
            bound = log.bind(fingerprint=event.fingerprint, alert_status=event.status)
            try:
                await self._process(event)
            except Exception as exc:
                bound.exception("alerts.process_failed", attempts=event.attempts + 1)
                if event.attempts + 1 >= MAX_ATTEMPTS and await self._fallback(event, exc):
                    await self.deps.store.alert_event_done(event.id)
                    continue
                await self.deps.store.alert_event_retry(
                    event.id, at=self.deps.clock() + timedelta(seconds=5), error=repr(exc)
                )
            else:
                await self.deps.store.alert_event_done(event.id)
        return len(events)

    async def _fallback(self, event: AlertEvent, exc: Exception) -> bool:
        """After repeated failures, still show the alert: a plain message with its labels.

        An event that can never be processed would otherwise hold back every
        later event of its fingerprint; this way a human sees it and nothing is lost.
        """
        alert = alert_from_event(event)
        ref = uuid.uuid4().hex[:8]
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        text = (
            f"The bot could not handle this alert after {event.attempts + 1} attempts "
            f"(ref {ref}; see its log), so it is shown as received.\n"
            f"Status: {alert.status}. Summary: {alert.summary}\nLabels: {labels}"
        )
        if alert.generator_url:
            text += f"\nSource: {alert.generator_url}"
        try:
            await self.surface.post(
                Conversation(self.surface.name, self.channel),
                Message(title=f"Unprocessed alert: {alert.name}", status=Status.CRIT, text=text),
            )
            await self.deps.audit.record(
                at=self.deps.clock(),
                actor="alertmanager",
                source="alertmanager",
                action="alert",
                target=alert.name,
                outcome="fallback",
                conversation=self.channel,
                detail={"fingerprint": alert.fingerprint, "error": repr(exc), "ref": ref},
            )
        except Exception:
            log.exception("alerts.fallback_failed", fingerprint=alert.fingerprint)
            return False
        return True

    async def _process(self, event: AlertEvent) -> None:
        alert = alert_from_event(event)
        if alert.status == "firing":
            await self._firing(alert)
        else:
            await self._resolved(alert)

    async def _firing(self, alert: Alert) -> None:
        store = self.deps.store
        now = self.deps.clock()
        existing = await store.incident_open_for(alert.fingerprint)
        if existing is not None and existing.root_key is None:
            # Opened by an earlier attempt whose thread never made it: post it now.
            await self._open_thread(existing, alert, now)
            return
        if existing is not None:
            touched = await store.incident_touch(existing.id, now=now)
            if touched is not None and touched.root_key and not _in_digest(touched):
                await self._show(touched)
            return
        route = route_alert(alert, self.deps.settings.sms_alert_routes, self._routes)
        annotations = dict(alert.annotations)
        if alert.generator_url:
            annotations["generatorURL"] = alert.generator_url
        if alert.starts_at:
            annotations.setdefault("startsAt", alert.starts_at.isoformat())
        storm = await store.incidents_opened_since(now - timedelta(minutes=1)) >= (
            self.deps.settings.sms_alert_threads_per_minute
        )
        incident = await store.incident_open(
            Incident(
                id=uuid.uuid4().hex,
                fingerprint=alert.fingerprint,
                title=alert.summary,
                priority=route.priority,
                procedure="" if storm else route.procedure,
                labels=dict(alert.labels),
                annotations=annotations,
                opened_at=now,
                opened_by="alertmanager",
                last_seen_at=now,
            )
        )
        if incident is None:  # another replica opened it a moment ago
            return
        await self.deps.audit.record(
            at=now,
            actor="alertmanager",
            source="alertmanager",
            action="alert",
            target=alert.name,
            outcome="firing",
            conversation=self.channel,
            detail={
                "incident_id": incident.id,
                "fingerprint": alert.fingerprint,
                "route": route.rule,
                "procedure": route.procedure,
                "priority": route.priority,
                "digest": storm,
            },
        )
        if storm:
            await self._add_to_digest(incident, now)
            return
        await self._open_thread(incident, alert, now)

    async def _open_thread(self, incident: Incident, alert: Alert, now: datetime) -> None:
        """Post the incident's root message and start its procedure in the thread."""
        # Where by priority when the app says (Slack and Teams, see bot/chat/fanout.py).
        where = (
            self.places_for(incident.priority)
            if self.places_for is not None
            else Conversation(self.surface.name, self.channel)
        )
        ref = await self.surface.post(
            where, incident_message(incident, self.deps.settings, now=now)
        )
        await self.deps.store.incident_set_thread(
            incident.id, root_key=ref.id, conversation=encode_thread(ref)
        )
        if self._catalogue.alert(incident.procedure) is not None:
            self._start_procedure(incident, ref, alert, incident.procedure)

    def _start_procedure(
        self, incident: Incident, ref: MessageRef, alert: Alert, name: str
    ) -> None:
        # Everything in the thread carries the thread's root key, so the runs, proposals
        # and clicks in it can be found again for the incident record.
        in_thread = Conversation(self.surface.name, ref.conversation.channel, thread=ref.id)
        command = Command(
            text=f"alert {alert.name} ({incident.priority})",
            user="alertmanager",
            source="alertmanager",
            conversation=in_thread,
        )
        spec = self._catalogue.alert(name)
        assert spec is not None, name
        self.engine.start(
            spec.bind(alert),
            name=name,
            title=spec.title,
            command=command,
            surface=self.surface,
            parent=MessageRef(in_thread, ref.id),
        )

    async def _resolved(self, alert: Alert) -> None:
        incident = await self.deps.store.incident_open_for(alert.fingerprint)
        if incident is None:
            log.info("alerts.resolved_without_incident", alertname=alert.name)
            return
        await self.resolve(incident, by="alertmanager")

    def surface_for(
        self, incident: Incident, *, given: ChatSurface | None = None
    ) -> ChatSurface | None:
        """The surface the incident's thread lives on (``given`` when it is that one).

        None when this process does not have it (a thread in a terminal that has
        since closed): the incident still changes in the store, only its message cannot.
        """
        if not incident.conversation:
            return None
        name = decode_thread(incident.conversation).conversation.surface
        if given is not None and given.name == name:
            return given
        found = self._surfaces.get(name)
        if found is None:
            log.info("incident.surface_unavailable", incident_id=incident.id, surface=name)
        return found

    async def resolve(
        self, incident: Incident, *, by: str, surface: ChatSurface | None = None
    ) -> Incident | None:
        """Close an incident once: root message green, resolution in thread, record written.

        ``surface`` is where the click came from, preferred when the thread lives there.
        """
        now = self.deps.clock()
        resolved = await self.deps.store.incident_resolve(incident.id, now=now)
        if resolved is None:
            return None
        took = (now - resolved.opened_at).total_seconds()
        await self.deps.audit.record(
            at=now,
            actor=by,
            source="alertmanager" if by == "alertmanager" else (surface or self.surface).name,
            action="resolve",
            target=resolved.labels.get("alertname") or resolved.title,
            outcome="resolved",
            conversation=self.channel,
            detail={"incident_id": resolved.id, "duration_s": round(took, 1)},
        )
        path = await self._write_record(resolved)
        where = self.surface_for(resolved, given=surface)
        if resolved.root_key and resolved.conversation and where is not None:
            thread = decode_thread(resolved.conversation)
            from bot.incidents import format_duration

            note = f"Resolved after {format_duration(took)}" + (
                f" by {by}." if by != "alertmanager" else " (Alertmanager sent resolved)."
            )
            if path:
                note += f" Incident record: {path}"
            if _in_digest(resolved):
                name = resolved.labels.get("alertname", resolved.title)
                await where.reply(
                    thread.root, Message(title=f"Resolved: {name}", status=Status.OK, text=note)
                )
            else:
                await self._show(resolved, surface=where)
                await where.reply(
                    thread.root, Message(title="Resolved", status=Status.OK, text=note)
                )
        return resolved

    async def _show(self, incident: Incident, *, surface: ChatSurface | None = None) -> None:
        if not incident.conversation or not incident.root_key:
            return
        where = self.surface_for(incident, given=surface)
        if where is None:
            return
        thread = decode_thread(incident.conversation)
        msg = incident_message(incident, self.deps.settings, now=self.deps.clock())
        await where.update(thread.root, msg)

    # -- alert storms ----------------------------------------------------------------

    async def _add_to_digest(self, incident: Incident, now: datetime) -> None:
        """List the incident in this minute's digest, kept in the store for every replica.

        Exactly one caller (on any replica) creates the digest and posts its
        message; the others join it. Whoever sees the message posted rebuilds it
        from the incidents stored with the digest, so it lists them all.
        """
        store = self.deps.store
        digest, created = await store.digest_join(
            incident.id, now=now, window=DIGEST_WINDOW, new_id=uuid.uuid4().hex
        )
        if created:
            where = Conversation(self.surface.name, self.channel)
            ref = await self.surface.post(where, _digest_message([incident], digest.started_at))
            posted = await store.digest_set_thread(
                digest.id, root_key=ref.id, conversation=encode_thread(ref)
            )
            digest = posted or digest
        if digest.root_key is None or digest.conversation is None:
            # Its creator is posting it; it lists this incident once it has.
            return
        await self._refresh_digest(digest)

    async def _refresh_digest(self, digest: Digest) -> None:
        assert digest.root_key is not None and digest.conversation is not None
        store = self.deps.store
        incidents = await store.digest_incidents(digest.id)
        conversation = json.dumps(json.loads(digest.conversation) | {"digest": True})
        for listed in incidents:
            if listed.root_key is None:
                await store.incident_set_thread(
                    listed.id, root_key=digest.root_key, conversation=conversation
                )
        root = decode_thread(digest.conversation).root
        await self.surface.update(root, _digest_message(incidents, digest.started_at))

    # -- escalation --------------------------------------------------------------------

    async def escalate_due(self) -> int:
        """Mention the escalation group in threads not acknowledged within their time."""
        now = self.deps.clock()
        times = self.deps.settings.sms_response_times_min
        count = 0
        for incident in await self.deps.store.incidents_open():
            minutes = times.get(incident.priority)
            if minutes is None or incident.acknowledged_at or incident.escalated_at:
                continue
            if now - incident.opened_at < timedelta(minutes=minutes):
                continue
            escalated = await self.deps.store.incident_escalate(incident.id, now=now)
            if escalated is None:
                continue
            count += 1
            await self.deps.audit.record(
                at=now,
                actor="sms-bot",
                source="scheduler",
                action="escalate",
                target=escalated.labels.get("alertname") or escalated.title,
                outcome="escalated",
                conversation=self.channel,
                detail={"incident_id": escalated.id, "after_min": minutes},
            )
            where = self.surface_for(escalated)
            if escalated.conversation and escalated.root_key and where is not None:
                thread = decode_thread(escalated.conversation)
                mention = self.deps.settings.sms_escalation_mention
                text = (
                    f"{mention} {escalated.priority} incident not acknowledged within "
                    f"{minutes:g} minutes: {escalated.title}. Please take it (Acknowledge)."
                )
                await where.reply(
                    thread.root, Message(title="Escalation", status=Status.WARN, text=text)
                )
                if not _in_digest(escalated):
                    await self._show(escalated)
        return count

    # -- the record ----------------------------------------------------------------------

    async def _write_record(self, incident: Incident) -> str | None:
        store = self.deps.store
        runs: list[TimelineRun] = []
        if incident.root_key:
            key = ":".join(p for p in (self.surface.name, self.channel, incident.root_key) if p)
            for run in await store.runs_for_conversation(key):
                runs.append(TimelineRun(run, await store.list_steps(run.id)))
        audit = [
            e
            for e in await store.audit_between(incident.opened_at, incident.resolved_at)
            if e.detail.get("incident_id") == incident.id
            or (incident.root_key and e.detail.get("thread") == incident.root_key)
        ]
        text = incident_record(incident, runs=runs, audit=audit)
        path = ""
        try:
            written = await asyncio.to_thread(
                write_record, self.deps.settings.sms_incidents_dir, incident, text
            )
            path = str(written)
        except OSError as exc:
            log.error("incident.record_failed", incident_id=incident.id, error=str(exc))
        # Kept in the store as well, so the record outlives the folder.
        await store.incident_set_record(incident.id, path=path, text=text)
        return path or None

    # -- manual incidents ------------------------------------------------------------------

    async def open_manual(
        self, *, title: str, by: str, where: Conversation, surface: ChatSurface
    ) -> Incident:
        """Open an incident by hand, its thread where the command came from.

        ``incident Disk full`` typed in a terminal shows the incident there, with
        its buttons, not in the alert channel (or the log, without Slack).
        """
        now = self.deps.clock()
        incident = await self.deps.store.incident_open(
            Incident(
                id=uuid.uuid4().hex,
                fingerprint=None,
                title=title,
                priority="P2",
                procedure="",
                labels={},
                annotations={},
                opened_at=now,
                opened_by=by,
                last_seen_at=now,
            )
        )
        assert incident is not None  # manual incidents have no fingerprint to collide on
        ref = await surface.post(where, incident_message(incident, self.deps.settings, now=now))
        await self.deps.store.incident_set_thread(
            incident.id, root_key=ref.id, conversation=encode_thread(ref)
        )
        await self.deps.audit.record(
            at=now,
            actor=by,
            source=where.surface,
            action="incident",
            target=title,
            outcome="opened",
            conversation=where.channel,
            detail={"incident_id": incident.id},
        )
        return await self.deps.store.incident_get(incident.id) or incident


def _in_digest(incident: Incident) -> bool:
    if not incident.conversation:
        return False
    try:
        return bool(json.loads(incident.conversation).get("digest"))
    except (ValueError, AttributeError):
        return False


def _digest_message(incidents: list[Incident], started: datetime) -> Message:
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


def alert_webhook_route(
    *, token: str, receive: Callable[[AlertBatch], Awaitable[int]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``POST /alerts/alertmanager``: bearer token, size, schema, stored, then 200."""
    expected = f"Bearer {token}".encode()

    async def handle(request: web.Request) -> web.StreamResponse:
        if not token:
            return _error(401, "ALERT_WEBHOOK_TOKEN is not set on the bot; the webhook is off")
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "missing or wrong bearer token")
        body = await read_body(request, limit=MAX_WEBHOOK_BYTES)
        if body is None:
            return _error(413, f"body larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            batch = parse_webhook(body)
        except WebhookInvalid as exc:
            return _error(400, str(exc))
        try:
            stored = await receive(batch)
        except StoreUnavailable as exc:
            log.error("alerts.store_failed", error=str(exc))
            return _error(503, "the bot cannot keep alerts right now; retry")
        return web.json_response({"status": "stored", "alerts": stored})

    return handle


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"status": "error", "error": reason}, status=status)
