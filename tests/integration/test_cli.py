"""The ``coinlink`` command as an operator runs it: real processes, real databases."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from coinlink.db import apply_migrations
from tests.support.apps import ROOT, server_env
from tests.support.services import free_port


def coinlink(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coinlink", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def production_env(**values: str) -> dict[str, str]:
    env = server_env(COINLINK_ENV="production")
    for name in ("COINLINK_JWT_SECRET", "COINLINK_CORS_ORIGINS", "COINLINK_BCRYPT_ROUNDS"):
        env.pop(name)
    env.update(values)
    return env


@pytest.mark.parametrize("command", [["serve"], ["check-config"], ["migrate"]])
def test_production_refuses_with_one_message_naming_everything(command: list[str]) -> None:
    result = coinlink(*command, env=production_env(COINLINK_JWT_SECRET="change-me" * 5))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("invalid configuration") == 1
    for variable in ("COINLINK_DATABASE_URL", "COINLINK_REDIS_URL", "COINLINK_CORS_ORIGINS"):
        assert variable in result.stderr
    assert "COINLINK_JWT_SECRET: looks like a placeholder" in result.stderr
    assert "change-me" not in result.stderr  # the refused value itself is never echoed


def test_check_config_prints_masked_settings(pg_url: str) -> None:
    env = server_env(COINLINK_DATABASE_URL=pg_url.replace("postgres@", "postgres:hunter2@"))
    result = coinlink("check-config", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["COINLINK_ENV"] == "test"
    assert shown["COINLINK_JWT_SECRET"] == "********"
    assert "hunter2" not in result.stdout
    assert env["COINLINK_JWT_SECRET"] not in result.stdout


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    env = server_env(COINLINK_DATABASE_URL=f"sqlite://{tmp_path}/cli.sqlite3")
    first = coinlink("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    second = coinlink("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout


def test_production_serve_refuses_pending_migrations(fresh_pg_url: str, redis_url: str) -> None:
    env = production_env(
        COINLINK_DATABASE_URL=fresh_pg_url,
        COINLINK_REDIS_URL=redis_url,
        COINLINK_JWT_SECRET="Zq8vN3tR6yB1mK4pX7cW2eH5jL9sD0fG",
        COINLINK_CORS_ORIGINS="https://app.coinlink.test",
    )
    result = coinlink("serve", "--port", "1", env=env)
    assert result.returncode == 3
    assert "coinlink migrate" in result.stdout + result.stderr
    assert "0001_initial" in result.stdout + result.stderr


def test_users_create(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/users.sqlite3"
    asyncio.run(apply_migrations(url))
    env = server_env(COINLINK_DATABASE_URL=url)
    args = ["users", "create", "--email", "Root@Example.COM", "--password", "correct horse"]
    created = coinlink(*args, "--admin", env=env)
    assert created.returncode == 0, created.stderr
    assert "created admin root@example.com" in created.stdout
    again = coinlink(*args, env=env)
    assert again.returncode == 1
    assert "already registered" in again.stderr
    weak = coinlink("users", "create", "--email", "x@example.com", "--password", "short", env=env)
    assert weak.returncode == 1
    assert "at least 8 bytes" in weak.stderr
    bad_email = coinlink("users", "create", "--email", "nope", "--password", "long enough", env=env)
    assert bad_email.returncode == 1
    assert "invalid email" in bad_email.stderr

    coinlink(
        "users", "create", "--email", "second@example.com", "--password", "long enough", env=env
    )
    listed = coinlink("users", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["email"], r["is_admin"]) for r in rows] == [
        ("root@example.com", True),
        ("second@example.com", False),
    ]
    assert "password" not in listed.stdout and "$2b$" not in listed.stdout
    table = coinlink("users", "list", env=env)
    assert "root@example.com" in table.stdout and "yes" in table.stdout


@pytest.mark.parametrize("command", [["serve"], ["migrate"]])
def test_unreachable_database_is_one_clear_line(command: list[str]) -> None:
    dead = f"postgres://postgres:hunter2@127.0.0.1:{free_port()}/nothing"
    result = coinlink(*command, env=server_env(COINLINK_DATABASE_URL=dead))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "database_unreachable" in output
    assert "Traceback" not in output
    assert "hunter2" not in output
