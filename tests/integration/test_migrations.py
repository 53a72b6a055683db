"""Migrations apply to a fresh SQLite file and a fresh PostgreSQL database, twice in a row."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from coinlink.db import apply_migrations, pending_migrations
from tests.support.apps import ROOT, server_env

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
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "coinlink", "migrate"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert asyncio.run(pending_migrations(fresh_pg_url)) == []
    # Every migration was applied exactly once, by one of them.
    applied = "".join(out for out, _ in outputs)
    for name in ALL:
        assert applied.count(name) == 1, applied
