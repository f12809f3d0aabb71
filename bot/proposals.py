"""Approvals as stored proposals: what a button carries, and how a proposal looks.

A procedure that wants to change something ends with ``run.propose``: the
proposal (action, arguments, target, thread, who may approve, expiry) is
written to the store and shown as a message with buttons that carry only the
proposal's id. A click claims it in the store, exactly once, and starts the
action; the proposing run has long finished by then.
"""

from __future__ import annotations

from datetime import datetime

from bot.messages import Button, Message, Status
from bot.store.base import Proposal

__all__ = [
    "APPROVE",
    "CANCEL",
    "proposal_message",
]

APPROVE = "proposal.approve"
CANCEL = "proposal.cancel"


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M UTC")


def proposal_message(
    p: Proposal,
    *,
    confirm_label: str,
    approvers: tuple[str, ...],
    note: str = "",
    needed: int = 1,
    approved_by: tuple[str, ...] = (),
) -> Message:
    """The proposal as the user sees it; with buttons only while it is pending.

    ``needed`` > 1: the proposal needs that many different approvers, and
    ``approved_by`` are those who clicked so far.
    """
    lines = [note] if note else []
    if needed > 1 and p.status == "pending":
        who = f": {', '.join(approved_by)}" if approved_by else ""
        lines.append(
            f"{len(approved_by)} of {needed} approvals{who}. Needs {needed} different approvers."
        )
    elif needed > 1 and approved_by:
        lines.append(f"Approvals: {', '.join(approved_by)}.")
    buttons: tuple[Button, ...] = ()
    status = Status.PENDING
    if p.status == "pending":
        if approvers:
            who = ", ".join(approvers)
            lines.append(f"Needs a click by an approver ({who}) before {_hhmm(p.expires_at)}.")
        else:
            lines.append(
                "Nobody can approve this yet: set SMS_APPROVERS to the user ids of "
                "the people who may approve changes, then restart the bot."
            )
        buttons = (
            Button(confirm_label, APPROVE, p.id, "danger"),
            Button("Cancel", CANCEL, p.id),
        )
    elif p.status == "approved":
        status = Status.RUNNING
        lines.append(f"Approved by {p.decided_by} at {_hhmm(p.decided_at or p.created_at)}.")
    elif p.status == "done":
        status = Status.OK
        lines.append(f"Approved by {p.decided_by}. Done: {p.result or 'ok'}")
    elif p.status == "failed":
        status = Status.FAILED
        lines.append(f"Approved by {p.decided_by}. Failed: {p.result or 'see the thread'}")
    elif p.status == "cancelled":
        status = Status.WARN
        lines.append(f"Cancelled by {p.decided_by}; nothing was changed.")
    elif p.status == "expired":
        status = Status.WARN
        lines.append(
            f"Expired at {_hhmm(p.expires_at)} without approval; nothing was changed. "
            "Run the command again for a new proposal."
        )
    return Message(
        title=f"Proposal: {p.summary}",
        status=status,
        text="\n".join(lines),
        buttons=buttons,
        footer=f"proposal {p.id[:8]} · requested by {p.requested_by}",
    )
