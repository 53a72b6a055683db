"""``coinlink verify`` run as a user runs it, against a real ``coinlink serve`` (PostgreSQL,
Redis, the simulator feeding tickers, admin ticks on, a metrics token), against the same
kind of server with its Redis stopped, and against a port where nothing listens."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import log_guard
from tests.support.accounts import admin_headers
from tests.support.apps import ROOT, ServerProcess, ingest_heartbeat, instance_env
from tests.support.nginx import nginx_in_front_of
from tests.support.services import RedisServer, free_port, wait_for

pytestmark = pytest.mark.timeout(240)
METRICS_TOKEN = f"verify-test-{uuid.uuid4().hex}"
VERIFY_TIMEOUT_S = 90  # the command's own budget is under a minute


def verify(url: str, *options: str) -> tuple[int, dict[str, Any]]:
    """Exit status and parsed JSON output of ``python -m coinlink verify --json``."""
    done = subprocess.run(
        [sys.executable, "-m", "coinlink", "verify", "--url", url, "--json", *options],
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT_S,
        cwd=ROOT,
    )
    assert done.stdout, done.stderr  # a crash prints a traceback, no report
    return done.returncode, json.loads(done.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


def start(pg_url: str, redis_url: str) -> ServerProcess:
    env = instance_env(
        pg_url, redis_url, admin_ticks="true", provider="simulator", metrics_token=METRICS_TOKEN
    )
    server = ServerProcess(env).wait_ready()
    # Tickers flow once the ingest leader runs: then a ticker has a price to alert above.
    wait_for(lambda: ingest_heartbeat(server), 30, "the ingest leader's heartbeat")
    return server


@pytest.fixture
def server(fresh_pg_url: str, redis_url: str) -> Iterator[ServerProcess]:
    server = start(fresh_pg_url, redis_url)
    try:
        yield server
    finally:
        server.stop()


def test_a_healthy_deployment_passes_every_check(server: ServerProcess, fresh_pg_url: str) -> None:
    token = admin_headers(server, fresh_pg_url)["authorization"].removeprefix("Bearer ")
    status, report = verify(
        server.base_url, "--admin-token", token, "--metrics-token", METRICS_TOKEN
    )
    assert status == 0, report
    assert report["ok"] is True
    assert set(statuses(report).values()) == {"pass"}, report
    assert list(statuses(report)) == [
        "health",
        "readiness",
        "security-headers",
        "cors",
        "rate-limit-headers",
        "auth-round-trip",
        "websocket",
        "alert",
        "metrics-not-public",
        "latency",
    ]
    latency = next(c for c in report["checks"] if c["name"] == "latency")
    print(f"verify latency: {latency['detail']}")


def test_a_deployment_behind_the_shipped_nginx_passes_too(
    server: ServerProcess, fresh_pg_url: str
) -> None:
    token = admin_headers(server, fresh_pg_url)["authorization"].removeprefix("Bearer ")
    with nginx_in_front_of([f"127.0.0.1:{server.port}"]) as proxy:
        status, report = verify(proxy.base_url, "--admin-token", token)
    # The WebSocket upgrade, headers and CORS through the proxy; /metrics hidden by it.
    assert status == 0, report
    assert set(statuses(report).values()) == {"pass"}, report


@pytest.mark.expected_errors(*log_guard.REDIS_GONE)
def test_a_deployment_without_redis_fails_readiness(fresh_pg_url: str) -> None:
    redis = RedisServer().start()
    server = start(fresh_pg_url, redis.url)
    try:
        redis.stop()
        status, report = verify(server.base_url)
    finally:
        server.stop()
        redis.stop()
    assert status == 1
    assert report["ok"] is False
    assert statuses(report)["readiness"] == "fail", report
    assert statuses(report)["health"] == "pass", report


def test_nothing_listening_fails_health_quickly() -> None:
    started = time.monotonic()
    status, report = verify(f"http://127.0.0.1:{free_port()}")
    assert status == 1
    assert report["ok"] is False
    assert report["checks"][0]["name"] == "health"
    assert report["checks"][0]["status"] == "fail"
    assert time.monotonic() - started < 20
