"""schemathesis fuzzes a real ``coinlink serve`` from its own OpenAPI document, with every
check (``--checks all``): no 5xx, every status, header and body as documented, schema-valid
input accepted, schema-violating input refused. Once as a user, once as an admin; a fixed
seed keeps each run the same inputs (a failure reproduces), bounded examples keep each
run under a minute. The server's log must show no error line (log_guard)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.support.accounts import PASSWORD, make_admin, new_email
from tests.support.apps import ROOT, ServerProcess, instance_env

pytestmark = pytest.mark.timeout(600)
SCHEMATHESIS = ROOT / ".venv" / "bin" / "st"
CONFIG = ROOT / "tests" / "support" / "schemathesis.toml"
MAX_EXAMPLES = 40
SEED = 20261206


@pytest.fixture(scope="module")
def server(module_pg_url: str, redis_url: str) -> Iterator[ServerProcess]:
    env = instance_env(module_pg_url, redis_url, admin_ticks="true", provider="simulator")
    server = ServerProcess(env).wait_ready()
    try:
        yield server
    finally:
        server.stop()


def account(server: ServerProcess, database_url: str, *, admin: bool) -> str:
    email = new_email()
    response = httpx.post(
        server.base_url + "/api/v2/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    if admin:
        make_admin(database_url, email)
    return email


@pytest.mark.parametrize("admin", [False, True], ids=["user", "admin"])
def test_schemathesis_finds_nothing(server: ServerProcess, module_pg_url: str, admin: bool) -> None:
    email = account(server, module_pg_url, admin=admin)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.fuzz_auth",
        "FUZZ_BASE_URL": server.base_url,
        "FUZZ_EMAIL": email,
        "FUZZ_PASSWORD": PASSWORD,
    }
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{server.base_url}/docs/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert "32 passed" in done.stdout  # every operation was exercised
