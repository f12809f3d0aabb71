"""Reading the catalogue for handlers: words to a command, configured routes checked.

The catalogue (``procedures/catalogue.py``) only declares; matching words
to a command, authorizing the user and running the procedure are separate
layers (here and ``handlers.dispatch``) that read it.
"""

from __future__ import annotations

from bot.catalogue import Catalogue, CommandSpec
from bot.config import Settings
from bot.errors import ConfigError, UsageError
from bot.routing import check_rules

__all__ = ["check_routes", "match"]


def match(words: list[str], catalogue: Catalogue) -> tuple[CommandSpec, list[str]]:
    """Find the command the words name (longest name first) and the remaining words."""
    if not words:
        spec = catalogue.command(catalogue.default_command)
        if spec is None:
            raise UsageError("No command given.")
        return spec, []
    lowered = [w.lower() for w in words]
    if len(lowered) >= 2:
        spec = catalogue.command(f"{lowered[0]} {lowered[1]}")
        if spec is not None:
            return spec, words[2:]
    spec = catalogue.command(lowered[0])
    if spec is not None:
        return spec, words[1:]
    if lowered[0] in catalogue.groups():
        subs = [s for s in catalogue.commands() if s.name.split()[0] == lowered[0]]
        given = f" {words[1]!r}" if len(words) > 1 else ""
        raise UsageError(
            f"Unknown {lowered[0]} command{given}.",
            usage="\n".join(f"/sms {s.usage}  — {s.summary}" for s in subs),
        )
    raise UsageError(
        f"Unknown command {words[0]!r}.",
        usage="\n".join(f"/sms {s.usage}" for s in catalogue.commands()),
    )


def check_routes(settings: Settings, catalogue: Catalogue) -> None:
    """``SMS_ALERT_ROUTES`` may only name procedures that answer alerts (or "" for none)."""
    try:
        check_rules(settings.sms_alert_routes, catalogue.alert_procedures())
    except ValueError as exc:
        raise ConfigError(f"SMS_ALERT_ROUTES: {exc}") from None
