"""A Python client generated from the served OpenAPI document (openapi-python-client, no
warnings allowed) signs in, reads tickers and creates an alert against a real server, each
response parsed into its typed model."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support.accounts import PASSWORD, new_email
from tests.support.apps import ROOT, ServerProcess, instance_env

pytestmark = pytest.mark.timeout(180)
BIN = ROOT / ".venv" / "bin"


@pytest.fixture(scope="module")
def server(module_pg_url: str, redis_url: str) -> Iterator[ServerProcess]:
    server = ServerProcess(instance_env(module_pg_url, redis_url)).wait_ready()
    try:
        yield server
    finally:
        server.stop()


def generate(document: bytes, where: Path) -> ModuleType:
    """The client package generated from ``document`` into ``where``, imported."""
    name = f"coinlink_client_{uuid.uuid4().hex[:8]}"
    (where / "openapi.json").write_bytes(document)
    done = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(where / "openapi.json"),
            "--output-path",
            str(where / name),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        # Its post-generation hook formats the code with ruff, from PATH.
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(where))


def module(package: ModuleType, path: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{path}")


def test_a_generated_client_signs_in_reads_tickers_and_creates_an_alert(
    server: ServerProcess, tmp_path: Path
) -> None:
    client = generate(httpx.get(server.base_url + "/docs/openapi.json").content, tmp_path)
    models = module(client, "models")
    email = new_email()
    anonymous = client.Client(base_url=server.base_url, raise_on_unexpected_status=True)

    register = module(client, "api.auth.register").sync_detailed(
        client=anonymous, body=models.Register(email=email, password=PASSWORD)
    )
    assert register.status_code == 201
    signed_in = module(client, "api.auth.login").sync_detailed(
        client=anonymous, body=models.Login(email=email, password=PASSWORD)
    )
    assert signed_in.status_code == 200 and isinstance(signed_in.parsed, models.SignedIn)
    assert signed_in.parsed.user.email == email
    assert isinstance(signed_in.parsed.user.id, uuid.UUID)
    user = client.AuthenticatedClient(
        base_url=server.base_url,
        token=signed_in.parsed.tokens.access_token,
        raise_on_unexpected_status=True,
    )

    tickers = module(client, "api.market.tickers").sync_detailed(client=anonymous)
    assert isinstance(tickers.parsed, models.TickerItems)
    assert tickers.parsed.items and all(isinstance(t, models.Ticker) for t in tickers.parsed.items)
    assert {t.symbol for t in tickers.parsed.items} >= {"BTC-USD"}

    created = module(client, "api.alerts.create_alert").sync_detailed(
        client=user,
        body=models.LevelAlertIn(
            symbol="BTC-USD",
            condition=models.LevelAlertInCondition.ABOVE,
            threshold="70000.5",
        ),
    )
    assert created.status_code == 201 and isinstance(created.parsed, models.Alert)
    alert = created.parsed
    assert alert.threshold == "70000.5" and alert.status == models.AlertStatus.ACTIVE
    read = module(client, "api.alerts.get_alert").sync_detailed(str(alert.id), client=user)
    assert isinstance(read.parsed, models.Alert) and read.parsed.id == alert.id

    refused = module(client, "api.alerts.create_alert").sync_detailed(
        client=user,
        body=models.LevelAlertIn(
            symbol="BTC-USD", condition=models.LevelAlertInCondition.BELOW, threshold="0"
        ),
    )
    assert refused.status_code == 422 and isinstance(refused.parsed, models.ErrorEnvelope)
    assert refused.parsed.error.code == "validation_error"
