"""Alerts as the bot sees them: Alertmanager's webhook (version 4), normalised at the edge.

Nothing past ``parse_webhook`` sees the raw payload. Each alert is keyed by
its ``fingerprint``; its status is ``firing`` or ``resolved``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydanticField

__all__ = [
    "MAX_ALERTS_PER_WEBHOOK",
    "MAX_WEBHOOK_BYTES",
    "Alert",
    "AlertBatch",
    "WebhookInvalid",
    "parse_webhook",
]


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    status: str  # "firing" | "resolved"
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "unnamed alert")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return (
            self.annotations.get("summary")
            or self.annotations.get("description")
            or self.annotations.get("message")
            or self.name
        )


@dataclass(frozen=True)
class AlertBatch:
    """One webhook delivery: its group and the alerts in it."""

    receiver: str
    status: str
    group_key: str
    alerts: tuple[Alert, ...]
    external_url: str = ""
    common_labels: Mapping[str, str] = field(default_factory=dict)


# -- parsing the webhook ------------------------------------------------------------

MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
MAX_ALERTS_PER_WEBHOOK = 5000


_TOO_DEEP = "body is not an Alertmanager webhook: JSON nested too deeply"


class WebhookInvalid(ValueError):
    """The body is not an Alertmanager webhook (v4); the message says what is wrong."""


class _AlertModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = PydanticField(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = PydanticField(min_length=1, max_length=128)


class _WebhookModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    externalURL: str = ""
    commonLabels: dict[str, str] = PydanticField(default_factory=dict)
    alerts: list[_AlertModel] = PydanticField(max_length=MAX_ALERTS_PER_WEBHOOK)


def _aware(value: datetime | None) -> datetime | None:
    # Alertmanager writes 0001-01-01T00:00:00Z for "no end"; treat it as none.
    if value is None or value.year <= 1:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_webhook(body: bytes) -> AlertBatch:
    """Validate and normalise a webhook body; raise ``WebhookInvalid`` with one clear reason.

    JSON nested deeper than the interpreter's recursion limit (``[[[[...``
    a hundred thousand times fits easily in the size limit) makes ``json``
    raise ``RecursionError``: that is a body no Alertmanager sends, so it is
    refused like any other, not left to become a 500.
    """
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookInvalid(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise WebhookInvalid(_TOO_DEEP) from None
    if not isinstance(raw, dict):
        raise WebhookInvalid("body is not a JSON object")
    try:
        model = _WebhookModel.model_validate(raw)
    except RecursionError:
        raise WebhookInvalid(_TOO_DEEP) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise WebhookInvalid(
            f"not an Alertmanager v4 webhook: {where}: {first['msg']} "
            f"({exc.error_count()} problem(s))"
        ) from None
    alerts = tuple(
        Alert(
            fingerprint=a.fingerprint,
            status=a.status,
            labels=dict(a.labels),
            annotations=dict(a.annotations),
            starts_at=_aware(a.startsAt),
            ends_at=_aware(a.endsAt),
            generator_url=a.generatorURL,
        )
        for a in model.alerts
    )
    return AlertBatch(
        receiver=model.receiver,
        status=model.status,
        group_key=model.groupKey,
        alerts=alerts,
        external_url=model.externalURL,
        common_labels=dict(model.commonLabels),
    )
