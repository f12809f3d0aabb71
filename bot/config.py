"""Settings, parsed once at start from the environment and ``.env``.

Every field's environment name is the field name in upper case (``BOT_PORT``
for ``bot_port``). A wrong value stops the start with one line naming the
variable (``load_settings`` turns pydantic's report into a ``ConfigError``).
Defaults come from the runbook: its container names, URLs, baseline table
and schedule.

Read here, not through pydantic-settings: that library loads asyncio, its CLI
parser and every cloud source at import, 300 ms on a 2-core machine (as long
as ``python -c pass`` eight times over), for what ``_environment`` does in a
few lines: match each setting's name in the environment and in ``.env``
(python-dotenv reads the file), the environment winning. Validation stays
pydantic's.
"""

from __future__ import annotations

import json
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError
from bot.messages import TEAMS_USER_PREFIX, Mention
from bot.routing import PRIORITIES, RouteRule
from bot.store.url import validate_state_url

__all__ = [
    "DEFAULT_SERVICES",
    "ENV_FILE",
    "Settings",
    "Threshold",
    "load_settings",
    "metric_keys",
    "parse_response_times",
    "parse_routes",
    "parse_services",
    "parse_slack_mentions",
    "parse_teams_mentions",
]

DEFAULT_SERVICES = "backend=docker-backend-1,postgres=docker-postgres-1,backup=sms-db-backup"

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Docker's own rule for container names.
_CONTAINER_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def parse_services(raw: str | Mapping[str, str]) -> dict[str, str]:
    """Parse ``short=container,...`` into a map, refusing anything ambiguous."""
    if isinstance(raw, Mapping):
        items = list(raw.items())
    else:
        items = []
        for part in str(raw).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, container = part.partition("=")
            if not sep:
                raise ValueError(f"entry {part!r} is not of the form name=container")
            items.append((name.strip(), container.strip()))
    services: dict[str, str] = {}
    for name, container in items:
        if not _SERVICE_NAME.match(name):
            raise ValueError(
                f"service name {name!r} must be lower-case letters, digits, '-' or '_'"
            )
        if not _CONTAINER_NAME.match(container):
            raise ValueError(f"container name {container!r} for {name!r} is not a valid name")
        if name in services:
            raise ValueError(f"service {name!r} appears twice")
        services[name] = container.lstrip("/")
    if not services:
        raise ValueError("at least one service is needed, e.g. backend=docker-backend-1")
    return services


@dataclass(frozen=True)
class Threshold:
    """Alert and critical thresholds of one baseline metric.

    When ``warn`` is below ``crit`` higher values are worse (latency, CPU);
    when it is above, lower values are worse (throughput).
    """

    warn: float
    crit: float

    @property
    def higher_is_worse(self) -> bool:
        return self.warn <= self.crit

    def describe(self) -> str:
        sign = ">" if self.higher_is_worse else "<"
        return f"warn {sign} {self.warn:g}, crit {sign} {self.crit:g}"


def _parse_threshold(raw: Any) -> Threshold:
    if isinstance(raw, Threshold):
        return raw
    if isinstance(raw, list | tuple) and len(raw) == 2:
        return Threshold(float(raw[0]), float(raw[1]))
    parts = [p.strip() for p in str(raw).split(",")]
    if len(parts) != 2:
        raise ValueError(f"{raw!r} is not 'WARN,CRIT' (two numbers, e.g. 500,1000)")
    try:
        return Threshold(float(parts[0]), float(parts[1]))
    except ValueError:
        raise ValueError(f"{raw!r} is not 'WARN,CRIT' (two numbers, e.g. 500,1000)") from None


ThresholdSetting = Annotated[Threshold, BeforeValidator(_parse_threshold)]


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_url)]


