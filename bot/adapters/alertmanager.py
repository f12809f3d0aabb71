"""Alertmanager v2 API client: silences for ``/sms silence``, alerts for the weekly history.

The runbook sends the on-call engineer to Alertmanager's UI twice: to silence
an alert during planned work and, every Monday, to "review alert history". The
bot does both through the v2 HTTP API. Failures surface as two typed errors so
a procedure can tell "Alertmanager is down" (say so, retry later) from
"Alertmanager refused what we asked" (show its reason: the request was wrong).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from bot.adapters._http import describe_connect_failure
from bot.errors import AdapterError

__all__ = [
    "AlertInfo",
    "Alertmanager",
    "AlertmanagerClient",
    "AlertmanagerError",
    "AlertmanagerRejected",
    "AlertmanagerUnavailable",
    "Silence",
    "SilenceNotFound",
]


class AlertmanagerError(AdapterError):
    """Alertmanager could not do what was asked; subclasses say why."""


class AlertmanagerUnavailable(AlertmanagerError):
    """Alertmanager is unreachable, too slow or failing (5xx): retry later, not a bug."""


class AlertmanagerRejected(AlertmanagerError):
    """Alertmanager refused the request (4xx): the request is wrong, retrying will not help.

    ``status`` and ``reason`` are the HTTP status and Alertmanager's own words
    (e.g. "start time must be before end time"), kept so chat can show them.
    """

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class SilenceNotFound(AlertmanagerRejected):
    """No silence has that id (a typo, or a silence already garbage-collected)."""


@dataclass(frozen=True)
class Silence:
    """One silence as Alertmanager keeps it.

    ``matchers`` holds the equality matchers (``name="value"``), the only kind
    the bot creates. Silences made by hand in the UI may also use ``=~``,
    ``!=`` or ``!~``: those are kept, as written, in ``other_matchers`` so a
    listing never shows a silence as broader than it is.
    """

    id: str
    matchers: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    state: str
    other_matchers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertInfo:
    """One alert as Alertmanager currently holds it.

    ``state`` is Alertmanager's ("active", "suppressed", "unprocessed"), not
    Prometheus's "firing"; ``silenced_by`` and ``inhibited_by`` say why an
    alert is suppressed.
    """

    fingerprint: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    state: str
    generator_url: str
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()


def _rfc3339(at: datetime) -> str:
    """The API's time format; a naive datetime is taken as UTC, never as local time."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(raw: Any) -> datetime:
    """Alertmanager writes Go's RFC 3339 (``...123Z``, up to nanoseconds); 3.11 reads it."""
    return datetime.fromisoformat(str(raw)).astimezone(UTC)


def _labels(raw: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in dict(raw or {}).items()})


def _quote_matcher_value(value: str) -> str:
    """A label value inside a ``name="value"`` filter, escaped the way Alertmanager parses it."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _json_default(value: Any) -> Any:
    """Let callers put datetimes in posted alerts; everything else is a caller bug."""
    if isinstance(value, datetime):
        return _rfc3339(value)
    raise TypeError(f"cannot send {type(value).__name__} to Alertmanager")


def _reason(body: str) -> str:
    """Alertmanager's error text: a JSON string, a go-swagger ``{"message": ...}``, or plain."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return body.strip()[:200]
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict) and "message" in payload:
        return str(payload["message"])
    return body.strip()[:200]


