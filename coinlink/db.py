"""The database: Tortoise configuration, per-worker registration and migrations.

Migrations use tortoise-orm 1.x's built-in migration framework rather than aerich: its
operations are rendered by each backend's schema editor, so one migration file applies to
SQLite (the embedded default) and PostgreSQL alike, while aerich stores dialect-bound SQL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
from sanic import Sanic
from tortoise import Tortoise
from tortoise.connection import get_connection
from tortoise.contrib.sanic import register_tortoise
from tortoise.migrations.api import migrate as tortoise_migrate
from tortoise.migrations.executor import MigrationExecutor, PlanStep

from models import MODEL_MODULES

APP_LABEL = "models"
MIGRATIONS_MODULE = "migrations"


# pg_advisory_lock key of migrations (any constant every CoinLink agrees on: "coinlink").
MIGRATION_LOCK_KEY = int.from_bytes(b"coinlink", "big") >> 1
_CONNECTION_PARAMETERS = frozenset(
    {"host", "port", "ssl", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword",
     "passfile", "target_session_attrs", "application_name"}
)  # fmt: skip


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": database_url},
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


@contextlib.asynccontextmanager
async def _migration_lock(database_url: str) -> AsyncIterator[None]:
    """On PostgreSQL, one migrating process at a time: instances starting together would
    otherwise all see the same pending migrations and all apply them. The lock is held by a
    connection of its own and goes with it (also when the process dies)."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql", "asyncpg", "psycopg"):
        yield  # SQLite: one process on one file
        return
    # Tortoise's own parameters (minsize, ...) mean nothing to asyncpg; TLS and host do.
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k in _CONNECTION_PARAMETERS]
    dsn = parts._replace(scheme="postgresql", query=urlencode(kept), fragment="").geturl()
    # A migrator that hangs holding the lock must not block every other start for ever.
    conn = await asyncpg.connect(dsn, server_settings={"lock_timeout": "300s"})
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        yield
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
