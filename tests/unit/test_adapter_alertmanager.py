"""AlertmanagerClient against a fake Alertmanager v2 API on loopback.

The fake answers with the shapes the real API uses, including its error
bodies: a JSON string for a refused silence, go-swagger's ``{"code",
"message"}`` for a schema violation, 500 "silence not found" (0.25) and 404
(later versions) for an unknown silence, plus hangs and 5xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.adapters.alertmanager import (
    AlertmanagerClient,
    AlertmanagerError,
    AlertmanagerRejected,
    AlertmanagerUnavailable,
    SilenceNotFound,
)
from bot.errors import AdapterError
from tests.harness.docker import free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
SILENCE_ID = "6a2e1d7c-3b1f-4f6e-9c1e-0d6f1c2b3a4e"


def _silence(state: str, *matchers: dict[str, Any], sid: str = SILENCE_ID) -> dict[str, Any]:
    return {
        "id": sid,
        "status": {"state": state},
        "updatedAt": "2026-02-01T07:30:00.000Z",
        "comment": "planned restart",
        "createdBy": "U123",
        "startsAt": "2026-02-01T07:30:00.123456789Z",
        "endsAt": "2026-02-01T09:30:00Z",
        "matchers": list(matchers),
    }


def _matcher(name: str, value: str, *, regex: bool = False, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


ALERT = {
    "annotations": {"summary": "Backend is down"},
    "endsAt": "2026-02-01T07:35:00.000Z",
    "fingerprint": "290b11ab2e1a7e3e",
    "receivers": [{"name": "sms-bot"}],
    "startsAt": "2026-02-01T07:30:00.000Z",
    "status": {"inhibitedBy": [], "silencedBy": [SILENCE_ID], "state": "suppressed"},
    "updatedAt": "2026-02-01T07:30:00.000Z",
    "generatorURL": "http://prometheus:9090/graph",
    "labels": {"alertname": "BackendDown", "severity": "critical"},
}


class FakeAlertmanager:
    """Answers each (method, path) from ``answers`` as (HTTP status, body); records requests.

    A body that is a ``str`` is sent as text, anything else as JSON; the string
    ``"hang"`` waits (bounded) until the test releases it.
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[tuple[str, str, list[tuple[str, str]], Any]] = []
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        body = json.loads(raw) if raw else None
        # The raw path, as sent: what matters is which endpoint the bytes would reach.
        path = request.raw_path.partition("?")[0]
        self.requests.append((request.method, path, list(request.query.items()), body))
        status, answer = self.answers.get((request.method, path), (404, "404 not found"))
        if answer == "hang":
            await asyncio.wait_for(self.release.wait(), timeout=5)
        if isinstance(answer, str):
            return web.Response(status=status, text=answer)
        return web.json_response(answer, status=status)


@pytest.fixture
async def fake() -> FakeAlertmanager:
    return FakeAlertmanager()


