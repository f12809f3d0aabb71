"""The incident service: one owner for an incident's thread and its lifecycle.

An alert's first ``firing`` opens an incident and its thread and starts the
routed procedure in it; repeats fold into the thread; ``resolved`` (or the
Resolve button of a manual incident) turns the root message green, says so in
the thread and writes the record. Acknowledge and Silence change the incident
and say so in its thread; unacknowledged incidents are escalated once. Past
``SMS_ALERT_THREADS_PER_MINUTE`` new threads a minute, new incidents are listed
in one storm digest message instead, kept in the store for every replica.

Everything here is platform- and procedure-neutral: threads are posted
through ``ChatSurface``s and routed procedures are started through the
``Catalogue`` passed in. Who may click what is the click handler's business;
storing webhook deliveries and leasing them is the alert inbox's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import structlog

from bot.alerts import Alert
from bot.catalogue import Catalogue
from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.engine import Engine
from bot.events import Command
from bot.incidents.digest import StormDigest, in_digest
from bot.incidents.message import format_duration, incident_message
from bot.incidents.record import TimelineRun, incident_record, write_record
from bot.messages import Conversation, Link, Message, MessageRef, Status
from bot.routing import route_alert
from bot.store.base import AlertEvent, Incident
from bot.threads import ThreadRef

__all__ = ["IncidentService", "thread_of"]

log = structlog.get_logger(__name__)


def thread_of(incident: Incident) -> ThreadRef | None:
    """The incident's thread, once its root message was posted."""
    if not incident.conversation or not incident.root_key:
        return None
    return ThreadRef.decode(incident.conversation)