class Alertmanager(Protocol):
    """Silences and active alerts; ``AlertmanagerClient`` is the real one."""

    def silence_url(self, silence_id: str) -> str: ...

    async def create_silence(
        self,
        *,
        matchers: Mapping[str, str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str: ...

    async def expire_silence(self, silence_id: str) -> None: ...

    async def alerts(
        self,
        *,
        active: bool = True,
        silenced: bool = False,
        inhibited: bool = False,
        filters: Mapping[str, str] | None = None,
    ) -> list[AlertInfo]: ...


class AlertmanagerClient:
    """Async client over one Alertmanager's v2 HTTP API.

    The ``aiohttp.ClientSession`` belongs to the caller (one session per bot,
    closed by the composition root); ``timeout`` bounds every request so a hung
    Alertmanager cannot stall a procedure step.
    """

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, *, timeout: float = 5.0
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout

    @property
    def base_url(self) -> str:
        """Where the client points, for messages and links in chat."""
        return self._base_url

    def silence_url(self, silence_id: str) -> str:
        """The silence's page in Alertmanager's UI, for the "silenced until ..." chat reply."""
        return f"{self._base_url}/#/silences/{quote(silence_id, safe='')}"

    async def ping(self) -> None:
        """Raise ``AlertmanagerUnavailable`` unless Alertmanager says it is ready."""
        status, body = await self._request("GET", "/-/ready")
        if status != 200:
            raise AlertmanagerUnavailable(
                f"Alertmanager at {self._base_url} is not ready (HTTP {status}: "
                f"{body.strip()[:80]})"
            )

    async def create_silence(
        self,
        *,
        matchers: Mapping[str, str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """Silence every alert whose labels equal ``matchers``; return the new silence's id.

        Alertmanager checks the times itself (ends before starts, already over)
        and its reason comes back in ``AlertmanagerRejected``. Empty ``matchers``
        raise ``ValueError`` before anything is sent.
        """
        if not matchers:
            # A caller bug, caught here: an empty silence would mute every alert there is.
            raise ValueError("a silence needs at least one label to match")
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in matchers.items()
            ],
            "startsAt": _rfc3339(starts_at),
            "endsAt": _rfc3339(ends_at),
            "createdBy": created_by,
            "comment": comment,
        }
        payload = await self._json("POST", "/api/v2/silences", what="create the silence", body=body)
        silence_id = payload.get("silenceID") if isinstance(payload, dict) else None
        if not isinstance(silence_id, str) or not silence_id:
            raise AlertmanagerError(
                f"Alertmanager at {self._base_url} created a silence but did not say its id"
            )
        return silence_id

    async def expire_silence(self, silence_id: str) -> None:
        """End a silence now. Expiring an already expired silence is not an error."""
        path = f"/api/v2/silence/{quote(silence_id, safe='')}"
        status, body = await self._request("DELETE", path)
        reason = _reason(body)
        # Alertmanager 0.25 answers an unknown id with 500 "silence not found"; later
        # versions with 404. Either way it is a wrong id, not an outage.
        if status == 404 or (status == 500 and "not found" in reason.lower()):
            raise SilenceNotFound(
                f"Alertmanager has no silence with id {silence_id!r}",
                status=status,
                reason=reason,
            )
        self._raise_for_status(status, body, what=f"expire silence {silence_id}")

    async def silences(self, *, active_only: bool = True) -> list[Silence]:
        """The silences Alertmanager knows; with ``active_only``, those silencing right now.

        Alertmanager keeps expired silences for its retention period (120 h by
        default), so without the filter the list includes recent history.
        """
        payload = await self._json("GET", "/api/v2/silences", what="list silences")
        try:
            silences = [_silence(item) for item in payload]
        except (KeyError, TypeError, ValueError) as exc:
            raise AlertmanagerError(
                f"Alertmanager at {self._base_url} sent a silence list the bot cannot read"
            ) from exc
        if active_only:
            silences = [s for s in silences if s.state == "active"]
        return silences

    async def alerts(
        self,
        *,
        active: bool = True,
        silenced: bool = False,
        inhibited: bool = False,
        filters: Mapping[str, str] | None = None,
    ) -> list[AlertInfo]:
        """Alerts Alertmanager holds now, optionally only those whose labels equal ``filters``.

        The defaults mirror what the on-call wants to see: what is firing and
        not muted. Resolved alerts drop out of Alertmanager after a while, so
        this is "now", not a history.
        """
        params: list[tuple[str, str]] = [
            ("active", _flag(active)),
            ("silenced", _flag(silenced)),
            ("inhibited", _flag(inhibited)),
        ]
        params += [
            ("filter", f"{name}={_quote_matcher_value(value)}")
            for name, value in (filters or {}).items()
        ]
        payload = await self._json("GET", "/api/v2/alerts", what="list alerts", params=params)
        try:
            return [_alert(item) for item in payload]
        except (KeyError, TypeError, ValueError) as exc:
            raise AlertmanagerError(
                f"Alertmanager at {self._base_url} sent an alert list the bot cannot read"
            ) from exc

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Send alerts as Prometheus would (``labels``, ``annotations``, ``startsAt``...).

        Datetime values are sent as RFC 3339. Used by tests and drills to make
        Alertmanager notify the bot without a Prometheus in between.
        """
        status, body = await self._request(
            "POST", "/api/v2/alerts", body=[dict(alert) for alert in alerts]
        )
        self._raise_for_status(status, body, what="accept the alerts")

    async def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Sequence[tuple[str, str]] = (),
        body: Any = None,
    ) -> Any:
        """Call an endpoint that answers JSON; every failure becomes a typed error."""
        status, text = await self._request(method, path, params=params, body=body)
        self._raise_for_status(status, text, what=what)
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise AlertmanagerError(
                f"Alertmanager at {self._base_url} answered {method} {path} with a body "
                f"that is not JSON: {text.strip()[:80]!r}"
            ) from exc

    def _raise_for_status(self, status: int, body: str, *, what: str) -> None:
        if 200 <= status < 300:
            return
        reason = _reason(body)
        if status >= 500:
            raise AlertmanagerUnavailable(
                f"Alertmanager at {self._base_url} failed to {what} (HTTP {status}: {reason})"
            )
        raise AlertmanagerRejected(
            f"Alertmanager refused to {what}: {reason}", status=status, reason=reason
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Any = None,
    ) -> tuple[int, str]:
        url = self._base_url + path
        data = None if body is None else json.dumps(body, default=_json_default)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._session.request(
                method,
                url,
                params=list(params),
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                return response.status, await response.text()
        except TimeoutError as exc:
            raise AlertmanagerUnavailable(
                f"Alertmanager at {self._base_url}: no answer within {self._timeout:g} s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise AlertmanagerUnavailable(
                f"Alertmanager at {self._base_url}: {describe_connect_failure(exc)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise AlertmanagerUnavailable(f"Alertmanager at {self._base_url}: {exc}") from exc


def _flag(value: bool) -> str:
    return "true" if value else "false"


_OPERATORS = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}


def _silence(item: Any) -> Silence:
    equal: dict[str, str] = {}
    other: list[str] = []
    for matcher in item["matchers"]:
        name, value = str(matcher["name"]), str(matcher["value"])
        is_regex = bool(matcher.get("isRegex", False))
        is_equal = bool(matcher.get("isEqual", True))
        if not is_regex and is_equal and name not in equal:
            equal[name] = value
        else:
            op = _OPERATORS[(is_regex, is_equal)]
            other.append(f"{name}{op}{_quote_matcher_value(value)}")
    return Silence(
        id=str(item["id"]),
        matchers=MappingProxyType(equal),
        starts_at=_parse_time(item["startsAt"]),
        ends_at=_parse_time(item["endsAt"]),
        created_by=str(item.get("createdBy", "")),
        comment=str(item.get("comment", "")),
        state=str(item["status"]["state"]),
        other_matchers=tuple(other),
    )


def _alert(item: Any) -> AlertInfo:
    status = item.get("status") or {}
    return AlertInfo(
        fingerprint=str(item["fingerprint"]),
        labels=_labels(item.get("labels")),
        annotations=_labels(item.get("annotations")),
        starts_at=_parse_time(item["startsAt"]),
        ends_at=_parse_time(item["endsAt"]),
        state=str(status.get("state", "")),
        generator_url=str(item.get("generatorURL", "")),
        silenced_by=tuple(str(s) for s in status.get("silencedBy") or ()),
        inhibited_by=tuple(str(s) for s in status.get("inhibitedBy") or ()),
    )
