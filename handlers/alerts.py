"""Alerts in: the webhook stores them; the inbox hands them to the incident service.

``POST /alerts/alertmanager`` answers 200 only once every alert of the
delivery is in the store, so an acknowledged alert is never lost, even if
the bot is killed the next instant. The inbox (one per replica; the store
leases events) then hands each stored alert to the ``IncidentService``,
which opens, repeats and resolves incident threads; between deliveries it
also lets the service escalate unacknowledged incidents. An event that keeps
failing is retried, and after ``MAX_ATTEMPTS`` shown as received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from bot.alerts import MAX_WEBHOOK_BYTES, AlertBatch, WebhookInvalid, parse_webhook
from bot.deps import Deps
from bot.incidents import IncidentService
from bot.ingest import AlertIngest
from bot.store.base import AlertEvent, StoreUnavailable

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["MAX_ATTEMPTS", "AlertProcessor", "alert_webhook_route"]

log = structlog.get_logger(__name__)

# After this many failed attempts an alert is posted as received instead.
MAX_ATTEMPTS = 10


class AlertProcessor:
    """The alert inbox: stores webhook deliveries, then feeds them to the incident service."""

    def __init__(self, deps: Deps, incidents: IncidentService) -> None:
        self.deps = deps
        self.incidents = incidents
        self._wake = asyncio.Event()
        self.ingest = AlertIngest(deps.store, stored=self._wake.set)

    async def receive(self, batch: AlertBatch) -> int:
        """Store every alert of a delivery; only then may the webhook answer 200.

        Concurrent deliveries are committed together (``AlertIngest``); each
        returns once a commit holding its alerts, and a ping of the store after
        it, succeeded. The ping: a store deleted or replaced under the bot still
        takes writes, so only a store that is still there may be promised with a
        200. A 503 after a write that was kept makes Alertmanager send the alerts
        again; the repeat lands on the fingerprint's open incident
        (``incident_open_for``, and ``incident_open`` refuses a second one), so it
        opens no second thread.
        """
        if batch.alerts:
            await self.ingest.add(list(batch.alerts), received_at=self.deps.clock())
        else:
            await self.deps.store.ping()
        return len(batch.alerts)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, idle_s: float = 1.0) -> None:
        """Process stored alerts until cancelled; also escalate unacknowledged incidents."""
        while True:
            # Cleared before the pass, not after: alerts stored during it end the wait
            # below at once instead of waiting for the idle tick.
            self._wake.clear()
            try:
                worked = await self.process_once()
                if not worked:  # storm alerts another replica left unnamed, a late root
                    await self.incidents.flush_digests()
                await self.incidents.escalate_due()
            except StoreUnavailable as exc:
                log.error("alerts.store_unavailable", error=str(exc))
                worked = 0
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_s)

    async def process_once(self) -> int:
        """Handle one claimed batch; the handled events are marked done together.

        One commit for the batch rather than one per event: the inbox shares the
        store with the webhook, and each commit waits for the disk. An event
        handled but not yet marked done when the bot dies is handled again after
        its lease, as one whose handling was cut short always was. Storm alerts'
        names and resolutions go out (into the durable outbox) before the batch is
        marked done, so a crash in between hands them out again.
        """
        store = self.deps.store
        events = await store.alert_events_claim(now=self.deps.clock())
        done: list[int] = []
        # Fingerprint -> the repeats since its ``firing`` handled last in this batch: a
        # run of repeats of one alert (a flapping group) is one write, not one each.
        # Anything else of the fingerprint (a ``resolved``) ends the run first.
        runs: dict[str, list[AlertEvent]] = {}
        try:
            for event in events:
                run = runs.get(event.fingerprint)
                if run is not None and event.status == "firing":
                    run.append(event)
                    continue
                if run is not None:
                    del runs[event.fingerprint]
                    done += await self._repeated(run)
                if await self._handle(event):
                    done.append(event.id)
                    if event.status == "firing":
                        runs[event.fingerprint] = []
            for run in runs.values():
                done += await self._repeated(run)
        finally:
            if events:
                await self.incidents.flush_digests()
            await store.alert_events_done(done)
        return len(events)

    async def _repeated(self, run: list[AlertEvent]) -> list[int]:
        """Fold a run of repeats into its incident at once; the ids done with.

        If folding fails, each is handled on its own, with its own retries.
        """
        if not run:
            return []
        try:
            await self.incidents.repeated(run[-1], times=len(run))
        except Exception:
            log.exception("alerts.fold_failed", fingerprint=run[-1].fingerprint, events=len(run))
            return [event.id for event in run if await self._handle(event)]
        return [event.id for event in run]

    async def _handle(self, event: AlertEvent) -> bool:
        """Hand one event to the incident service; True when it is done with."""
        bound = log.bind(fingerprint=event.fingerprint, alert_status=event.status)
        try:
            await self.incidents.handle(event)
        except Exception as exc:
            attempts = event.attempts + 1
            bound.exception("alerts.process_failed", attempts=attempts)
            if attempts >= MAX_ATTEMPTS and await self.incidents.show_unprocessed(
                event, attempts=attempts, error=exc
            ):
                return True
            await self.deps.store.alert_event_retry(
                event.id, at=self.deps.clock() + timedelta(seconds=5), error=repr(exc)
            )
            return False
        return True


def alert_webhook_route(
    *, token: str, receive: Callable[[AlertBatch], Awaitable[int]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``POST /alerts/alertmanager``: bearer token, size, schema, stored, then 200.

    aiohttp's server side loads here, when the route is made (``serve``): the
    terminal commands use this module's inbox, never the webhook.
    """
    from aiohttp import web

    from bot.http import read_body

    def _error(status: int, reason: str) -> web.Response:
        return web.json_response({"status": "error", "error": reason}, status=status)

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