class IncidentService:
    def __init__(
        self,
        deps: Deps,
        engine: Engine,
        *,
        catalogue: Catalogue,
        surface: ChatSurface,
        channel: str,
        surfaces: Mapping[str, ChatSurface] | None = None,
        places_for: Callable[[str], Conversation] | None = None,
    ) -> None:
        self.deps = deps
        self.engine = engine
        self.catalogue = catalogue
        self.surface = surface
        self.channel = channel
        # Priority -> where a new incident's thread opens (several surfaces through
        # ``bot.chat.fanout.FanOut``); None: ``channel`` on ``surface``.
        self.places_for = places_for
        # Where incidents may live besides the alert surface (a manual incident is
        # opened where its command came from), by the name stored in its thread.
        self._surfaces = {**(surfaces or {}), surface.name: surface}
        self._routes = catalogue.routes()
        self._digest = StormDigest(deps.store, surface=surface, channel=channel)

    # -- alerts --------------------------------------------------------------------------

    async def handle(self, alert: Alert) -> None:
        """One stored alert event: open or repeat on ``firing``, close on ``resolved``."""
        if alert.status == "firing":
            await self._firing(alert)
            return
        incident = await self.deps.store.incident_open_for(alert.fingerprint)
        if incident is None:
            await self._resolved_again(alert)
            return
        await self.resolve(incident, by="alertmanager")

    async def repeated(self, alert: Alert, *, times: int) -> None:
        """``times`` more ``firing`` notifications of an alert just handled: one write.

        The alert inbox folds the repeats of a batch here (a flapping group sends
        the same alert again and again), so they cost one store write and one
        thread update rather than one each, leaving the store to the webhook.
        Without an open incident that is posted or waiting in a digest to fold
        them into, each is handled as it would have been on its own.
        """
        store = self.deps.store
        existing = await store.incident_open_for(alert.fingerprint)
        if existing is None or (existing.root_key is None and existing.digest_id is None):
            for _ in range(times):
                await self._firing(alert)
            return
        touched = await store.incident_touch(existing.id, now=self.deps.clock(), times=times)
        if touched is not None and touched.root_key and not in_digest(touched):
            await self._show(touched)

    async def _resolved_again(self, alert: Alert) -> None:
        """A ``resolved`` with nothing open: a repeat, or this event handled again.

        A storm alert's resolution is announced by the digest flush after its
        inbox batch, before the batch is marked done; when the bot died in
        between, the event comes back and finds the incident it resolved
        (resolved since the event was received): announce it again.
        """
        received = alert.received_at if isinstance(alert, AlertEvent) else None
        again = []
        if received is not None:
            found = await self.deps.store.incidents_resolved_for(alert.fingerprint, since=received)
            again = [i for i in found if in_digest(i)]
        for incident in again:
            self._digest.resolved(incident)
        if not again:
            log.info("alerts.resolved_without_incident", alertname=alert.name)

    async def flush_digests(self) -> None:
        """Name the storm alerts not named yet, and announce resolved ones, in digest threads.

        Called by the alert inbox after each batch (before marking it done) and
        when idle, so a storm costs a few replies per batch rather than one
        post per alert, and alerts another replica left unnamed are named too.
        """
        await self._digest.flush(now=self.deps.clock())

    async def _firing(self, alert: Alert) -> None:
        store = self.deps.store
        now = self.deps.clock()
        existing = await store.incident_open_for(alert.fingerprint)
        if existing is not None and existing.root_key is None and existing.digest_id is None:
            # Opened by an earlier attempt whose thread never made it: post it now.
            # (One in a digest waits to be named there by a flush.)
            await self._open_thread(existing, alert, now)
            return
        if existing is not None:
            touched = await store.incident_touch(existing.id, now=now)
            if touched is not None and touched.root_key and not in_digest(touched):
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
        if not storm:
            # The thread first: its post is what the on-call waits for, and the
            # audit row is one more commit (fsync) it need not wait behind.
            await self._open_thread(incident, alert, now)
        await self._audit(
            now,
            actor="alertmanager",
            action="alert",
            target=alert.name,
            outcome="firing",
            incident_id=incident.id,
            fingerprint=alert.fingerprint,
            route=route.rule,
            procedure=route.procedure,
            priority=route.priority,
            digest=storm,
        )
        if storm:
            await self._digest.add(incident, now=now)

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
            incident.id, root_key=ref.id, conversation=ThreadRef.of(ref).encode()
        )
        spec = self.catalogue.alert(incident.procedure)
        if spec is None:
            return
        # Everything in the thread carries the thread's root key, so the runs, proposals
        # and clicks in it can be found again for the incident record.
        in_thread = Conversation(self.surface.name, ref.conversation.channel, thread=ref.id)
        command = Command(
            text=f"alert {alert.name} ({incident.priority})",
            user="alertmanager",
            source="alertmanager",
            conversation=in_thread,
        )
        self.engine.start(
            spec.bind(alert),
            name=incident.procedure,
            title=spec.title,
            command=command,
            surface=self.surface,
            parent=MessageRef(in_thread, ref.id),
        )

    async def show_unprocessed(self, alert: Alert, *, attempts: int, error: Exception) -> bool:
        """After repeated failures, still show the alert: a plain message with its labels.

        An event that can never be processed would otherwise hold back every
        later event of its fingerprint; this way a human sees it and nothing is lost.
        """
        ref = uuid.uuid4().hex[:8]
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        text = (
            f"The bot could not handle this alert after {attempts} attempts "
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
                detail={"fingerprint": alert.fingerprint, "error": repr(error), "ref": ref},
            )
        except Exception:
            log.exception("alerts.fallback_failed", fingerprint=alert.fingerprint)
            return False
        return True

    # -- the thread ------------------------------------------------------------------------

    def surface_for(
        self, incident: Incident, *, given: ChatSurface | None = None
    ) -> ChatSurface | None:
        """The surface the incident's thread lives on (``given`` when it is that one).

        None when this process does not have it (a thread in a terminal that has
        since closed): the incident still changes in the store, only its message cannot.
        """
        if not incident.conversation:
            return None
        name = ThreadRef.decode(incident.conversation).surface
        if given is not None and given.name == name:
            return given
        found = self._surfaces.get(name)
        if found is None:
            log.info("incident.surface_unavailable", incident_id=incident.id, surface=name)
        return found

    async def _show(self, incident: Incident, *, surface: ChatSurface | None = None) -> None:
        thread = thread_of(incident)
        where = self.surface_for(incident, given=surface) if thread else None
        if thread is None or where is None:
            return
        msg = incident_message(incident, self.deps.settings, now=self.deps.clock())
        await where.update(thread.root, msg)

    async def _note(
        self,
        incident: Incident,
        text: str,
        *,
        surface: ChatSurface | None,
        links: tuple[Link, ...] = (),
    ) -> None:
        """Say in the thread what a click did, and show the incident as it now stands."""
        thread = thread_of(incident)
        # The thread may live on another surface than the click's (the alert channel).
        where = self.surface_for(incident, given=surface) if thread else None
        if thread is None or where is None:
            return
        try:
            await where.reply(thread.root, Message(title=text, status=Status.OK, links=links))
            if not in_digest(incident):
                await self._show(incident, surface=where)
        except Exception:
            log.exception("incident.note_failed", incident_id=incident.id)

    # -- what people do ----------------------------------------------------------------------

    async def acknowledge(
        self, incident: Incident, *, by: str, surface: ChatSurface | None = None
    ) -> Incident | None:
        """Acknowledge once; None when someone already had (the store decides)."""
        acked = await self.deps.store.incident_ack(incident.id, by=by, now=self.deps.clock())
        if acked is not None:
            await self._note(acked, f"Acknowledged by {by}.", surface=surface)
        return acked

    async def silence(
        self, incident: Incident, *, hours: int, by: str, surface: ChatSurface | None = None
    ) -> str:
        """Silence the incident's alert in Alertmanager; returns the silence id.

        Raises ``AlertmanagerError`` when Alertmanager does not create it.
        """
        now = self.deps.clock()
        name = incident.labels.get("alertname", incident.title)
        silence_id = await self.deps.alertmanager.create_silence(
            matchers=dict(incident.labels),
            starts_at=now,
            ends_at=now + timedelta(hours=hours),
            created_by=f"sms-bot for {by}",
            comment=f"Silenced from sms-bot incident {incident.id[:8]} ({name})",
        )
        link = Link(f"Silence {silence_id}", self.deps.alertmanager.silence_url(silence_id))
        await self._note(
            incident,
            f"Silenced {name} for {hours}h by {by}: silence {silence_id}.",
            surface=surface,
            links=(link,),
        )
        return silence_id

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
        if in_digest(resolved):
            # Announced with the others of its batch in the digest's thread (``flush_digests``).
            self._digest.resolved(resolved)
            return resolved
        thread = thread_of(resolved)
        where = self.surface_for(resolved, given=surface)
        if thread is None or where is None:
            return resolved
        note = f"Resolved after {format_duration(took)}" + (
            f" by {by}." if by != "alertmanager" else " (Alertmanager sent resolved)."
        )
        if path:
            note += f" Incident record: {path}"
        await self._show(resolved, surface=where)
        await where.reply(thread.root, Message(title="Resolved", status=Status.OK, text=note))
        return resolved

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
            incident.id, root_key=ref.id, conversation=ThreadRef.of(ref).encode()
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

    # -- escalation --------------------------------------------------------------------------

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
            await self._audit(
                now,
                actor="sms-bot",
                source="scheduler",
                action="escalate",
                target=escalated.labels.get("alertname") or escalated.title,
                outcome="escalated",
                incident_id=escalated.id,
                after_min=minutes,
            )
            thread = thread_of(escalated)
            where = self.surface_for(escalated)
            if thread is None or where is None:
                continue
            text = (
                f"{escalated.priority} incident not acknowledged within "
                f"{minutes:g} minutes: {escalated.title}. Please take it (Acknowledge)."
            )
            # Slack's and Teams' mentions both: the fan-out shows each surface its own.
            mentions = self.deps.settings.escalation_mentions
            await where.reply(
                thread.root,
                Message(title="Escalation", status=Status.WARN, text=text, mentions=mentions),
            )
            if not in_digest(escalated):
                await self._show(escalated)
        return count

    # -- the record --------------------------------------------------------------------------

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

    async def _audit(
        self,
        at: datetime,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        source: str = "alertmanager",
        **detail: object,
    ) -> None:
        await self.deps.audit.record(
            at=at,
            actor=actor,
            source=source,
            action=action,
            target=target,
            outcome=outcome,
            conversation=self.channel,
            detail=detail,
        )