@pytest.fixture
async def server(fake: FakeAlertmanager, aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(fake.app())


@pytest.fixture
async def client(fake: FakeAlertmanager, server: TestServer) -> AsyncIterator[AlertmanagerClient]:
    async with aiohttp.ClientSession() as session:
        yield AlertmanagerClient(str(server.make_url("/")), session, timeout=0.5)
    fake.release.set()


async def test_create_silence_sends_equality_matchers_and_utc_times(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["POST", "/api/v2/silences"] = (200, {"silenceID": SILENCE_ID})
    paris = timezone(timedelta(hours=1))

    silence_id = await client.create_silence(
        matchers={"alertname": "BackendDown", "instance": "docker-backend-1"},
        starts_at=datetime(2026, 2, 1, 8, 30, 0, 123456, tzinfo=paris),
        ends_at=datetime(2026, 2, 1, 9, 30),  # naive: taken as UTC
        created_by="U123",
        comment="planned restart",
    )

    assert silence_id == SILENCE_ID
    [(method, path, _, body)] = fake.requests
    assert (method, path) == ("POST", "/api/v2/silences")
    assert body == {
        "matchers": [
            {"name": "alertname", "value": "BackendDown", "isRegex": False, "isEqual": True},
            {"name": "instance", "value": "docker-backend-1", "isRegex": False, "isEqual": True},
        ],
        "startsAt": "2026-02-01T07:30:00.123Z",
        "endsAt": "2026-02-01T09:30:00.000Z",
        "createdBy": "U123",
        "comment": "planned restart",
    }


async def test_a_silence_without_matchers_is_never_sent(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="at least one label"):
        await client.create_silence(
            matchers={}, starts_at=now, ends_at=now, created_by="U1", comment=""
        )
    assert fake.requests == []


async def test_refused_silence_carries_alertmanagers_reason(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["POST", "/api/v2/silences"] = (
        400,
        "Failed to create silence: start time must be before end time",
    )
    now = datetime.now(UTC)
    with pytest.raises(AlertmanagerRejected) as info:
        await client.create_silence(
            matchers={"alertname": "X"},
            starts_at=now,
            ends_at=now - timedelta(hours=1),
            created_by="U1",
            comment="",
        )
    assert info.value.status == 400
    assert info.value.reason == "Failed to create silence: start time must be before end time"
    assert str(info.value) == (
        "Alertmanager refused to create the silence: "
        "Failed to create silence: start time must be before end time"
    )
    assert isinstance(info.value, AdapterError)


async def test_schema_error_message_is_unwrapped(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["POST", "/api/v2/alerts"] = (
        422,
        {"code": 612, "message": "labels in body is required"},
    )
    with pytest.raises(AlertmanagerRejected) as info:
        await client.post_alerts([{"annotations": {}}])
    assert (info.value.status, info.value.reason) == (422, "labels in body is required")


async def test_create_silence_answer_without_id_is_an_error(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["POST", "/api/v2/silences"] = (200, {})
    now = datetime.now(UTC)
    with pytest.raises(AlertmanagerError, match="did not say its id"):
        await client.create_silence(
            matchers={"a": "b"}, starts_at=now, ends_at=now, created_by="U1", comment=""
        )


async def test_expire_silence_deletes_by_quoted_id(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["DELETE", f"/api/v2/silence/{SILENCE_ID}"] = (200, "")
    await client.expire_silence(SILENCE_ID)
    # An id with path characters stays one path segment instead of reaching another endpoint.
    with pytest.raises(AlertmanagerRejected):
        await client.expire_silence("../silences")
    assert [(m, p) for m, p, _, _ in fake.requests] == [
        ("DELETE", f"/api/v2/silence/{SILENCE_ID}"),
        ("DELETE", "/api/v2/silence/..%2Fsilences"),
    ]


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, "silence not found"), (404, "")],
    ids=["alertmanager-0.25", "later-versions"],
)
async def test_expiring_an_unknown_silence_is_not_an_outage(
    fake: FakeAlertmanager, client: AlertmanagerClient, status: int, body: str
) -> None:
    fake.answers["DELETE", f"/api/v2/silence/{SILENCE_ID}"] = (status, body)
    with pytest.raises(SilenceNotFound, match=f"no silence with id '{SILENCE_ID}'") as info:
        await client.expire_silence(SILENCE_ID)
    assert info.value.status == status
    assert isinstance(info.value, AlertmanagerRejected)


async def test_silences_are_parsed_and_filtered_to_active(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["GET", "/api/v2/silences"] = (
        200,
        [
            _silence(
                "active",
                _matcher("alertname", "BackendDown"),
                _matcher("instance", "web.*", regex=True),
                _matcher("env", "dev", equal=False),
            ),
            _silence("expired", _matcher("alertname", "Old"), sid="old"),
            _silence("pending", _matcher("alertname", "Later"), sid="later"),
        ],
    )

    [active] = await client.silences()

    assert active.id == SILENCE_ID
    assert dict(active.matchers) == {"alertname": "BackendDown"}
    assert active.other_matchers == ('instance=~"web.*"', 'env!="dev"')
    assert active.starts_at == datetime(2026, 2, 1, 7, 30, 0, 123456, tzinfo=UTC)
    assert active.ends_at == datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
    assert (active.created_by, active.comment, active.state) == (
        "U123",
        "planned restart",
        "active",
    )
    every = await client.silences(active_only=False)
    assert [(s.id, s.state) for s in every] == [
        (SILENCE_ID, "active"),
        ("old", "expired"),
        ("later", "pending"),
    ]


async def test_unreadable_silence_list_is_an_error_not_an_empty_list(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["GET", "/api/v2/silences"] = (200, [{"id": "x"}])
    with pytest.raises(AlertmanagerError, match="cannot read") as info:
        await client.silences()
    assert isinstance(info.value.__cause__, KeyError)
    fake.answers["GET", "/api/v2/silences"] = (200, "<html>proxy login</html>")
    with pytest.raises(AlertmanagerError, match="not JSON") as not_json:
        await client.silences()
    assert not isinstance(not_json.value, AlertmanagerUnavailable)


async def test_alerts_sends_flags_and_escaped_filters(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["GET", "/api/v2/alerts"] = (200, [ALERT])

    [alert] = await client.alerts(
        silenced=True, filters={"alertname": "BackendDown", "path": 'C:\\ "x"'}
    )

    [(_, _, query, _)] = fake.requests
    assert query == [
        ("active", "true"),
        ("silenced", "true"),
        ("inhibited", "false"),
        ("filter", 'alertname="BackendDown"'),
        ("filter", 'path="C:\\\\ \\"x\\""'),
    ]
    assert alert.fingerprint == "290b11ab2e1a7e3e"
    assert dict(alert.labels) == {"alertname": "BackendDown", "severity": "critical"}
    assert dict(alert.annotations) == {"summary": "Backend is down"}
    assert alert.starts_at == datetime(2026, 2, 1, 7, 30, tzinfo=UTC)
    assert alert.ends_at == datetime(2026, 2, 1, 7, 35, tzinfo=UTC)
    assert alert.state == "suppressed"
    assert alert.generator_url == "http://prometheus:9090/graph"
    assert alert.silenced_by == (SILENCE_ID,)
    assert alert.inhibited_by == ()


async def test_bad_filter_is_rejected(fake: FakeAlertmanager, client: AlertmanagerClient) -> None:
    fake.answers["GET", "/api/v2/alerts"] = (400, '"bad matcher format: x"')
    with pytest.raises(AlertmanagerRejected, match="bad matcher format"):
        await client.alerts(filters={"x": "y"})


async def test_post_alerts_sends_datetimes_as_rfc3339(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["POST", "/api/v2/alerts"] = (200, "")
    await client.post_alerts(
        [{"labels": {"alertname": "X"}, "endsAt": datetime(2026, 2, 1, 7, 30, tzinfo=UTC)}]
    )
    [(_, _, _, body)] = fake.requests
    assert body == [{"labels": {"alertname": "X"}, "endsAt": "2026-02-01T07:30:00.000Z"}]


async def test_post_alerts_refuses_values_json_cannot_carry(client: AlertmanagerClient) -> None:
    with pytest.raises(TypeError, match="cannot send set"):
        await client.post_alerts([{"labels": {"alertname": "X"}, "extra": {1}}])


@pytest.mark.parametrize(
    ("status", "body"), [(500, "internal error"), (503, "<html>Bad Gateway</html>")]
)
async def test_server_errors_are_unavailable(
    fake: FakeAlertmanager, client: AlertmanagerClient, status: int, body: str
) -> None:
    fake.answers["GET", "/api/v2/silences"] = (status, body)
    with pytest.raises(AlertmanagerUnavailable, match=f"failed to list silences \\(HTTP {status}"):
        await client.silences()


async def test_ping(fake: FakeAlertmanager, client: AlertmanagerClient) -> None:
    fake.answers["GET", "/-/ready"] = (200, "OK")
    await client.ping()
    fake.answers["GET", "/-/ready"] = (503, "not ready")
    with pytest.raises(AlertmanagerUnavailable, match="not ready"):
        await client.ping()


async def test_hung_alertmanager_times_out(
    fake: FakeAlertmanager, client: AlertmanagerClient
) -> None:
    fake.answers["GET", "/api/v2/alerts"] = (200, "hang")
    with pytest.raises(AlertmanagerUnavailable, match=r"no answer within 0\.5 s") as info:
        await client.alerts()
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        client = AlertmanagerClient(url, session, timeout=2)
        with pytest.raises(AlertmanagerUnavailable) as info:
            await client.ping()
    assert str(info.value) == f"Alertmanager at {url}: connection refused"
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_silence_url_points_at_the_ui() -> None:
    async with aiohttp.ClientSession() as session:
        client = AlertmanagerClient("http://alertmanager:9093/", session)
    assert client.base_url == "http://alertmanager:9093"
    assert client.silence_url(SILENCE_ID) == f"http://alertmanager:9093/#/silences/{SILENCE_ID}"
