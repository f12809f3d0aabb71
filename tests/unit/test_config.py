from __future__ import annotations

from pathlib import Path

import pytest

from bot.baseline import METRIC_KEYS
from bot.config import Threshold, metric_keys, parse_services
from bot.errors import ConfigError
from tests.unit.conftest import make_settings


def test_defaults_come_from_the_runbook(tmp_path: Path) -> None:
    s = make_settings(tmp_path, sms_services="backend=docker-backend-1")
    assert s.bot_port == 8090
    assert s.sms_health_url == "http://localhost:8080/health"
    assert s.sms_threshold_p95_ms == Threshold(500, 1000)
    assert s.sms_threshold_throughput_rps == Threshold(20, 10)
    assert not s.sms_threshold_throughput_rps.higher_is_worse
    assert s.sms_morning_summary_cron == "30 7 * * *"


def test_default_service_map() -> None:
    assert parse_services(
        "backend=docker-backend-1,postgres=docker-postgres-1,backup=sms-db-backup"
    ) == {"backend": "docker-backend-1", "postgres": "docker-postgres-1", "backup": "sms-db-backup"}


def test_environment_values_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_SERVICES", "api=my-api-1, db=my-db-1")
    monkeypatch.setenv("SMS_THRESHOLD_P95_MS", "400,900")
    monkeypatch.setenv("SMS_APPROVERS", "U1, U2")
    monkeypatch.setenv("SMS_PROMQL", '{"cpu_pct": "up"}')
    from bot.config import load_settings

    s = load_settings(_env_file=None, bot_state_url=f"sqlite:///{tmp_path}/x.db")
    assert s.sms_services == {"api": "my-api-1", "db": "my-db-1"}
    assert s.sms_threshold_p95_ms == Threshold(400, 900)
    assert s.sms_approvers == ("U1", "U2")
    assert s.sms_promql == {"cpu_pct": "up"}


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"sms_health_url": "localhost:8080/health"}, "SMS_HEALTH_URL"),
        ({"sms_prometheus_url": "ftp://x"}, "SMS_PROMETHEUS_URL"),
        ({"sms_morning_summary_cron": "every morning"}, "SMS_MORNING_SUMMARY_CRON"),
        ({"sms_morning_summary_cron": "61 7 * * *"}, "SMS_MORNING_SUMMARY_CRON"),
        ({"sms_services": "backend"}, "SMS_SERVICES"),
        ({"sms_services": "backend=ok,backend=again"}, "SMS_SERVICES"),
        ({"sms_services": "Back End=x"}, "SMS_SERVICES"),
        ({"sms_services": "backend=bad name"}, "SMS_SERVICES"),
        ({"sms_timezone": "Mars/Olympus"}, "SMS_TIMEZONE"),
        ({"bot_state_url": "mysql://x"}, "BOT_STATE_URL"),
        ({"bot_port": 70000}, "BOT_PORT"),
        ({"sms_threshold_p95_ms": "fast"}, "SMS_THRESHOLD_P95_MS"),
        ({"sms_database_url": "mysql://db"}, "SMS_DATABASE_URL"),
        ({"sms_promql": {"latency": "up"}}, "SMS_PROMQL"),
        ({"bot_log_level": "LOUD"}, "BOT_LOG_LEVEL"),
    ],
)
def test_a_wrong_value_names_the_variable(tmp_path: Path, overrides: dict, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **overrides)
    message = str(info.value)
    assert message.startswith(f"{names}: ")
    assert "\n" not in message


def test_every_setting_is_documented_in_env_example() -> None:
    from bot.config import Settings

    example = (Path(__file__).parents[2] / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line
    }
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in documented]
    assert missing == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"slack_bot_token": "xoxb-1"}, "SLACK_SIGNING_SECRET is needed with SLACK_BOT_TOKEN"),
        ({"slack_signing_secret": "s"}, "SLACK_BOT_TOKEN is needed to use Slack"),
        ({"slack_bot_token": "token"}, "SLACK_BOT_TOKEN: a bot token starts with xoxb-"),
        (
            {"slack_bot_token": "xoxb-1", "slack_app_token": "x"},
            "SLACK_APP_TOKEN: an app-level token starts with xapp-",
        ),
    ],
)
def test_slack_settings_must_be_complete(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **overrides)
    assert str(info.value).startswith(message)


