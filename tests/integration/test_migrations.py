"""Migrations apply to a fresh SQLite file and a fresh PostgreSQL database, twice in a row."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from coinlink import db
from coinlink.db import (
    MIGRATION_LOCK_KEY,
    MigrationLockTimeout,
    _migration_lock,
    apply_migrations,
    pending_migrations,
)
from tests.support.apps import ROOT, server_env, start_migrators

ALL = ["0001_initial", "0002_market", "0003_alerts"]


def migrate_twice(url: str) -> None:
    assert asyncio.run(pending_migrations(url)) == ALL
    assert asyncio.run(apply_migrations(url)) == ALL
    assert asyncio.run(apply_migrations(url)) == []
    assert asyncio.run(pending_migrations(url)) == []


def test_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "coinlink.sqlite3"
    migrate_twice(f"sqlite://{path}")
    assert path.exists()


def test_fresh_postgres_database(fresh_pg_url: str) -> None:
    migrate_twice(fresh_pg_url)

    async def tables() -> set[str]:
        conn = await asyncpg.connect("postgresql://" + fresh_pg_url.split("://", 1)[1])
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        return {row["tablename"] for row in rows}

    assert {"users", "sessions", "refresh_tokens", "candles", "tortoise_migrations"} <= asyncio.run(
        tables()
    )


@pytest.mark.parametrize("scheme", ["sqlite", "postgres"])
def test_schema_supports_the_models(scheme: str, tmp_path: Path, fresh_pg_url: str) -> None:
    """A user row round-trips on both backends: the one migration file fits both dialects.

    Each backend runs in a process of its own (``coinlink users create``), as in production:
    Tortoise keeps per-process state that is not meant to switch dialects.
    """
    url = f"sqlite://{tmp_path}/x.sqlite3" if scheme == "sqlite" else fresh_pg_url
    asyncio.run(apply_migrations(url))
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "coinlink",
            "users",
            "create",
            "--email",
            "A@B.io",
            "--password",
            "long enough",
            "--display-name",
            "Ada",
            "--admin",
        ],
        env=server_env(COINLINK_DATABASE_URL=url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    query = "SELECT email, display_name, is_admin, password_hash FROM users"
    if scheme == "sqlite":
        with sqlite3.connect(tmp_path / "x.sqlite3") as conn:
            rows = conn.execute(query).fetchall()
    else:

        async def fetch() -> list[tuple[object, ...]]:
            conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
            try:
                return [tuple(row) for row in await conn.fetch(query)]
            finally:
                await conn.close()

        rows = asyncio.run(fetch())
    [(email, display_name, is_admin, password_hash)] = rows
    assert (email, display_name, bool(is_admin)) == ("a@b.io", "Ada", True)
    assert str(password_hash).startswith("$2b$04$")  # bcrypt, the configured test cost


def test_concurrent_migrations_of_one_fresh_database_both_succeed(fresh_pg_url: str) -> None:
    """Instances starting together each migrate: an advisory lock lets one apply, the other
    then finds nothing pending (without it, both create the same tables and one fails)."""
    env = server_env(COINLINK_DATABASE_URL=fresh_pg_url)
    runs = start_migrators(env, 3)
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert asyncio.run(pending_migrations(fresh_pg_url)) == []
    # Every migration was applied exactly once, by one of them.
    applied = "".join(out for out, _ in outputs)
    for name in ALL:
        assert applied.count(name) == 1, applied


async def lock_is_free(url: str) -> bool:
    """Whether another session could take the migration lock now (released at once)."""
    conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
    try:
        async with conn.transaction():
            return bool(
                await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            )
    finally:
        await conn.close()


async def test_the_lock_outlives_a_servers_idle_in_transaction_timeout(fresh_pg_url: str) -> None:
    """Managed PostgreSQL services often end sessions idle in a transaction after a while:
    the lock's session idles for the whole migration, which runs on other sessions."""
    conn = await asyncpg.connect("postgresql://" + fresh_pg_url.split("://", 1)[1])
    try:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 200')
    finally:
        await conn.close()
    async with _migration_lock(fresh_pg_url):
        # Idle for several timeouts (the point of the test, not a synchronisation).
        await asyncio.sleep(1.0)
        assert not await lock_is_free(fresh_pg_url)
    assert await lock_is_free(fresh_pg_url)


async def test_a_migrator_waits_for_the_lock_for_a_bounded_time(
    fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "MIGRATION_LOCK_WAIT_S", 0.5)
    async with _migration_lock(fresh_pg_url):
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout, match="held the migration lock"):
            async with _migration_lock(fresh_pg_url):
                pytest.fail("two holders of the migration lock")
        assert time.monotonic() - started < 5
    async with _migration_lock(fresh_pg_url):  # released by the holder: free again
        pass
