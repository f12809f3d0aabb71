"""``ThreadRef``: one type and one codec for where incidents, digests and proposals live."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bot.deps import Deps
from bot.engine import Engine
from bot.incidents import IncidentService, in_digest
from bot.messages import Conversation, Message, MessageRef, Status
from bot.threads import ThreadRef
from procedures.catalogue import CATALOGUE
from tests.fakes import NOW, FakeSurface
from tests.store_contract import make_incident
from tests.unit.conftest import make_settings

# As the code before ThreadRef wrote them (``encode_thread`` and the hand-patched digest flag).
OLD_INCIDENT = '{"channel": "C0ALERTS", "reply_url": null, "root": "1700.01", "surface": "slack", "thread": null}'  # noqa: E501
OLD_DIGEST_MEMBER = '{"channel": "C0ALERTS", "digest": true, "reply_url": null, "root": "1700.02", "surface": "slack", "thread": null}'  # noqa: E501
OLD_PROPOSAL = '{"channel": "C1", "reply_url": "https://hooks.slack.test/r/1", "root": "run-7", "surface": "slack", "thread": "1700.03"}'  # noqa: E501


def test_old_rows_decode() -> None:
    incident = ThreadRef.decode(OLD_INCIDENT)
    assert incident.root == MessageRef(Conversation("slack", "C0ALERTS"), "1700.01")
    assert not incident.is_reply and not incident.legacy_digest

    member = ThreadRef.decode(OLD_DIGEST_MEMBER)
    assert member.root_key == "1700.02" and member.legacy_digest

    proposal = ThreadRef.decode(OLD_PROPOSAL)
    assert proposal.is_reply
    assert proposal.conversation == Conversation(
        "slack", "C1", thread="1700.03", reply_url="https://hooks.slack.test/r/1"
    )
    assert proposal.root_key == "run-7"


def test_encoding_is_the_stored_format_and_round_trips() -> None:
    """Old code reading a new row (a replica not yet upgraded) finds what it always wrote."""
    assert ThreadRef.decode(OLD_INCIDENT).encode() == OLD_INCIDENT
    assert ThreadRef.decode(OLD_PROPOSAL).encode() == OLD_PROPOSAL
    # The digest flag is not written again: the store's digest_id column says it now.
    assert "digest" not in json.loads(ThreadRef.decode(OLD_DIGEST_MEMBER).encode())
    ref = MessageRef(Conversation("console", "", thread="t1"), "m1")
    assert ThreadRef.decode(ThreadRef.of(ref).encode()).root == ref


def test_in_digest_reads_the_column_and_old_rows() -> None:
    own = replace(make_incident(), root_key="1700.01", conversation=OLD_INCIDENT)
    assert not in_digest(own)
    assert in_digest(replace(own, digest_id="d1"))
    assert in_digest(replace(own, conversation=OLD_DIGEST_MEMBER))  # before migration 6


async def test_an_old_digest_member_resolves_in_the_digest_thread(
    deps: Deps, tmp_path: Path
) -> None:
    """A row written before migration 6 keeps its look: a reply, its root not overwritten."""
    deps = replace(deps, settings=make_settings(tmp_path, sms_incidents_dir=str(tmp_path / "i")))
    surface = FakeSurface()
    root = await surface.post(
        Conversation(surface.name, "C0ALERTS"), Message(title="Alert storm", status=Status.CRIT)
    )
    incident = await deps.store.incident_open(replace(make_incident(), opened_at=NOW))
    assert incident is not None
    old = OLD_DIGEST_MEMBER.replace('"slack"', f'"{surface.name}"').replace("1700.02", root.id)
    await deps.store.incident_set_thread(incident.id, root_key=root.id, conversation=old)
    service = IncidentService(
        deps, Engine(deps), catalogue=CATALOGUE, surface=surface, channel="C0ALERTS"
    )
    stored = await deps.store.incident_get(incident.id)
    assert stored is not None
    assert await service.resolve(stored, by="alertmanager") is not None
    await service.flush_digests()  # announced with the others of its batch
    assert surface.last(root.id).title == "Alert storm"  # the digest's root is left as it is
    assert surface.replies()[-1].title == "Resolved (1): BackendDown"