def test_check_config_never_prints_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret-token")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret-value")
    monkeypatch.setenv("ALERT_WEBHOOK_TOKEN", "webhook-secret-value")
    monkeypatch.setenv("SMS_DATABASE_URL", "postgresql://sms_user:db-password@db:5432/sms")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    for secret in (
        "very-secret-token",
        "signing-secret-value",
        "webhook-secret-value",
        "db-password",
    ):
        assert secret not in out
    assert "SLACK_BOT_TOKEN = (set, hidden)" in out
    assert "SLACK_APP_TOKEN = (not set)" in out
    assert "SMS_DATABASE_URL = postgresql://sms_user:[REDACTED]@db:5432/sms" in out


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ({}, "Slack: off (no SLACK_BOT_TOKEN)"),
        (
            {"slack_bot_token": "xoxb-1", "slack_signing_secret": "s"},
            "Slack: HTTP events at /slack/events (signed)",
        ),
        (
            {"slack_bot_token": "xoxb-1", "slack_app_token": "xapp-1"},
            "Slack: Socket Mode only; /slack/events not mounted (no SLACK_SIGNING_SECRET)",
        ),
        (
            {"slack_bot_token": "xoxb-1", "slack_signing_secret": "s", "slack_app_token": "xapp-1"},
            "Slack: HTTP events at /slack/events (signed) and Socket Mode",
        ),
    ],
)
def test_slack_mode_says_how_slack_reaches_the_bot(
    tmp_path: Path, overrides: dict, mode: str
) -> None:
    settings = make_settings(tmp_path, **overrides)
    assert settings.slack_mode == mode
    assert settings.slack_http_enabled == ("signing_secret" in str(overrides))


def test_check_config_says_when_slack_events_is_not_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("BOT_STATE_URL", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret-token")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-very-secret-token")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "Slack: Socket Mode only; /slack/events not mounted (no SLACK_SIGNING_SECRET)" in out


@pytest.mark.parametrize(
    ("url", "secret", "shown"),
    [
        ("postgresql://:OnlyPw123@host/db", "OnlyPw123", "postgresql://:[REDACTED]@host/db"),
        ("postgresql://u:my spaced pw@host/db", "spaced pw", "postgresql://u:[REDACTED]@host/db"),
        ("postgresql://u:Pw@x@host/db", "Pw@x", "postgresql://u:[REDACTED]@host/db"),
        (
            "postgresql://u@host/db?password=QueryPw1",
            "QueryPw1",
            "postgresql://u@host/db?password=[REDACTED]",
        ),
    ],
)
def test_check_config_masks_every_url_password(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    secret: str,
    shown: str,
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", url.replace("/db", "/state"))
    monkeypatch.setenv("SMS_DATABASE_URL", url)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert secret.split()[0] not in out
    assert f"SMS_DATABASE_URL = {shown}" in out
    assert f"BOT_STATE_URL = {shown.replace('/db', '/state')}" in out


@pytest.mark.parametrize(
    ("url", "state_file"),
    [
        ("sqlite:///./data/sms-bot.db", "{cwd}/data/sms-bot.db"),
        ("sqlite:///data/sms-bot.db", "{cwd}/data/sms-bot.db"),
        ("sqlite:////var/lib/sms-bot/state.db", "/var/lib/sms-bot/state.db"),
        ("sqlite:///:memory:", "(in memory, gone when the process ends)"),
        ("postgresql://bot@db:5432/state", None),
    ],
)
def test_check_config_prints_where_the_sqlite_state_file_is(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    state_file: str | None,
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_STATE_URL", url)
    assert main(["check-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [line.removeprefix("  state file: ") for line in lines if "state file:" in line]
    if state_file is None:
        assert shown == []
    else:
        assert shown == [state_file.format(cwd=tmp_path.resolve())]
        # Right under the URL it explains.
        assert lines[lines.index(f"  state file: {shown[0]}") - 1] == f"  BOT_STATE_URL = {url}"


TEAMS = {
    "teams_app_id": "11111111-2222-3333-4444-555555555555",
    "teams_app_password": "pw",
    "teams_tenant_id": "66666666-7777-8888-9999-000000000000",
}


def test_teams_is_off_by_default_and_on_with_its_identity(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert not settings.teams_enabled
    assert settings.teams_alert_priorities == ("P0",)
    assert settings.slack_alert_priorities == ("P0", "P1", "P2", "P3")
    assert settings.teams_login_url == "https://login.microsoftonline.com"
    assert settings.teams_openid_metadata_url.startswith("https://login.botframework.com/")
    on = make_settings(
        tmp_path,
        **TEAMS,
        teams_alert_channel="19:abcDEF123_x-y@thread.tacv2",
        teams_alert_priorities="p1, P0",
        slack_alert_priorities="P2",
        teams_login_url="http://127.0.0.1:8123/",
        teams_openid_metadata_url="http://localhost:8123/v1/.well-known/openidconfiguration",
    )
    assert on.teams_enabled
    assert on.teams_alert_priorities == ("P0", "P1")
    assert on.slack_alert_priorities == ("P2",)
    assert on.teams_login_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"teams_alert_channel": "general"},
            "TEAMS_ALERT_CHANNEL: 'general' is not a Teams channel",
        ),
        ({"teams_reports_channel": "19:x@thread.v2"}, "TEAMS_REPORTS_CHANNEL: "),
        (
            {"teams_login_url": "http://login.example"},
            "TEAMS_LOGIN_URL: 'http://login.example' must",
        ),
        ({"teams_service_url": "ftp://x"}, "TEAMS_SERVICE_URL: 'ftp://x' is not an https"),
        ({"teams_openid_metadata_url": "http://10.0.0.1/m"}, "TEAMS_OPENID_METADATA_URL: "),
        ({"teams_alert_priorities": "P9"}, "TEAMS_ALERT_PRIORITIES: P9 not one of"),
        ({"slack_alert_priorities": ""}, "SLACK_ALERT_PRIORITIES: name at least one"),
        ({"teams_app_id": "bot"}, "TEAMS_APP_ID: 'bot' is not a GUID"),
    ],
)
def test_teams_values_are_checked(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **{**TEAMS, **overrides})
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"teams_app_password": "pw"}, "TEAMS_APP_ID is needed with TEAMS_APP_PASSWORD"),
        (
            {"teams_alert_channel": "19:a@thread.tacv2"},
            "TEAMS_APP_ID is needed with TEAMS_ALERT_CHANNEL",
        ),
        ({"teams_app_id": TEAMS["teams_app_id"]}, "TEAMS_APP_PASSWORD, TEAMS_TENANT_ID needed"),
    ],
)
def test_teams_settings_must_be_complete(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, **overrides)
    assert str(info.value).startswith(message)