def _split_ids(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        return tuple(str(x).strip() for x in raw if str(x).strip())
    return tuple(p.strip() for p in str(raw or "").split(",") if p.strip())


UserIds = Annotated[tuple[str, ...], BeforeValidator(_split_ids)]


def _parse_priorities(raw: Any) -> tuple[str, ...]:
    """``P0,P1`` (or ``all``): which incident priorities a surface is told about."""
    parts = [p.upper() for p in _split_ids(raw)]
    if parts == ["ALL"]:
        return PRIORITIES
    unknown = [p for p in parts if p not in PRIORITIES]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not one of {', '.join(PRIORITIES)} (or 'all')")
    if not parts:
        raise ValueError(f"name at least one of {', '.join(PRIORITIES)}, or 'all'")
    return tuple(p for p in PRIORITIES if p in parts)


Priorities = Annotated[tuple[str, ...], BeforeValidator(_parse_priorities)]


def _parse_keys(raw: Any) -> tuple[str, ...]:
    keys = tuple(k.upper() for k in _split_ids(raw))
    bad = [k for k in keys if not re.fullmatch(r"[A-Z][A-Z0-9_]*", k)]
    if bad:
        raise ValueError(f"{', '.join(bad)}: key names are letters, digits and _")
    return keys


def _parse_retention(raw: Any) -> dict[str, float]:
    """``TABLE.COLUMN=DAYS,...`` (GDPR retention): rows older are counted, never deleted."""
    if isinstance(raw, dict):
        items = list(raw.items())
    else:
        items = []
        for part in _split_ids(raw):
            target, sep, days = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not TABLE.COLUMN=DAYS")
            items.append((target.strip(), days.strip()))
    out: dict[str, float] = {}
    for target, days in items:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*\.[A-Za-z_][A-Za-z0-9_]*", str(target)):
            raise ValueError(f"{target!r} is not TABLE.COLUMN")
        try:
            value = float(days)
        except ValueError:
            raise ValueError(f"{target}: {days!r} is not a number of days") from None
        if value <= 0:
            raise ValueError(f"{target}: the retention must be more than 0 days")
        out[str(target)] = value
    return out


_SLACK_MENTION = re.compile(
    r"<(@[UW][A-Z0-9]+|!channel|!here|!everyone|!subteam\^S[A-Z0-9]+)(?:\|([^<>|]*))?>"
)
_AAD_ID = re.compile(
    r"^([0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[^\s@=,]+@[^\s@=,]+\.[^\s@=,]+)$"
)


def parse_slack_mentions(raw: str) -> tuple[Mention, ...]:
    """SMS_ESCALATION_MENTION (``<!channel>``, ``<@U0123>``, ``<!subteam^S0123>``) as mentions.

    The setting is written in Slack's syntax, as Slack's documents show it;
    anything else in it would be shown as text, so it is refused at start.
    """
    mentions: list[Mention] = []
    rest = _SLACK_MENTION.sub(" ", raw).replace(",", " ").strip()
    if rest:
        raise ValueError(
            f"{rest.split()[0]!r} is not a Slack mention: use <!channel>, <!here>, "
            "<@U0123ABC> or <!subteam^S0123ABC>, separated by spaces"
        )
    for match in _SLACK_MENTION.finditer(raw):
        token, label = match.group(1), match.group(2) or ""
        mentions.append(Mention(token.removeprefix("@"), label.strip()))
    return tuple(mentions)


def parse_teams_mentions(raw: Any) -> tuple[Mention, ...]:
    """``teams:AAD_OBJECT_ID=Display Name,...`` (TEAMS_ESCALATION_MENTION) as mentions.

    Teams shows the name inside the mention and notifies by the id, so both
    are needed; the id is the user's AAD object id (a UPN works too).
    """
    if isinstance(raw, list | tuple) and all(isinstance(m, Mention) for m in raw):
        return tuple(raw)
    mentions: list[Mention] = []
    for part in _split_ids(raw):
        user, sep, name = part.partition("=")
        user, name = user.strip(), name.strip()
        if not sep or not name:
            raise ValueError(f"{part!r} is not teams:AAD_OBJECT_ID=Display Name")
        if not user.startswith(TEAMS_USER_PREFIX):
            raise ValueError(f"{user!r} does not start with {TEAMS_USER_PREFIX!r}")
        if not _AAD_ID.match(user.removeprefix(TEAMS_USER_PREFIX)):
            raise ValueError(f"{user!r}: the id is not an AAD object id (a GUID) or a UPN")
        mentions.append(Mention(user, name))
    return tuple(mentions)


KeyNames = Annotated[tuple[str, ...], BeforeValidator(_parse_keys)]
Retention = Annotated[dict[str, float], BeforeValidator(_parse_retention)]

# A Teams channel id, as the connector and the channel's "Get link" show it.
_TEAMS_CHANNEL = re.compile(r"^19:[A-Za-z0-9_.\-]+@thread\.(tacv2|skype)$")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _check_https(value: str) -> str:
    """An https URL; plain http only on loopback (the tests' fakes), never across a network."""
    if not value:
        return value
    match = re.match(r"^(https?)://(\[[^\]]+\]|[^\s/:]+)(:\d+)?(/\S*)?$", value)
    if not match:
        raise ValueError(f"{value!r} is not an https:// URL")
    scheme, host = match.group(1), match.group(2).lower()
    if scheme == "http" and host not in _LOOPBACK_HOSTS and not host.startswith("127."):
        raise ValueError(f"{value!r} must use https:// (http:// only for a loopback address)")
    return value


HttpsUrl = Annotated[str, AfterValidator(_check_https)]


def _check_cron(value: str) -> str:
    # Checked by the trigger the scheduler will fire; APScheduler loads asyncio,
    # so it is imported here, for a schedule that was set, not with the settings.
    from bot.cron import cron_trigger

    try:
        cron_trigger(value, "UTC")
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a 5-field cron expression: {exc}") from None
    return value


# A schedule setting. Its default (the runbook's schedule) is not checked at each
# start, only a value that was set; tests/unit/test_config.py checks the defaults.
Cron = Annotated[str, AfterValidator(_check_cron), Field(validate_default=False)]


class Settings(BaseModel):
    """Everything the bot reads from its environment; see ``.env.example``.

    Built by ``load_settings``, which reads the environment and ``.env``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)

    # The bot itself.
    bot_state_url: str = "sqlite:///./data/sms-bot.db"
    bot_host: str = "127.0.0.1"
    bot_port: int = Field(default=8090, ge=1, le=65535)
    bot_audit_log: str = "./data/audit.jsonl"
    bot_log_level: str = "INFO"

    # Slack. The bot talks to Slack when SLACK_BOT_TOKEN is set.
    slack_bot_token: str = ""
    slack_signing_secret: str = ""
    slack_app_token: str = ""
    slack_api_url: HttpUrl = "https://slack.com/api/"
    slack_alert_channel: str = "#sms-alerts"
    # Incident priorities posted to SLACK_ALERT_CHANNEL ("all" or e.g. P0,P1).
    slack_alert_priorities: Priorities = PRIORITIES
    # How long one Web API call may take; a post that outlives it is looked up before a retry.
    slack_timeout_s: float = Field(default=10.0, gt=0, le=120)

    # Microsoft Teams. The bot talks to Teams when TEAMS_APP_ID is set.
    teams_app_id: str = ""
    teams_app_password: str = ""
    teams_tenant_id: str = ""
    # The Bot Connector for proactive posts (alerts, reports); replies use the
    # serviceUrl of the activity they answer.
    teams_service_url: HttpsUrl = "https://smba.trafficmanager.net/teams/"
    teams_alert_channel: str = ""
    teams_alert_priorities: Priorities = ("P0",)
    teams_reports_channel: str = ""
    teams_openid_metadata_url: HttpsUrl = (
        "https://login.botframework.com/v1/.well-known/openidconfiguration"
    )
    teams_login_url: HttpsUrl = "https://login.microsoftonline.com"

    # Alertmanager's webhook (POST /alerts/alertmanager) needs this bearer token.
    alert_webhook_token: str = ""
    # Routing overrides, JSON list of {"alertname", "severity"?, "procedure", "priority"}.
    sms_alert_routes: tuple[RouteRule, ...] = ()
    # Beyond this many new alert threads per minute, alerts go into one digest.
    sms_alert_threads_per_minute: int = Field(default=10, ge=1)
    # Minutes to acknowledge before the thread escalates, per priority.
    sms_response_times_min: dict[str, float] = Field(
        default_factory=lambda: {"P0": 5.0, "P1": 15.0, "P2": 30.0}
    )
    # Who an escalation mentions in Slack, e.g. <!subteam^S0123ABC> or <@U0123ABC>.
    sms_escalation_mention: str = "<!channel>"
    # ... and in Teams: teams:AAD_OBJECT_ID=Display Name, comma-separated.
    teams_escalation_mention: Annotated[
        tuple[Mention, ...], BeforeValidator(parse_teams_mentions)
    ] = ()

    # The SMS deployment the runbook is about.
    sms_health_url: HttpUrl = "http://localhost:8080/health"
    sms_prometheus_url: HttpUrl = "http://localhost:9090"
    sms_alertmanager_url: HttpUrl = "http://localhost:9093"
    sms_grafana_url: HttpUrl = "http://localhost:3000"
    sms_database_url: str = "postgresql://sms_user@localhost:5432/student_management"
    sms_services: dict[str, str] = Field(default_factory=lambda: parse_services(DEFAULT_SERVICES))
    sms_expected_containers: int = Field(default=12, ge=0)
    sms_backup_dir: str = "./backups"
    sms_backup_max_age_hours: float = Field(default=24.0, gt=0)
    sms_incidents_dir: str = "./incidents"
    sms_operators: UserIds = ()
    sms_approvers: UserIds = ()
    sms_timezone: str = "UTC"
    # Schedules (cron: minute hour day month weekday, in SMS_TIMEZONE; a sixth
    # field in front is seconds). Day and weekday are ANDed: "0 9 1-7 * mon" is
    # the first Monday of the month.
    sms_morning_summary_cron: Cron = "30 7 * * *"
    sms_weekly_checklist_cron: Cron = "0 8 * * mon"
    sms_weekly_report_cron: Cron = "0 16 * * fri"
    sms_monthly_maintenance_cron: Cron = "0 9 1-7 * mon"
    # The SLA report of the month just ended (runbook: SLA Commitments).
    sms_sla_cron: Cron = "0 9 1 * *"
    # In UTC, half an hour after the runbook's 02:00 UTC backup.
    sms_backup_check_cron: Cron = "30 2 * * *"
    # The capacity report (with the monthly list), and the daily sample of the
    # database's size and row counts (UTC) it computes the growth from.
    sms_capacity_cron: Cron = "0 9 1-7 * mon"
    sms_capacity_sample_cron: Cron = "15 4 * * *"
    # Concurrent users in Prometheus, if the SMS exports such a metric ("" = none).
    sms_concurrent_users_query: str = "sum(sms_active_users)"
    # Monthly compliance checks (with the monthly list).
    sms_compliance_cron: Cron = "0 9 1-7 * mon"
    # The backend's admin audit log, read inside its container (runbook: backend/logs/audit.log).
    sms_backend_audit_log: str = "backend/logs/audit.log"
    # The keys and passwords `rotated KEY` records, and how often each must be rotated.
    sms_keys: KeyNames = ("BACKUP_ENCRYPTION_KEY", "ADMIN_PASSWORD", "API_KEY")
    sms_key_rotation_days: float = Field(default=31.0, gt=0)
    # GDPR retention: TABLE.COLUMN=DAYS,... rows older are counted (never deleted).
    sms_gdpr_retention: Retention = Field(default_factory=dict)
    # PostgreSQL client binaries (pg_dump, psql) for restore and the test restore:
    # "" = the PATH, then /usr/lib/postgresql/*/bin.
    sms_pg_bin_dir: str = ""
    sms_restore_check_timeout_s: float = Field(default=900.0, gt=0)
    # The watch after `change done`: minutes (0 = the runbook's 15, critical 60) and
    # seconds between its rounds of the five checks.
    sms_change_watch_min: float = Field(default=0.0, ge=0)
    sms_change_watch_interval_s: float = Field(default=60.0, gt=0)
    # The bot prunes its own data daily (UTC), past these retentions in days
    # (runbook: audit logs 1 year; runs, outbox and alert inbox 30 days).
    sms_prune_cron: Cron = "45 3 * * *"
    sms_retention_audit_days: float = Field(default=365.0, gt=0)
    sms_retention_runs_days: float = Field(default=30.0, gt=0)
    sms_retention_outbox_days: float = Field(default=30.0, gt=0)
    sms_retention_alerts_days: float = Field(default=30.0, gt=0)
    # A job missed while the bot was down runs once on start within this window.
    sms_schedule_grace_min: float = Field(default=60.0, ge=0)

    # How long one check may take before it is reported as timed out.
    sms_check_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # The longest log tail a command may ask for.
    sms_logs_max_lines: int = Field(default=500, ge=1, le=5000)
    # Active queries older than this are "slow" (runbook: 5 seconds).
    sms_slow_query_s: float = Field(default=5.0, gt=0)

    # Approvals: how long a proposal's buttons stay valid.
    sms_proposal_ttl_min: float = Field(default=30.0, gt=0, le=24 * 60)
    # The bot restarts one container at most this many times per window.
    sms_restart_limit: int = Field(default=3, ge=1)
    sms_restart_window_min: float = Field(default=60.0, gt=0)
    # How long a restarted service may take to report healthy again.
    sms_recovery_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    # How many different approvers a restore needs (the runbook's most dangerous
    # change); 1 is allowed for a one-person team and said in the proposal.
    sms_restore_approvals: int = Field(default=2, ge=1, le=5)

    # The runbook's baseline table: "WARN,CRIT" (alert and critical thresholds).
    sms_threshold_p95_ms: ThresholdSetting = Threshold(500, 1000)
    sms_threshold_p99_ms: ThresholdSetting = Threshold(3000, 5000)
    sms_threshold_throughput_rps: ThresholdSetting = Threshold(20, 10)
    sms_threshold_error_rate_pct: ThresholdSetting = Threshold(2, 5)
    sms_threshold_cpu_pct: ThresholdSetting = Threshold(80, 95)
    sms_threshold_memory_pct: ThresholdSetting = Threshold(85, 95)
    sms_threshold_disk_pct: ThresholdSetting = Threshold(80, 90)
    # The backend's availability (1 up, 0 down) for the SLA's downtime minutes:
    # Prometheus' `up` of the backend's scrape target, or a blackbox probe_success.
    sms_sla_up_query: str = 'up{job="backend"}'
    # PromQL overrides for the baseline metrics, as JSON {"p95_ms": "..."}.
    sms_promql: dict[str, str] = Field(default_factory=dict)

    @field_validator("sms_services", mode="before")
    @classmethod
    def _services(cls, value: Any) -> dict[str, str]:
        return parse_services(value)

    @field_validator("sms_alert_routes", mode="before")
    @classmethod
    def _routes(cls, value: Any) -> tuple[RouteRule, ...]:
        return parse_routes(value)

    @field_validator("sms_response_times_min", mode="before")
    @classmethod
    def _response_times(cls, value: Any) -> dict[str, float]:
        # Setting one priority keeps the runbook's times for the others.
        return {"P0": 5.0, "P1": 15.0, "P2": 30.0, **parse_response_times(value)}

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api_url(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("slack_bot_token")
    @classmethod
    def _slack_bot_token(cls, value: str) -> str:
        if value and not value.startswith("xoxb-"):
            raise ValueError("a bot token starts with xoxb- (Slack app > OAuth & Permissions)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _slack_app_token(cls, value: str) -> str:
        if value and not value.startswith("xapp-"):
            raise ValueError("an app-level token starts with xapp- (Slack app > Basic Information)")
        return value

    @model_validator(mode="after")
    def _slack_complete(self) -> Settings:
        if self.slack_bot_token and not (self.slack_signing_secret or self.slack_app_token):
            raise ValueError(
                "SLACK_SIGNING_SECRET is needed with SLACK_BOT_TOKEN (to verify Slack's requests), "
                "or SLACK_APP_TOKEN for Socket Mode"
            )
        if (self.slack_signing_secret or self.slack_app_token) and not self.slack_bot_token:
            raise ValueError("SLACK_BOT_TOKEN is needed to use Slack")
        return self

    @field_validator("sms_escalation_mention")
    @classmethod
    def _slack_mentions(cls, value: str) -> str:
        parse_slack_mentions(value)
        return value.strip()

    @property
    def escalation_mentions(self) -> tuple[Mention, ...]:
        """Who an escalation calls, on every surface: each shows its own."""
        return parse_slack_mentions(self.sms_escalation_mention) + self.teams_escalation_mention

    @field_validator("teams_alert_channel", "teams_reports_channel")
    @classmethod
    def _teams_channel(cls, value: str) -> str:
        value = value.strip()
        if value and not _TEAMS_CHANNEL.match(value):
            raise ValueError(
                f"{value!r} is not a Teams channel id like 19:abc...@thread.tacv2 "
                "(channel > Get link to channel, the part after /channel/, URL-decoded)"
            )
        return value

    @field_validator("teams_app_id", "teams_tenant_id")
    @classmethod
    def _teams_guid(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$", value):
            raise ValueError(f"{value!r} is not a GUID like 00000000-0000-0000-0000-000000000000")
        return value

    @field_validator("teams_login_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _teams_complete(self) -> Settings:
        if not self.teams_app_id:
            others = [
                name
                for name in ("teams_app_password", "teams_alert_channel", "teams_reports_channel")
                if getattr(self, name)
            ]
            if others:
                raise ValueError(f"TEAMS_APP_ID is needed with {others[0].upper()}")
            return self
        missing = [
            name.upper()
            for name in ("teams_app_password", "teams_tenant_id", "teams_service_url")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)} needed with TEAMS_APP_ID")
        return self

    @property
    def teams_enabled(self) -> bool:
        """Teams is on when the bot has an identity to validate and send with."""
        return bool(self.teams_app_id and self.teams_app_password and self.teams_tenant_id)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token)

    @property
    def slack_http_enabled(self) -> bool:
        """``POST /slack/events`` is served only when its requests can be verified."""
        return bool(self.slack_bot_token and self.slack_signing_secret)

    @property
    def slack_socket_mode_enabled(self) -> bool:
        return bool(self.slack_bot_token and self.slack_app_token)

    @property
    def slack_mode(self) -> str:
        """How Slack reaches the bot, in words: ``check-config`` and the start-up log say it."""
        http = "HTTP events at /slack/events (signed)"
        if self.slack_http_enabled and self.slack_socket_mode_enabled:
            return f"Slack: {http} and Socket Mode"
        if self.slack_http_enabled:
            return f"Slack: {http}"
        if self.slack_socket_mode_enabled:
            return "Slack: Socket Mode only; /slack/events not mounted (no SLACK_SIGNING_SECRET)"
        return "Slack: off (no SLACK_BOT_TOKEN)"

    @property
    def teams_mode(self) -> str:
        """Teams in words, with the settings still missing: ``check-config`` says it."""
        if not self.teams_enabled:
            return (
                "Teams: off; to turn it on set TEAMS_APP_ID, TEAMS_APP_PASSWORD, TEAMS_TENANT_ID"
                " (README: Teams set-up)"
            )
        parts = ["Teams: POST /api/messages (Bot Framework JWT)"]
        if self.teams_alert_channel:
            parts.append(f"incidents {', '.join(self.teams_alert_priorities)} to the channel")
        else:
            parts.append("missing TEAMS_ALERT_CHANNEL: no incident threads in Teams")
        if self.teams_reports_channel:
            parts.append("reports to TEAMS_REPORTS_CHANNEL")
        else:
            parts.append("TEAMS_REPORTS_CHANNEL not set: reports stay out of Teams")
        return "; ".join(parts)

    @field_validator("bot_state_url")
    @classmethod
    def _state_url(cls, value: str) -> str:
        validate_state_url(value)
        return value

    @field_validator("sms_database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value and not re.match(r"^postgres(ql)?://", value):
            raise ValueError(f"{value!r} is not a postgresql:// URL")
        return value

    @field_validator("sms_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a known time zone (e.g. UTC, Europe/Athens)"
            ) from None
        return value

    @field_validator("bot_log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("sms_promql", mode="before")
    @classmethod
    def _promql_json(cls, value: Any) -> Any:
        # From the environment it is JSON text: {"p95_ms": "..."}.
        return _json(value) if isinstance(value, str) else value

    @field_validator("sms_promql")
    @classmethod
    def _promql(cls, value: dict[str, str]) -> dict[str, str]:
        known = metric_keys()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return value


def metric_keys() -> tuple[str, ...]:
    """The baseline metrics, named by their ``SMS_THRESHOLD_*`` settings.

    Every metric of the runbook's baseline table has a threshold setting, so
    the settings know the metric names without importing ``bot.baseline``
    (which reads the settings).
    """
    prefix = "sms_threshold_"
    return tuple(n.removeprefix(prefix) for n in Settings.model_fields if n.startswith(prefix))


def _json(text: str) -> Any:
    """A setting given as JSON text, decoded; a clear reason when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def parse_routes(raw: Any) -> tuple[RouteRule, ...]:
    """``SMS_ALERT_ROUTES``: a JSON list of rules.

    Their procedure names are checked against the catalogue where it is known
    (``handlers.routes.check_routes``, run at start and by ``check-config``).
    """
    if isinstance(raw, tuple) and all(isinstance(r, RouteRule) for r in raw):
        return raw
    if isinstance(raw, str):
        if not raw.strip():
            return ()
        raw = _json(raw)
    if not isinstance(raw, list | tuple):
        raise ValueError('a JSON list like [{"alertname": "X", "procedure": "", "priority": "P2"}]')
    rules = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "alertname" not in item or "priority" not in item:
            raise ValueError(f"rule {i + 1} needs at least alertname and priority")
        procedure = str(item.get("procedure", ""))
        priority = str(item["priority"]).upper()
        if priority not in PRIORITIES:
            raise ValueError(f"rule {i + 1}: priority must be one of {', '.join(PRIORITIES)}")
        rules.append(
            RouteRule(str(item["alertname"]), procedure, priority, str(item.get("severity", "")))
        )
    return tuple(rules)


def parse_response_times(raw: Any) -> dict[str, float]:
    """``P0=5,P1=15,P2=30``: minutes to acknowledge per priority."""
    if isinstance(raw, dict):
        items = list(raw.items())
    else:
        items = []
        for part in str(raw).split(","):
            if part.strip():
                key, sep, value = part.partition("=")
                if not sep:
                    raise ValueError(f"{part.strip()!r} is not PRIORITY=MINUTES")
                items.append((key, value))
    times: dict[str, float] = {}
    for key, value in items:
        priority = str(key).strip().upper()
        if priority not in PRIORITIES:
            raise ValueError(f"{priority!r} is not one of {', '.join(PRIORITIES)}")
        try:
            minutes = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number of minutes") from None
        if minutes <= 0:
            raise ValueError(f"{priority}: minutes must be positive")
        times[priority] = minutes
    return times


ENV_FILE = ".env"


def _environment(env_file: str | Path | None) -> dict[str, str]:
    """Each setting's value as the environment or ``env_file`` gives it; the environment wins.

    Names match without regard to case (``BOT_PORT`` is ``bot_port``); names
    that are not settings, and a name in the file without ``=``, are ignored.
    """
    fields = Settings.model_fields
    values: dict[str, str] = {}
    path = Path(env_file).expanduser() if env_file is not None else None
    if path is not None and (path.is_file() or path.is_fifo()):
        from dotenv import dotenv_values  # only when there is a file to read

        for name, value in dotenv_values(path, encoding="utf-8").items():
            if value is not None and name.lower() in fields:
                values[name.lower()] = value
    for name, value in os.environ.items():
        if name.lower() in fields:
            values[name.lower()] = value
    return values


def load_settings(*, _env_file: str | Path | None = ENV_FILE, **overrides: Any) -> Settings:
    """Build Settings, turning a validation report into one clear line per variable.

    ``overrides`` (field names) win over the environment and ``_env_file``;
    ``_env_file=None`` reads no file (tests), as pydantic-settings spelled it.
    """
    try:
        return Settings(**{**_environment(_env_file), **overrides})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            reason = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                lines.append(f"{str(error['loc'][0]).upper()}: {reason}")
            else:
                lines.append(reason)
        raise ConfigError("; ".join(lines)) from None
