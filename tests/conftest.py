"""Shared fixtures. Service harnesses live in tests/harness/ and are plugins here."""

pytest_plugins = [
    "tests.harness.postgres",
    "tests.harness.docker",
    "tests.harness.alertmanager",
    "tests.harness.prometheus",
    "tests.harness.fake_slack",
    "tests.harness.fake_teams",
]
