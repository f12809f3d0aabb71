"""AlertmanagerClient against a real Alertmanager, and the harness delivering real webhooks.

The adapter tests pin the v2 API as Alertmanager actually speaks it (time
formats, error bodies, the 500 it answers for an unknown silence). The
delivery test proves the harness is worth building on: a real Alertmanager
sends the bot's receiver firing, repeat and resolved notifications, with the
bearer token, in the webhook's version 4 format.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.adapters.alertmanager import (
    AlertmanagerClient,
    AlertmanagerRejected,
    AlertmanagerUnavailable,
    SilenceNotFound,
)
from tests.harness.alertmanager import (
    RECEIVER,
    AlertmanagerFactory,
    AlertmanagerInstance,
    alertmanager_binary,
    alertmanager_factory,  # noqa: F401  (fixture; tests/conftest.py may not load the plugin yet)
    running_alertmanager,
)
from tests.harness.docker import free_port, wait_until

pytestmark = pytest.mark.integration

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
TOKEN = "test-token-not-a-secret"


@dataclass
class WebhookReceiver:
    """Stands in for the bot's ``POST /alerts/alertmanager``: answers 200, keeps everything."""

    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/alerts/alertmanager", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        self.requests.append((request.headers.get("Authorization", ""), await request.json()))
        return web.Response(text="ok")

    def payloads(self, status: str | None = None) -> list[dict[str, Any]]:
        return [p for _, p in self.requests if status is None or p["status"] == status]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[AlertmanagerInstance]:
    """An Alertmanager whose notifications go nowhere: these tests look at its API only."""
    async with running_alertmanager(
        webhook_url=f"http://127.0.0.1:{free_port()}/alerts/alertmanager",
        token=TOKEN,
        workdir=tmp_path / "am",
        group_wait="1h",
        group_interval="1h",
        repeat_interval="1h",
    ) as instance:
        yield instance


@pytest.fixture
def client(
    alertmanager: AlertmanagerInstance, session: aiohttp.ClientSession
) -> AlertmanagerClient:
    return AlertmanagerClient(alertmanager.url, session)


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": "critical", **labels},
        "annotations": {"summary": f"{name} on {labels.get('instance', '?')}"},
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
    }


async def test_ping_answers_when_ready(client: AlertmanagerClient) -> None:
    await client.ping()


async def test_silence_is_created_listed_and_expired(client: AlertmanagerClient) -> None:
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the API keeps milliseconds
    instance = f"backend-{uuid.uuid4().hex[:6]}"
    silence_id = await client.create_silence(
        matchers={"alertname": "BackendDown", "instance": instance},
        starts_at=now,
        ends_at=now + timedelta(hours=2),
        created_by="U123 (via sms-bot)",
        comment="planned restart",
    )

    [silence] = await client.silences()
    assert silence.id == silence_id
    assert dict(silence.matchers) == {"alertname": "BackendDown", "instance": instance}
    assert silence.other_matchers == ()
    assert silence.state == "active"
    assert silence.created_by == "U123 (via sms-bot)"
    assert silence.comment == "planned restart"
    assert silence.ends_at == now + timedelta(hours=2)
    assert silence.starts_at.tzinfo is not None
    assert client.silence_url(silence_id) == f"{client.base_url}/#/silences/{silence_id}"

    await client.expire_silence(silence_id)
    assert await client.silences() == []
    [expired] = await client.silences(active_only=False)
    assert (expired.id, expired.state) == (silence_id, "expired")
    # Expiring twice is harmless: a double click in chat must not show an error.
    await client.expire_silence(silence_id)


async def test_silence_ending_before_it_starts_is_rejected_with_the_reason(
    client: AlertmanagerClient,
) -> None:
    now = datetime.now(UTC)
    with pytest.raises(AlertmanagerRejected) as info:
        await client.create_silence(
            matchers={"alertname": "BackendDown"},
            starts_at=now,
            ends_at=now - timedelta(minutes=5),
            created_by="U123",
            comment="typo in duration",
        )
    assert info.value.status == 400
    assert "start time must be before end time" in info.value.reason
    assert "start time must be before end time" in str(info.value)
    assert await client.silences(active_only=False) == []


async def test_expiring_an_unknown_silence_says_so(client: AlertmanagerClient) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(SilenceNotFound) as info:
        await client.expire_silence(unknown)
    assert unknown in str(info.value)
    with pytest.raises(AlertmanagerRejected) as bad_id:
        await client.expire_silence("not-a-uuid")
    assert bad_id.value.status == 422


