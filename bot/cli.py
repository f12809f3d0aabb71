"""``sms-bot serve | shell | run WORDS... | check-config``.

``run`` exits 0 when every check passed (warnings alone keep 0), 1 when a
check failed or is critical, 2 on a usage or configuration error, so it can
be used from cron.

Each command imports what it uses, when it runs: ``--help`` and
``check-config`` never load the application (Slack, Docker, rich, aiohttp),
so a typo or a cron line is answered at once (``python -m bench``).
"""

from __future__ import annotations

import argparse
import gc
import getpass
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ConfigError, SmsBotError
from bot.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from rich.console import Console

    from bot.app import App
    from bot.chat.console import ConsoleSurface
    from bot.config import Settings

__all__ = ["entry", "main"]

_SHELL_HELP = (
    "Type a command as in chat, e.g. `/sms health`, `status`, `logs backend 50`.\n"
    "`help` lists every command; `exit` or Ctrl-D leaves."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-bot",
        description="Run the SMS operations runbook from chat or the terminal.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="start the HTTP server (health, readiness, metrics)")
    sub.add_parser("shell", help="a terminal chat: type /sms commands")
    run = sub.add_parser("run", help="run one command as typed in chat, e.g. `run health`")
    run.add_argument(
        "words",
        nargs="+",
        metavar="WORDS",
        help="the command, e.g. logs backend 50; or a scheduled job, e.g. morning-summary",
    )
    run.add_argument(
        "--post",
        action="store_true",
        help=(
            "with a job: post it to SLACK_ALERT_CHANNEL (and TEAMS_REPORTS_CHANNEL) "
            "instead of printing it"
        ),
    )
    sub.add_parser("check-config", help="validate the configuration and print it")
    package = sub.add_parser(
        "teams-package", help="write the Teams app zip (manifest with TEAMS_APP_ID, icons)"
    )
    package.add_argument(
        "--out", default="sms-bot-teams.zip", metavar="PATH", help="where to write the zip"
    )
    replay = sub.add_parser(
        "replay",
        help="feed a saved Alertmanager webhook payload through routing and procedures",
    )
    replay.add_argument("file", metavar="FILE", help="a JSON file as Alertmanager posts it")
    return parser


def _local_user(source: str) -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{source}:{name}"


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run one command line; the cyclic garbage collector waits until the app is built.

    Start-up makes a few hundred thousand objects (modules, classes, the app)
    that live as long as the process. With the collector on, each new batch
    made it scan the older ones again: 160 collections, about an eighth of
    ``run health``'s CPU time. Off while starting; once the app is built,
    ``_started`` freezes what start-up made (later collections skip it) and
    turns the collector back on.

    On the way out the collector is left as the caller had it, nothing frozen,
    unless ``exiting``: the process ends next (``entry``), and the collection
    the interpreter makes as it exits would walk every unfrozen object, about
    200 ms of ``run health``'s 700. Then everything stays frozen instead.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if exiting:
            gc.freeze()
        else:
            gc.unfreeze()
            if enabled:
                gc.enable()
            else:
                gc.disable()


def entry() -> int:
    """The ``sms-bot`` program (``[project.scripts]``): ``main`` for a process that ends next."""
    return main(exiting=True)


def _started() -> None:
    """The app is built: start-up's objects are frozen, the collector on again."""
    gc.freeze()
    gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from bot.config import load_settings

    try:
        settings = load_settings()
        if settings.sms_alert_routes:
            # Routes name procedures: checked against the catalogue (loaded only then).
            # bot.logs first: it is what loads structlog without rich's extras.
            import bot.logs  # noqa: F401
            from handlers.registry import check_routes
            from procedures.catalogue import CATALOGUE

            check_routes(settings, CATALOGUE)
    except ConfigError as exc:
        print(f"sms-bot: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "check-config":
        return _check_config(settings)
    if args.action == "teams-package":
        return _teams_package(settings, args.out)

    import asyncio

    from bot.logs import configure_logging

    interactive = args.action in {"shell", "run", "replay"}
    level = settings.bot_log_level
    if interactive and level == "INFO":
        level = "WARNING"
    configure_logging(level, json=args.action == "serve")
    try:
        if args.action == "run":
            from handlers.jobs import JOB_NAMES

            if args.words[0] in JOB_NAMES:
                if len(args.words) > 1:
                    print(f"sms-bot: the job {args.words[0]} takes no arguments", file=sys.stderr)
                    return EXIT_USAGE
                return asyncio.run(_run_job(settings, args.words[0], post=args.post))
            if args.post:
                print("sms-bot: --post goes with a scheduled job", file=sys.stderr)
                return EXIT_USAGE
            return asyncio.run(_run_once(settings, " ".join(args.words)))
        if args.action == "shell":
            return asyncio.run(_shell(settings))
        if args.action == "replay":
            return asyncio.run(_replay(settings, args.file))
        return asyncio.run(_serve(settings))
    except ConfigError as exc:
        print(f"sms-bot: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SmsBotError as exc:
        print(f"sms-bot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


_SECRET_SETTINGS = ("token", "secret", "password")


def _check_config(settings: Settings) -> int:
    """Print the settings, secrets masked: this output ends up in terminals and tickets.

    Plain lines: a long path or URL stays on one line, whole, whatever the
    terminal's width.
    """
    from bot.redact import redact, redact_url

    print("Configuration is valid:")
    for name, value in settings.model_dump().items():
        shown = value
        if any(word in name for word in _SECRET_SETTINGS):
            shown = "(set, hidden)" if value else "(not set)"
        elif isinstance(value, str):
            shown = redact(redact_url(value))
        print(f"  {name.upper()} = {shown}")
        if name == "bot_state_url" and (state_file := _sqlite_state_file(value)):
            print(f"  state file: {state_file}")
    print(settings.slack_mode)
    print(settings.teams_mode)
    return EXIT_OK


def _teams_package(settings: Settings, out: str) -> int:
    """Write the Teams app zip (manifest with TEAMS_APP_ID, icons) for upload to Teams."""
    from bot.chat.teams_package import build_package

    if not settings.teams_app_id:
        print("sms-bot: teams-package needs TEAMS_APP_ID (the Azure Bot's app id)", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = build_package(settings.teams_app_id, Path(out))
    except (ValueError, OSError) as exc:
        print(f"sms-bot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Wrote {path}: upload it in Teams (Apps, Manage your apps, Upload an app).")
    return EXIT_OK


def _sqlite_state_file(url: str) -> str | None:
    """Where a ``sqlite:///`` state URL puts the file, made absolute.

    ``sqlite:///data/x.db`` is relative to the working directory and
    ``sqlite:////srv/x.db`` absolute: easy to get wrong, so say it.
    """
    from bot.store import sqlite_path

    if not url.startswith("sqlite:"):
        return None
    path = sqlite_path(url)
    if path == ":memory:":
        return "(in memory, gone when the process ends)"
    return str(Path(path).resolve())


async def _run_once(settings: Settings, text: str) -> int:
    from bot.app import build_app
    from bot.chat.console import ConsoleSurface
    from bot.events import Command
    from bot.messages import Conversation

    surface = ConsoleSurface()
    async with build_app(settings) as app:
        _started()
        command = Command(
            text=text,
            user=_local_user("cli"),
            source="cli",
            conversation=Conversation(surface="console"),
        )
        handled = await app.dispatcher.handle(command, surface)
        return handled.exit_code


async def _run_job(settings: Settings, name: str, *, post: bool) -> int:
    """Run a scheduled job now: printed, or posted like the scheduler would (--post)."""
    import asyncio

    from bot.app import build_app
    from bot.chat.console import ConsoleSurface
    from bot.events import Command
    from bot.messages import Conversation
    from handlers.jobs import job_procedure

    async with build_app(settings) as app:
        _started()
        if post:
            # Where the scheduler posts: Slack's alert channel, Teams' reports channel or both.
            if app.slack is None and not (app.teams and settings.teams_reports_channel):
                print(
                    "sms-bot: --post needs Slack (SLACK_BOT_TOKEN) or Teams with "
                    "TEAMS_REPORTS_CHANNEL",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            status = await app.scheduler.jobs[name].action()
            # Deliver before exiting: the outbox is the only way out to Slack and Teams.
            deadline = asyncio.get_running_loop().time() + 60
            while await app.deps.store.outbox_pending():
                if asyncio.get_running_loop().time() > deadline:
                    print(
                        "sms-bot: the chat did not take every message; they stay queued",
                        file=sys.stderr,
                    )
                    return EXIT_FAILED
                if not await app.outbox.drain_once():
                    await asyncio.sleep(0.5)
            return EXIT_FAILED if status.is_bad else EXIT_OK
        job, procedure = job_procedure(name)
        command = Command(
            text=name,
            user=_local_user("cli"),
            source="cli",
            conversation=Conversation(surface="console"),
        )
        run = await app.engine.execute(
            procedure, name=name, title=job.title, command=command, surface=ConsoleSurface()
        )
        return EXIT_FAILED if run.status.is_bad else EXIT_OK


async def _replay(settings: Settings, path: str) -> int:
    """Show offline what the bot would do with a saved alert payload, on the console."""
    import asyncio

    from bot.alerts import WebhookInvalid, parse_webhook
    from bot.app import build_app
    from bot.chat.console import ConsoleSurface
    from bot.events import Command
    from bot.messages import Conversation, Message, Status, worst
    from bot.routing import route_alert
    from procedures.catalogue import CATALOGUE

    try:
        body = await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        print(f"sms-bot: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        batch = parse_webhook(body)
    except WebhookInvalid as exc:
        print(f"sms-bot: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    surface = ConsoleSurface()
    worst_status = Status.OK
    async with build_app(settings) as app:
        _started()
        for alert in batch.alerts:
            route = route_alert(alert, settings.sms_alert_routes, CATALOGUE.routes())
            procedure = route.procedure or "none (a thread with labels and links)"
            text = (
                f"{alert.status} {alert.name} ({alert.fingerprint}): {alert.summary}\n"
                f"Route: priority {route.priority}, procedure {procedure} (rule {route.rule})"
            )
            await surface.post(
                Conversation("console"),
                Message(title=f"Replay: {alert.name}", status=Status.OK, text=text),
            )
            if alert.status != "firing" or not route.procedure:
                continue
            spec = CATALOGUE.alert(route.procedure)
            if spec is None:  # a route naming no alert procedure is refused at start
                continue
            command = Command(
                text=f"replay {alert.name}",
                user=_local_user("cli"),
                source="cli",
                conversation=Conversation("console"),
            )
            run = await app.engine.execute(
                spec.bind(alert),
                name=route.procedure,
                title=f"{route.priority} {alert.name}: {route.procedure}",
                command=command,
                surface=surface,
            )
            worst_status = worst([worst_status, run.status])
    return EXIT_FAILED if worst_status.is_bad else EXIT_OK


async def _shell(settings: Settings) -> int:
    import asyncio

    from rich.console import Console

    from bot.app import build_app
    from bot.chat.console import ConsoleSurface

    console = Console()
    surface = ConsoleSurface(console)
    user = _local_user("console")
    console.print(f"sms-bot shell as {user}. {_SHELL_HELP}", markup=False, highlight=False)
    async with build_app(settings) as app:
        _started()
        while True:
            try:
                line = await asyncio.to_thread(input, "sms> ")
            except EOFError:
                console.print()
                return EXIT_OK
            line = line.strip()
            if not line:
                continue
            if line.lower() in {"exit", "quit", "/exit", "/quit"}:
                return EXIT_OK
            if line.isdigit():
                await _answer_button(app, console, surface, user, int(line))
                continue
            await _dispatch_line(app, surface, user, line)


async def _answer_button(
    app: App, console: Console, surface: ConsoleSurface, user: str, number: int
) -> None:
    buttons = surface.buttons()
    if not buttons:
        console.print("There are no buttons to answer; type a command or `help`.")
        return
    if not 1 <= number <= len(buttons):
        console.print(f"Choose a button between 1 and {len(buttons)}.")
        return
    from bot.events import Click
    from bot.messages import Conversation

    button = buttons[number - 1]
    click = Click(
        action=button.action,
        value=button.value,
        user=user,
        source="console",
        conversation=Conversation(surface="console"),
    )
    await app.clicks.handle(click, surface)


async def _dispatch_line(app: App, surface: ConsoleSurface, user: str, line: str) -> None:
    from bot.events import Command
    from bot.messages import Conversation

    command = Command(
        text=line, user=user, source="console", conversation=Conversation(surface="console")
    )
    await app.dispatcher.handle(command, surface)


async def _serve(settings: Settings) -> int:
    import asyncio

    import structlog

    from bot.app import build_app
    from bot.http import serve

    log = structlog.get_logger(__name__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "slack.mode",
        mode=settings.slack_mode,
        http=settings.slack_http_enabled,
        socket_mode=settings.slack_socket_mode_enabled,
    )
    # The app, its routes and its loops come up (and go down) together in build_app.
    async with build_app(settings, serve=True) as app:
        _started()
        assert app.http is not None
        log.info(
            "serve.listening",
            host=settings.bot_host,
            port=settings.bot_port,
            slack=app.slack is not None,
            slack_http=settings.slack_http_enabled,
            slack_socket_mode=settings.slack_socket_mode_enabled,
            teams=app.teams is not None,
        )
        await serve(app.http, host=settings.bot_host, port=settings.bot_port, stop=stop)
    log.info("serve.stopped")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(entry())
