"""The ``coinlink`` command line: serve, migrate, check-config, users, verify.

Exit codes: 0 success, 1 a failed operation, 2 invalid configuration or arguments,
3 migrations pending where they may not be applied automatically.

Heavy imports happen inside the commands: ``serve`` must point prometheus-client at its
multi-process directory before anything imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr

from config import ConfigError, Settings, ephemeral_secret, load_settings
from config.settings import mask_url_password

if TYPE_CHECKING:
    from sanic import Sanic

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_MIGRATIONS_PENDING = 3

log = structlog.get_logger(logger_name="coinlink.cli")


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    from coinlink.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.effective_log_format)
    return settings


def _prepare_metrics_dir() -> str | None:
    """One fresh directory shared by all workers of this server, wiped before they start.

    Returns the directory when this process made it (and removes it on exit).
    """
    from coinlink.observability.metrics import MULTIPROC_DIR_ENV

    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
        return None
    made = os.environ[MULTIPROC_DIR_ENV] = tempfile.mkdtemp(prefix="coinlink-metrics-")
    return made


def _ensure_jwt_secret(settings: Settings) -> Settings:
    if settings.jwt.secret is not None:
        return settings
    # Exported so that every worker signs with the same secret; gone when the server stops.
    secret = os.environ["COINLINK_JWT_SECRET"] = ephemeral_secret()
    log.warning(
        "ephemeral_jwt_secret",
        message="COINLINK_JWT_SECRET is not set: using a random secret for this run only; "
        "every token becomes invalid when the server restarts. Never do this in production.",
    )
    jwt = settings.jwt.model_copy(update={"secret": SecretStr(secret)})
    return settings.model_copy(update={"jwt": jwt})


async def _migrate_or_refuse(settings: Settings) -> int:
    from coinlink.db import apply_migrations, pending_migrations

    url = settings.effective_database_url
    if settings.effective_auto_migrate:
        for name in await apply_migrations(url):
            log.info("migration_applied", migration=name)
        return 0
    pending = await pending_migrations(url)
    if pending:
        log.error(
            "migrations_pending",
            pending=pending,
            message="the database schema is behind this version; run `coinlink migrate` first",
        )
        return EXIT_MIGRATIONS_PENDING
    return 0


def _run_db(settings: Settings, work: Coroutine[Any, Any, int]) -> int:
    """Run database work; an unreachable database is one clear line, not a traceback."""
    from tortoise.exceptions import DBConnectionError

    try:
        return asyncio.run(work)
    except (OSError, DBConnectionError) as exc:
        log.error(
            "database_unreachable",
            database=mask_url_password(settings.effective_database_url),
            error=str(exc) or type(exc).__name__,
        )
        return EXIT_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    from coinlink.serving import manager

    # A pod deleted while it starts must still stop, cleanly: SIGTERM from here on is kept
    # until it can be acted on, never interrupting a migration half-way.
    manager.defer_stop_signals()
    settings = _settings(host=args.host, port=args.port, workers=args.workers)
    settings = _ensure_jwt_secret(settings)
    status = _run_db(settings, _migrate_or_refuse(settings))
    if status:
        return status
    if manager.stop_requested():
        log.info("stopped_before_serving")
        return 0
    from coinlink.serving.listener import bound_socket

    try:
        sock = bound_socket(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot_listen", host=settings.host, port=settings.port, error=str(exc))
        return EXIT_FAILED
    made_metrics_dir = _prepare_metrics_dir()

    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from coinlink.app import create_app
    from coinlink.serving.protocol import FinishingProtocol

    loader = AppLoader(factory=args.app_factory or create_app)
    app = loader.load()
    app.prepare(
        sock=sock,
        workers=settings.effective_workers,
        access_log=False,
        motd=False,
        # Sanic's default of 100 overflows when a few hundred clients connect at once.
        backlog=1024,
        single_process=False,
        protocol=FinishingProtocol,
    )
    log.info(
        "serving",
        url=f"http://{settings.host}:{settings.port}",
        workers=settings.effective_workers,
        env=settings.env,
    )
    app.main_process_ready(manager.adapt)
    manager.keep_state_manager_through_signals()
    try:
        Sanic.serve(primary=app, app_loader=loader)
    finally:
        if made_metrics_dir:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    from coinlink.db import apply_migrations

    async def migrate() -> int:
        applied = await apply_migrations(settings.effective_database_url)
        for name in applied:
            print(f"applied {name}")
        if not applied:
            print("database is up to date")
        return 0

    return _run_db(settings, migrate())


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings()
    print(json.dumps(settings.masked(), indent=2, default=str))
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    settings = _settings()
    from coinlink.accounts.user_admin import UserError, create_user_cli

    try:
        user_id, email = asyncio.run(
            create_user_cli(settings, args.email, args.password, args.display_name, args.admin)
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    role = "admin" if args.admin else "user"
    print(f"created {role} {email} ({user_id})")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    settings = _settings()
    from coinlink.accounts.user_admin import UserError, list_users_cli

    try:
        users = asyncio.run(list_users_cli(settings))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        rows = [
            {
                "id": str(u.id),
                "email": u.email,
                "display_name": u.display_name,
                "is_admin": u.is_admin,
                "created_at": u.created_at.isoformat(),
            }
            for u in users
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':36}  {'admin':5}  {'created':19}  email")
    for u in users:
        created = u.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{u.id!s:36}  {'yes' if u.is_admin else 'no':5}  {created:19}  {u.email}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from coinlink.verify import Target, verify

    if not args.url.startswith(("http://", "https://")):
        print("error: --url must be an http:// or https:// URL", file=sys.stderr)
        return EXIT_CONFIG
    target = Target(args.url, args.admin_token, args.metrics_token)
    return 0 if verify(target, args.json) else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coinlink", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (default 1; one per core in production)"
    )
    serve.set_defaults(func=cmd_serve)

    commands.add_parser("migrate", help="apply pending migrations (idempotent)").set_defaults(
        func=cmd_migrate
    )
    commands.add_parser(
        "check-config", help="validate and print the settings, secrets masked"
    ).set_defaults(func=cmd_check_config)

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True
    )
    create = users.add_parser("create", help="create a user")
    create.add_argument("--email", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--display-name", default="")
    create.add_argument("--admin", action="store_true", help="grant admin rights")
    create.set_defaults(func=cmd_users_create)
    listing = users.add_parser("list", help="list users")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_users_list)

    check = commands.add_parser(
        "verify", help="check a live deployment end to end; exit 1 naming what failed"
    )
    check.add_argument("--url", required=True, help="the deployment's base URL")
    check.add_argument("--admin-token", help="an admin's access token: enables the alert check")
    check.add_argument("--metrics-token", help="COINLINK_METRICS_TOKEN: /metrics must accept it")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(func=cmd_verify)
    return parser


def main(
    argv: Sequence[str] | None = None, *, app_factory: Callable[[], Sanic[Any, Any]] | None = None
) -> int:
    """Run a command; ``app_factory`` replaces ``create_app`` for ``serve`` (tests inject
    faults this way, nothing in the settings does)."""
    args = build_parser().parse_args(argv)
    args.app_factory = app_factory
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    return status


if __name__ == "__main__":
    sys.exit(main())