async def test_posted_alert_is_listed_and_hidden_once_silenced(
    client: AlertmanagerClient,
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=3)
    await client.post_alerts(
        [
            {**_alert("HighErrorRate", instance="backend:8080"), "startsAt": started},
            _alert("SlowResponses", instance="backend:8080", quote='say "hi"\\'),
        ]
    )

    [alert] = await client.alerts(filters={"alertname": "HighErrorRate"})
    assert alert.labels["instance"] == "backend:8080"
    assert alert.annotations["summary"] == "HighErrorRate on backend:8080"
    assert alert.generator_url == "http://prometheus.example:9090/graph?g0.expr=up"
    assert alert.state == "active"
    assert abs(alert.starts_at - started) < timedelta(milliseconds=1)
    assert alert.ends_at > datetime.now(UTC)  # resolve_timeout ahead: still firing
    assert len(alert.fingerprint) == 16
    # Filter values are escaped: quotes and backslashes match literally.
    [quoted] = await client.alerts(filters={"quote": 'say "hi"\\'})
    assert quoted.labels["alertname"] == "SlowResponses"
    assert {a.labels["alertname"] for a in await client.alerts()} == {
        "HighErrorRate",
        "SlowResponses",
    }

    now = datetime.now(UTC)
    silence_id = await client.create_silence(
        matchers={"alertname": "HighErrorRate"},
        starts_at=now,
        ends_at=now + timedelta(hours=1),
        created_by="U123",
        comment="known issue",
    )

    async def silenced() -> bool:
        return [a.labels["alertname"] for a in await client.alerts()] == ["SlowResponses"]

    await wait_until(silenced, timeout=10, what="HighErrorRate to drop out of the active alerts")
    [muted] = await client.alerts(
        active=False, silenced=True, filters={"alertname": "HighErrorRate"}
    )
    assert muted.state == "suppressed"
    assert muted.silenced_by == (silence_id,)


async def test_alert_without_labels_is_rejected(client: AlertmanagerClient) -> None:
    with pytest.raises(AlertmanagerRejected) as info:
        await client.post_alerts([{"labels": {}}])
    assert info.value.status == 400
    assert "label" in info.value.reason


async def test_closed_port_is_unavailable(session: aiohttp.ClientSession) -> None:
    client = AlertmanagerClient(f"http://127.0.0.1:{free_port()}", session, timeout=2)
    with pytest.raises(AlertmanagerUnavailable, match="connection refused") as info:
        await client.silences()
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
    with pytest.raises(AlertmanagerUnavailable, match="connection refused"):
        await client.ping()


def test_missing_binary_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus-alertmanager"):
        alertmanager_binary()


async def test_config_alertmanager_refuses_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="group_interval cannot be zero"):
        async with running_alertmanager(
            webhook_url="http://127.0.0.1:9/alerts",
            token=TOKEN,
            workdir=tmp_path / "am",
            group_interval="0s",
        ):
            pytest.fail("alertmanager started with a zero group_interval")


async def _notified(
    receiver: WebhookReceiver, am: AlertmanagerInstance, status: str, count: int
) -> None:
    """Wait for the ``count``-th ``status`` notification; on timeout show Alertmanager's log."""

    async def arrived() -> bool:
        return len(receiver.payloads(status)) >= count

    try:
        await wait_until(arrived, timeout=10, what=f"{status} notification #{count}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nalertmanager log:\n{am.log_tail()}") from exc


async def test_harness_delivers_firing_repeat_and_resolved_with_the_token(
    alertmanager_factory: AlertmanagerFactory,  # noqa: F811  (the fixture imported above)
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
) -> None:
    receiver = WebhookReceiver()
    server = await aiohttp_server(receiver.app())
    am = await alertmanager_factory(
        webhook_url=str(server.make_url("/alerts/alertmanager")), token=TOKEN
    )
    client = AlertmanagerClient(am.url, session)
    alert = _alert("BackendDown", instance="docker-backend-1")
    await client.post_alerts([alert])

    await _notified(receiver, am, "firing", 1)
    authorization, first = receiver.requests[0]
    assert authorization == f"Bearer {TOKEN}"
    assert first["version"] == "4"
    assert first["receiver"] == RECEIVER
    assert first["status"] == "firing"
    assert first["groupLabels"] == {"alertname": "BackendDown", "instance": "docker-backend-1"}
    assert first["externalURL"]
    [fired] = first["alerts"]
    assert fired["status"] == "firing"
    assert fired["labels"] == alert["labels"]
    assert fired["annotations"] == alert["annotations"]
    assert fired["generatorURL"] == alert["generatorURL"]
    fingerprint = fired["fingerprint"]
    assert fingerprint

    await _notified(receiver, am, "firing", 2)
    repeat = receiver.payloads("firing")[1]
    assert repeat["groupKey"] == first["groupKey"]
    assert [a["fingerprint"] for a in repeat["alerts"]] == [fingerprint]

    await client.post_alerts([{**alert, "endsAt": datetime.now(UTC)}])

    await _notified(receiver, am, "resolved", 1)
    [done] = receiver.payloads("resolved")[0]["alerts"]
    assert done["status"] == "resolved"
    assert done["fingerprint"] == fingerprint
    assert datetime.fromisoformat(done["endsAt"]) <= datetime.now(UTC)
    assert {auth for auth, _ in receiver.requests} == {f"Bearer {TOKEN}"}
