"""Button clicks: authorize, claim the stored proposal exactly once, run its action.

A click changes nothing unless the user may approve, the proposal is still
pending and not expired, and the claim in the store succeeds; every other
case gets a clear answer shown to the clicker only. Every click is audited.
Incident buttons (Acknowledge, Silence, Resolve) are operators' buttons
(``SMS_OPERATORS``; approvers are operators too), refused the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from bot.adapters.alertmanager import AlertmanagerError
from bot.catalogue import ActionArgsInvalid, ApprovedAction, Catalogue, Role
from bot.chat.base import ChatSurface
from bot.deps import Deps
from bot.engine import Engine
from bot.errors import NotAllowed
from bot.events import Click, Command
from bot.incidents import ACK, RESOLVE, SILENCE, SILENCE_HOURS, IncidentService
from bot.messages import Message, MessageRef, Status
from bot.proposals import APPROVE, CANCEL, proposal_message
from bot.store.base import Incident, Proposal
from bot.threads import ThreadRef
from handlers.auth import authorize
from procedures.catalogue import CATALOGUE

__all__ = ["ClickHandler"]

log = structlog.get_logger(__name__)


class ClickHandler:
    def __init__(
        self,
        deps: Deps,
        engine: Engine,
        *,
        incidents: IncidentService | None = None,
        catalogue: Catalogue = CATALOGUE,
        surfaces: Mapping[str, ChatSurface] | None = None,
    ) -> None:
        self.deps = deps
        self.engine = engine
        self.catalogue = catalogue
        # What Acknowledge, Silence and Resolve change; None where incidents are not handled.
        self.incidents = incidents
        # Surfaces by name, for a proposal whose thread lives on another surface than
        # the click's (an incident thread shown in Slack and Teams: ``FanOut``).
        self.surfaces: Mapping[str, ChatSurface] = dict(surfaces or {})

    async def handle(self, click: Click, surface: ChatSurface) -> str:
        """Handle one click; returns the audited outcome (for tests and logs)."""
        if click.action in (ACK, SILENCE, RESOLVE):
            return await self._incident_click(click, surface)
        if click.action not in (APPROVE, CANCEL):
            return await self._refuse(
                click, surface, "unknown_action", "This button is not known to this bot version."
            )
        proposal = await self.deps.store.proposal_get(click.value)
        action = self.catalogue.action(proposal.action) if proposal is not None else None
        if proposal is None or action is None:
            return await self._refuse(
                click, surface, "unknown_proposal", "This proposal does not exist (any more)."
            )
        try:
            authorize(
                click.user,
                click.source,
                Role.APPROVER if click.action == APPROVE else Role.OPERATOR,
                self.deps.settings,
            )
        except NotAllowed as exc:
            hint = (
                ""
                if self.deps.settings.sms_approvers
                else (" Nobody is configured as approver yet: set SMS_APPROVERS.")
            )
            return await self._refuse(click, surface, "refused", f"{exc}{hint}", proposal)

        now = self.deps.clock()
        if proposal.status == "pending" and proposal.expires_at <= now:
            for expired in await self.deps.store.proposal_expire_due(now=now):
                await self._show(surface, expired)
            return await self._refuse(
                click,
                surface,
                "expired",
                "This proposal has expired; nothing was changed. Run the command again.",
                proposal,
            )

        if click.action == CANCEL:
            cancelled = await self.deps.store.proposal_cancel(proposal.id, by=click.user, now=now)
            if cancelled is None:
                return await self._already(click, surface, proposal)
            await self._show(surface, cancelled)
            await self._audit(click, "cancelled", proposal)
            return "cancelled"

        # The stored JSON arguments become the action's typed arguments before anything runs.
        try:
            approved = action.approve(proposal.args)
        except ActionArgsInvalid as exc:
            return await self._refuse(
                click,
                surface,
                "bad_proposal",
                f"This proposal cannot be run by this bot version ({exc}). Run the command again.",
                proposal,
            )
        if approved.approvals > 1:
            return await self._approve_one_of(click, surface, proposal, approved)
        claimed = await self.deps.store.proposal_claim(proposal.id, by=click.user, now=now)
        if claimed is None:
            return await self._already(click, surface, proposal)
        await self._audit(click, "approved", claimed)
        await self._show(surface, claimed)
        await self._execute(claimed, approved, click, surface)
        return "approved"

    async def _approve_one_of(
        self, click: Click, surface: ChatSurface, proposal: Proposal, approved: ApprovedAction
    ) -> str:
        """A proposal needing several different approvers: count this click, or claim it.

        The store records the approval and, when it completes the count, claims
        the proposal in the same transaction: exactly once, on any replica.
        """
        needed = approved.approvals
        result = await self.deps.store.proposal_approve(
            proposal.id, by=click.user, now=self.deps.clock(), needed=needed
        )
        if result.outcome == "duplicate":
            return await self._refuse(
                click,
                surface,
                "duplicate_approver",
                f"You already approved this ({len(result.approvers)} of {needed} approvals); "
                "it needs a different approver.",
                proposal,
            )
        if result.outcome == "not_pending" or result.proposal is None:
            return await self._already(click, surface, proposal)
        if result.outcome == "recorded":
            await self._audit(click, "approval_recorded", proposal)
            await self._show(surface, result.proposal)
            thread = ThreadRef.decode(proposal.conversation)
            note = Message(
                title=f"{len(result.approvers)} of {needed} approvals: {click.user}",
                status=Status.PENDING,
                text=f"Nothing runs until {needed} different approvers have clicked.",
            )
            try:
                await surface.reply(thread.root, note)
            except Exception:
                log.exception("proposal.note_failed", proposal_id=proposal.id)
            return "recorded"
        claimed = result.proposal
        await self._audit(click, "approved", claimed)
        await self._show(surface, claimed)
        await self._execute(claimed, approved, click, surface)
        return "approved"

    async def _incident_click(self, click: Click, surface: ChatSurface) -> str:
        incident_id, _, arg = click.value.partition(":")
        incident = await self.deps.store.incident_get(incident_id)
        if incident is None:
            return await self._refuse(
                click, surface, "unknown_incident", "This incident does not exist (any more)."
            )
        # Acknowledge, Silence and Resolve change the incident (and Alertmanager): operators'
        # buttons, like restart. Anyone else is answered privately and nothing changes.
        try:
            authorize(click.user, click.source, Role.OPERATOR, self.deps.settings)
        except NotAllowed as exc:
            settings = self.deps.settings
            hint = (
                ""
                if settings.sms_operators or settings.sms_approvers
                else " Nobody is configured as operator yet: set SMS_OPERATORS."
            )
            return await self._refuse(click, surface, "refused", f"{exc}{hint}", incident=incident)
        if incident.status != "open":
            return await self._refuse(
                click, surface, "already_resolved", "This incident is already resolved."
            )
        if self.incidents is None:
            return await self._refuse(
                click, surface, "unavailable", "Incidents are not handled by this bot process."
            )
        if click.action == ACK:
            acked = await self.incidents.acknowledge(incident, by=click.user, surface=surface)
            if acked is None:
                current = await self.deps.store.incident_get(incident.id) or incident
                return await self._refuse(
                    click,
                    surface,
                    "already_acknowledged",
                    f"Already acknowledged by {current.acknowledged_by}.",
                    incident=incident,
                )
            await self._incident_audit(click, "acknowledged", acked)
            return "acknowledged"
        if click.action == RESOLVE:
            resolved = await self.incidents.resolve(incident, by=click.user, surface=surface)
            if resolved is None:
                return await self._refuse(
                    click, surface, "already_resolved", "This incident is already resolved."
                )
            return "resolved"
        return await self._silence(click, surface, incident, arg, self.incidents)

    async def _silence(
        self,
        click: Click,
        surface: ChatSurface,
        incident: Incident,
        arg: str,
        incidents: IncidentService,
    ) -> str:
        try:
            hours = int(arg)
        except ValueError:
            hours = 0
        if hours not in SILENCE_HOURS or not incident.labels:
            return await self._refuse(
                click,
                surface,
                "bad_silence",
                "This silence button is not valid.",
                incident=incident,
            )
        try:
            silence_id = await incidents.silence(
                incident, hours=hours, by=click.user, surface=surface
            )
        except AlertmanagerError as exc:
            return await self._refuse(
                click,
                surface,
                "silence_failed",
                f"Alertmanager did not create the silence: {exc}",
                incident=incident,
            )
        await self._incident_audit(
            click, "silenced", incident, {"silence_id": silence_id, "hours": hours}
        )
        return "silenced"

    async def _incident_audit(
        self,
        click: Click,
        outcome: str,
        incident: Incident,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        await self.deps.audit.record(
            at=self.deps.clock(),
            actor=click.user,
            source=click.source,
            action="click",
            target=incident.labels.get("alertname") or incident.title,
            outcome=outcome,
            conversation=click.conversation.channel,
            detail={"action": click.action, "incident_id": incident.id, **(extra or {})},
        )

    async def expire_due(self, surfaces: Mapping[str, ChatSurface]) -> int:
        """Expire proposals nobody clicked in time and take their buttons away."""
        expired = await self.deps.store.proposal_expire_due(now=self.deps.clock())
        for proposal in expired:
            surface = surfaces.get(ThreadRef.decode(proposal.conversation).conversation.surface)
            if surface is not None:
                await self._show(surface, proposal)
            await self.deps.audit.record(
                at=self.deps.clock(),
                actor="sms-bot",
                source="scheduler",
                action="proposal",
                target=proposal.summary,
                outcome="expired",
                detail={"proposal_id": proposal.id},
            )
        return len(expired)

    async def _execute(
        self, proposal: Proposal, approved: ApprovedAction, click: Click, surface: ChatSurface
    ) -> None:
        thread = ThreadRef.decode(proposal.conversation)
        surface = self.surfaces.get(thread.conversation.surface, surface)
        command = Command(
            text=f"{proposal.action} (proposal {proposal.id[:8]})",
            user=click.user,
            source=click.source,
            conversation=thread.conversation,
            proposal_id=proposal.id,
        )
        run = await self.engine.execute(
            approved.procedure,
            name=proposal.action,
            title=approved.title,
            command=command,
            surface=surface,
            parent=thread.root,
        )
        ok = run.status in (Status.OK, Status.WARN)
        result = run.text.splitlines()[0] if run.text else run.status.value
        status = "done" if ok else "failed"
        await self.deps.store.proposal_finish(proposal.id, status=status, result=result)
        await self.deps.audit.record(
            at=self.deps.clock(),
            actor=click.user,
            source=click.source,
            action=proposal.action,
            target=approved.target,
            outcome="ok" if ok else "failed",
            conversation=click.conversation.channel,
            detail={
                "proposal_id": proposal.id,
                "run_id": run.id,
                "result": result,
                "thread": thread.conversation.thread,
            },
        )
        finished = await self.deps.store.proposal_get(proposal.id)
        if finished is not None:
            await self._show(surface, finished)

    async def _show(self, surface: ChatSurface, proposal: Proposal) -> None:
        """Replace the proposal's message: buttons give way to what became of it."""
        thread = ThreadRef.decode(proposal.conversation)
        surface = self.surfaces.get(thread.conversation.surface, surface)
        needed = self._needed(proposal)
        approved_by = await self.deps.store.proposal_approvals(proposal.id) if needed > 1 else ()
        msg = proposal_message(
            proposal,
            confirm_label=self._confirm_label(proposal),
            approvers=self.deps.settings.sms_approvers,
            needed=needed,
            approved_by=approved_by,
        )
        try:
            await surface.update(MessageRef(thread.conversation, proposal.message_key), msg)
        except Exception:
            log.exception("proposal.update_failed", proposal_id=proposal.id)

    def _needed(self, proposal: Proposal) -> int:
        action = self.catalogue.action(proposal.action)
        try:
            return action.approve(proposal.args).approvals if action else 1
        except ActionArgsInvalid:
            return 1

    def _confirm_label(self, proposal: Proposal) -> str:
        action = self.catalogue.action(proposal.action)
        try:
            return action.approve(proposal.args).confirm_label if action else proposal.action
        except ActionArgsInvalid:
            return proposal.action

    async def _already(self, click: Click, surface: ChatSurface, proposal: Proposal) -> str:
        current = await self.deps.store.proposal_get(proposal.id) or proposal
        who = f" by {current.decided_by}" if current.decided_by else ""
        return await self._refuse(
            click,
            surface,
            "already_decided",
            f"This proposal was already {current.status}{who}; nothing more was done.",
            current,
        )

    async def _refuse(
        self,
        click: Click,
        surface: ChatSurface,
        outcome: str,
        text: str,
        proposal: Proposal | None = None,
        *,
        incident: Incident | None = None,
    ) -> str:
        if incident is not None:
            await self._incident_audit(click, outcome, incident)
        else:
            await self._audit(click, outcome, proposal)
        msg = Message(title="Nothing was changed", status=Status.WARN, text=text)
        await surface.ephemeral(click.conversation, click.user, msg)
        return outcome

    async def _audit(self, click: Click, outcome: str, proposal: Proposal | None) -> None:
        detail: dict[str, object] = {"action": click.action, "value": click.value}
        if proposal is not None:
            detail["proposal_action"] = proposal.action
            detail["args"] = dict(proposal.args)
            detail["thread"] = ThreadRef.decode(proposal.conversation).conversation.thread
        await self.deps.audit.record(
            at=self.deps.clock(),
            actor=click.user,
            source=click.source,
            action="click",
            target=proposal.summary if proposal else click.value,
            outcome=outcome,
            conversation=click.conversation.channel,
            detail=detail,
        )
