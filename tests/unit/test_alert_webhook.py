"""The Alertmanager webhook at the edge: token, size, schema, routing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.alerts import AlertBatch, WebhookInvalid, parse_webhook
from bot.config import parse_routes
from bot.deps import Deps
from bot.engine import Engine
from bot.errors import ConfigError
from bot.incidents import IncidentService
from bot.routing import route_alert
from bot.store.base import StoreUnavailable
from handlers.alerts import AlertProcessor, alert_webhook_route
from handlers.registry import check_routes
from procedures.catalogue import CATALOGUE
from tests.fakes import FakeSurface

TOKEN = "webhook-token"


def alert(name: str = "BackendDown", status: str = "firing", fp: str = "fp1", **labels: str):
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} happened"},
        "startsAt": "2026-11-26T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fp,
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="BackendDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "sms-bot",
        "groupLabels": {"alertname": "BackendDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def test_parse_a_real_shaped_payload() -> None:
    batch = parse_webhook(json.dumps(payload(alert(), alert("HighCPU", fp="fp2"))).encode())
    assert batch.receiver == "sms-bot" and len(batch.alerts) == 2
    first = batch.alerts[0]
    assert (first.fingerprint, first.status, first.name) == ("fp1", "firing", "BackendDown")
    assert first.summary == "BackendDown happened"
    assert first.starts_at is not None and first.starts_at.tzinfo is not None
    assert first.ends_at is None  # Alertmanager's zero time means "no end"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"[]", "body is not a JSON object"),
        (json.dumps({**payload(alert()), "version": "3"}).encode(), "version"),
        (
            json.dumps({k: v for k, v in payload(alert()).items() if k != "alerts"}).encode(),
            "alerts",
        ),
        (json.dumps(payload({**alert(), "status": "weird"})).encode(), "alerts.0.status"),
        (
            json.dumps(payload({k: v for k, v in alert().items() if k != "fingerprint"})).encode(),
            "alerts.0.fingerprint",
        ),
        (json.dumps(payload({**alert(), "labels": "x"})).encode(), "alerts.0.labels"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
    ],
)
def test_bad_payloads_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookInvalid) as info:
        parse_webhook(body)
    assert reason in str(info.value)


def test_default_routes_follow_the_runbook() -> None:
    batch = parse_webhook(
        json.dumps(
            payload(
                alert("BackendDown"),
                alert("SlowResponses", fp="2"),
                alert("HighErrorRate", fp="3"),
                alert("DiskSpace", fp="4", severity="critical"),
                alert("Whatever", fp="5", priority="P0"),
                alert("Quiet", fp="6"),
            )
        ).encode()
    )
    routes = [route_alert(a, (), CATALOGUE.routes()) for a in batch.alerts]
    assert [(r.procedure, r.priority) for r in routes] == [
        ("backend_down", "P0"),
        ("slow_responses", "P1"),
        ("high_error_rate", "P2"),
        ("", "P1"),
        ("", "P0"),
        ("", "P3"),
    ]


def test_configured_routes_come_first() -> None:
    rules = parse_routes(
        '[{"alertname": "DiskSpace", "procedure": "backend_down", "priority": "P0"},'
        ' {"alertname": "BackendDown", "severity": "warning", "procedure": "", "priority": "P2"}]'
    )
    disk = parse_webhook(json.dumps(payload(alert("DiskSpace"))).encode()).alerts[0]
    assert route_alert(disk, rules).procedure == "backend_down"
    warn = parse_webhook(
        json.dumps(payload(alert("BackendDown", severity="warning"))).encode()
    ).alerts[0]
    assert (route_alert(warn, rules).procedure, route_alert(warn, rules).priority) == ("", "P2")
    crit = parse_webhook(
        json.dumps(payload(alert("BackendDown", severity="critical"))).encode()
    ).alerts[0]
    assert route_alert(crit, rules, CATALOGUE.routes()).procedure == "backend_down"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"alertname": "x"}',
        '[{"alertname": "x"}]',
        '[{"alertname": "x", "procedure": "", "priority": "P9"}]',
    ],
)
def test_bad_routes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_routes(raw)


def test_routes_to_a_procedure_the_catalogue_lacks_are_refused(tmp_path: Path) -> None:
    from tests.unit.conftest import make_settings

    raw = '[{"alertname": "x", "procedure": "reboot_world", "priority": "P1"}]'
    settings = make_settings(tmp_path, sms_alert_routes=raw)
    with pytest.raises(ConfigError, match="SMS_ALERT_ROUTES: rule 1: unknown procedure"):
        check_routes(settings, CATALOGUE)
    fine = make_settings(
        tmp_path, sms_alert_routes='[{"alertname": "x", "procedure": "", "priority": "P1"}]'
    )
    check_routes(fine, CATALOGUE)


async def _client(aiohttp_client: Any, receive: Any, token: str = TOKEN) -> Any:
    app = web.Application()
    app.router.add_post("/alerts/alertmanager", alert_webhook_route(token=token, receive=receive))
    return await aiohttp_client(app)


async def test_webhook_stores_then_answers(aiohttp_client: Any) -> None:
    stored: list[AlertBatch] = []

    async def receive(batch: AlertBatch) -> int:
        stored.append(batch)
        return len(batch.alerts)

    client = await _client(aiohttp_client, receive)
    resp = await client.post(
        "/alerts/alertmanager",
        json=payload(*(alert(fp=f"fp{i}") for i in range(1000))),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status == 200
    assert await resp.json() == {"status": "stored", "alerts": 1000}
    assert len(stored[0].alerts) == 1000


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({}, payload(alert()), 401, "bearer token"),
        ({"Authorization": "Bearer wrong"}, payload(alert()), 401, "bearer token"),
        ({"Authorization": TOKEN}, payload(alert()), 401, "bearer token"),
        ({"Authorization": f"Bearer {TOKEN}"}, "{oops", 400, "not JSON"),
        ({"Authorization": f"Bearer {TOKEN}"}, {"version": "4"}, 400, "v4 webhook"),
        ({"Authorization": f"Bearer {TOKEN}"}, "[" * 100_000, 400, "nested too deeply"),
    ],
)
async def test_webhook_refuses_bad_input(
    aiohttp_client: Any, headers: dict[str, str], body: Any, status: int, reason: str
) -> None:
    calls: list[AlertBatch] = []

    async def receive(batch: AlertBatch) -> int:
        calls.append(batch)
        return 0

    client = await _client(aiohttp_client, receive)
    data = body if isinstance(body, str) else json.dumps(body)
    resp = await client.post("/alerts/alertmanager", data=data, headers=headers)
    assert resp.status == status
    assert reason in (await resp.json())["error"]
    assert calls == []


async def test_a_10_mb_body_is_too_large(aiohttp_client: Any) -> None:
    async def receive(batch: AlertBatch) -> int:
        raise AssertionError("must not be called")

    client = await _client(aiohttp_client, receive)
    resp = await client.post(
        "/alerts/alertmanager",
        data=b"x" * (10 * 1024 * 1024),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status == 413


async def test_no_token_configured_means_no_webhook(aiohttp_client: Any) -> None:
    async def receive(batch: AlertBatch) -> int:
        raise AssertionError("must not be called")

    client = await _client(aiohttp_client, receive, token="")
    resp = await client.post(
        "/alerts/alertmanager", json=payload(alert()), headers={"Authorization": "Bearer "}
    )
    assert resp.status == 401
    assert "ALERT_WEBHOOK_TOKEN" in (await resp.json())["error"]


async def test_a_store_outage_is_a_503_so_alertmanager_retries(aiohttp_client: Any) -> None:
    async def receive(batch: AlertBatch) -> int:
        raise StoreUnavailable("database is down")

    client = await _client(aiohttp_client, receive)
    resp = await client.post(
        "/alerts/alertmanager", json=payload(alert()), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 503


def _incidents(deps: Deps, surface: FakeSurface) -> IncidentService:
    return IncidentService(
        deps, Engine(deps), catalogue=CATALOGUE, surface=surface, channel="#sms-alerts"
    )


async def test_a_state_file_deleted_under_the_bot_is_a_503_not_a_promise(
    aiohttp_client: Any, deps: Deps, tmp_path: Path
) -> None:
    """The write still succeeds, into a file that is gone: only the check after it tells."""
    processor = AlertProcessor(deps, _incidents(deps, FakeSurface()))
    client = await _client(aiohttp_client, processor.receive)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.post("/alerts/alertmanager", json=payload(alert()), headers=headers)
    assert resp.status == 200

    (tmp_path / "state.db").unlink()
    resp = await client.post("/alerts/alertmanager", json=payload(alert()), headers=headers)
    assert resp.status == 503
    assert (await resp.json())["error"] == "the bot cannot keep alerts right now; retry"


async def test_a_repeated_delivery_after_a_503_opens_no_second_thread(deps: Deps) -> None:
    """A 503 after a write that was kept makes Alertmanager send the same alerts again."""
    surface = FakeSurface()
    processor = AlertProcessor(deps, _incidents(deps, surface))
    batch = parse_webhook(json.dumps(payload(alert(), alert("HighCPU", fp="fp2"))).encode())
    for _ in range(3):
        await processor.receive(batch)
    while await processor.process_once():
        pass
    assert len([e for e in surface.events if e[0] == "post"]) == 2
    assert len(await deps.store.incidents_open()) == 2


def test_replay_of_a_deeply_nested_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", f"sqlite:///{tmp_path}/s.db")
    saved = tmp_path / "nested.json"
    saved.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert main(["replay", str(saved)]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err
    assert "Traceback" not in err