def test_the_settings_know_every_baseline_metric_by_its_threshold() -> None:
    """``SMS_PROMQL`` is checked against these names, without importing ``bot.baseline``."""
    assert metric_keys() == METRIC_KEYS


def test_an_unknown_promql_metric_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, sms_promql={"latency": "up"})
    assert "unknown metric(s) latency; known: " + ", ".join(METRIC_KEYS) in str(info.value)


def test_dot_env_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names match in any case; a name without ``=`` and names that are no setting are ignored."""
    from bot.config import load_settings

    env_file = tmp_path / "bot.env"
    env_file.write_text(
        "# the operator's file\n"
        "BOT_PORT=9000\n"
        "SMS_TIMEZONE='Europe/Athens'\n"
        "bot_log_level=debug\n"
        "SMS_OPERATORS\n"
        "NOT_A_SETTING=1\n"
    )
    monkeypatch.setenv("BOT_PORT", "9100")
    monkeypatch.delenv("SMS_OPERATORS", raising=False)
    s = load_settings(_env_file=env_file, bot_state_url=f"sqlite:///{tmp_path}/x.db")
    assert s.bot_port == 9100
    assert s.sms_timezone == "Europe/Athens"
    assert s.bot_log_level == "DEBUG"
    assert s.sms_operators == ()


def test_the_env_file_is_dot_env_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.config import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMS_EXPECTED_CONTAINERS", raising=False)
    (tmp_path / ".env").write_text("SMS_EXPECTED_CONTAINERS=7\n")
    assert load_settings(bot_state_url=f"sqlite:///{tmp_path}/x.db").sms_expected_containers == 7
    assert load_settings(_env_file=None).sms_expected_containers == 12


def test_promql_that_is_not_json_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration error, one line, not a traceback from the settings library."""
    from bot.config import load_settings

    monkeypatch.setenv("SMS_PROMQL", '{"cpu_pct": ')
    with pytest.raises(ConfigError, match=r"^SMS_PROMQL: not JSON"):
        load_settings(_env_file=None, bot_state_url=f"sqlite:///{tmp_path}/x.db")


def test_every_default_schedule_is_a_cron_the_scheduler_accepts() -> None:
    """Defaults are not checked at start (that would load APScheduler): they are here."""
    from bot.config import Settings
    from bot.cron import cron_trigger

    crons = {n: f.default for n, f in Settings.model_fields.items() if n.endswith("_cron")}
    assert len(crons) == 10
    for name, expr in crons.items():
        assert cron_trigger(expr, "UTC"), name


def test_a_schedule_from_the_environment_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.config import load_settings

    monkeypatch.setenv("SMS_PRUNE_CRON", "45 25 * * *")
    with pytest.raises(ConfigError, match=r"^SMS_PRUNE_CRON: '45 25 \* \* \*' is not a 5-field"):
        load_settings(_env_file=None, bot_state_url=f"sqlite:///{tmp_path}/x.db")
