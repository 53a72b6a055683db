"""The database: Tortoise configuration, per-worker registration and migrations.

Migrations use tortoise-orm 1.x's built-in migration framework rather than aerich: its
operations are rendered by each backend's schema editor, so one migration file applies to
SQLite (the embedded default) and PostgreSQL alike, while aerich stores dialect-bound SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
from sanic import Sanic
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.connection import get_connection
from tortoise.contrib.sanic import register_tortoise
from tortoise.migrations.api import migrate as tortoise_migrate
from tortoise.migrations.executor import MigrationExecutor, PlanStep

from coinlink.backoff import Backoff
from models import MODEL_MODULES

APP_LABEL = "models"
MIGRATIONS_MODULE = "migrations"


# pg_advisory_lock key of migrations (any constant every CoinLink agrees on: "coinlink").
MIGRATION_LOCK_KEY = int.from_bytes(b"coinlink", "big") >> 1
# How long a migrator waits for another's migration before giving up, and its retry pace.
MIGRATION_LOCK_WAIT_S = 300.0
_LOCK_RETRY_BASE_S, _LOCK_RETRY_CAP_S = 0.05, 2.0
_CONNECTION_PARAMETERS = frozenset(
    {"host", "port", "ssl", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword",
     "passfile", "target_session_attrs", "application_name"}
)  # fmt: skip


async def _keep_session(connection: asyncpg.Connection) -> None:
    """asyncpg's pool ``reset``: nothing beyond the rollback of an open transaction, which
    asyncpg does before calling it.

    The default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release: a second round trip for every query through Tortoise (which takes a connection
    per query), ~20 % of an authenticated request's CPU. The pool's connections never
    change session state: no SET, LISTEN, advisory lock or cursor outside a transaction
    (the migration lock has a connection of its own).
    """


def _connection(database_url: str) -> str | dict[str, Any]:
    if urlsplit(database_url).scheme not in ("postgres", "postgresql", "asyncpg"):
        return database_url
    config: dict[str, Any] = expand_db_url(database_url)
    config["credentials"]["reset"] = _keep_session
    return config


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": _connection(database_url)},
        "apps": {
            APP_LABEL: {
                "models": list(MODEL_MODULES),
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def ensure_sqlite_directory(database_url: str) -> None:
    """SQLite creates the file but not its directory (``./var/`` on a fresh checkout)."""
    parts = urlsplit(database_url)
    if parts.scheme == "sqlite":
        path = (parts.netloc + parts.path).split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def register(app: Sanic[Any, Any], database_url: str) -> None:
    """Open the ORM in every worker (``before_server_start``) and close it on stop."""
    ensure_sqlite_directory(database_url)
    register_tortoise(app, config=tortoise_config(database_url))


async def _plan(database_url: str) -> list[PlanStep]:
    await Tortoise.init(config=tortoise_config(database_url), init_connections=False)
    try:
        apps = tortoise_config(database_url)["apps"]
        return await MigrationExecutor(get_connection("default"), apps).plan(None)
    finally:
        await Tortoise.close_connections()


async def pending_migrations(database_url: str) -> list[str]:
    ensure_sqlite_directory(database_url)
    return [step.migration.name for step in await _plan(database_url) if not step.backward]


class MigrationLockTimeout(RuntimeError):
    """Another migrator held the migration lock for longer than :data:`MIGRATION_LOCK_WAIT_S`."""


@contextlib.asynccontextmanager
async def _migration_lock(database_url: str) -> AsyncIterator[None]:
    """On PostgreSQL, one migrating process at a time: instances starting together would
    otherwise all see the same pending migrations and all apply them.

    The lock belongs to a transaction held open on a connection of its own, and goes with
    its end (also when the process dies): unlike a session lock, that works through
    PgBouncer in transaction mode, which keeps one server session for a transaction but
    hands it to other clients between them (a session lock would stay behind on it).

    A waiter tries (``pg_try_advisory_xact_lock``) in short transactions, with backoff,
    rather than waiting inside one: through a pooler a waiting transaction holds a server
    session, and with a small pool the holder's migration would find none left (a deadlock
    until the wait timed out). Only the holder keeps its transaction open."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql", "asyncpg", "psycopg"):
        yield  # SQLite: one process on one file
        return
    # Tortoise's own parameters (minsize, ...) mean nothing to asyncpg; TLS and host do.
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k in _CONNECTION_PARAMETERS]
    dsn = parts._replace(scheme="postgresql", query=urlencode(kept), fragment="").geturl()
    # No named prepared statement: behind a transaction pooler it would outlive this client
    # on a server session others use.
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        # A migrator that hangs holding the lock must not block every other start for ever.
        deadline = time.monotonic() + MIGRATION_LOCK_WAIT_S
        backoff = Backoff(_LOCK_RETRY_BASE_S, _LOCK_RETRY_CAP_S)
        while True:
            async with conn.transaction():
                if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MIGRATION_LOCK_KEY):
                    # The lock's session sits idle in its transaction while the migration
                    # runs on others: a server-side idle_in_transaction_session_timeout
                    # (on by default on some managed services) would end it and free the
                    # lock mid-migration (SET LOCAL: a pooler passes no session settings).
                    await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                    yield
                    return
            wait = backoff.next()
            if time.monotonic() + wait > deadline:
                raise MigrationLockTimeout(
                    f"another migrator held the migration lock for {MIGRATION_LOCK_WAIT_S:.0f} s"
                )
            await asyncio.sleep(wait)
    finally:
        await conn.close()


async def apply_migrations(
    database_url: str, progress: Callable[[str], object] | None = None
) -> list[str]:
    """Apply every pending migration; idempotent. Returns the names applied."""
    async with _migration_lock(database_url):
        pending = await pending_migrations(database_url)
        if pending:
            await Tortoise.init(config=tortoise_config(database_url), init_connections=False)
            try:
                await tortoise_migrate(config=tortoise_config(database_url))
            finally:
                await Tortoise.close_connections()
    for name in pending:
        if progress:
            progress(name)
    return pending


# For Tortoise's own CLI when writing a new migration:
#   .venv/bin/tortoise -c coinlink.db.TORTOISE_ORM makemigrations
TORTOISE_ORM = tortoise_config(
    os.environ.get("COINLINK_DATABASE_URL", "sqlite://var/coinlink.sqlite3")
)
