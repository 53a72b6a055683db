"""``coinlink serve`` as a real process: workers, metrics, logs and shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.apps import ServerProcess, running_server, server_env
from tests.support.services import wait_for

REQUESTS = 120  # even: half to /health, half to /api/v2/users/me


def requests_counted(metrics: str, route: str, status: int) -> float:
    labels = f'method="GET",route="{route}",status="{status}"'
    pattern = rf"^http_requests_total\{{{re.escape(labels)}\}} (\S+)$"
    match = re.search(pattern, metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_every_request_across_two_workers(pg_url: str, redis_url: str) -> None:
    env = server_env(COINLINK_DATABASE_URL=pg_url, COINLINK_REDIS_URL=redis_url)
    with running_server(env, workers=2) as server:
        wait_for(lambda: server.logged("workers_started"), 30, "both workers serving")
        workers = sorted(server.worker_pids())
        assert len(workers) == 2
        before = httpx.get(server.base_url + "/metrics").text

        def hit(n: int) -> int:
            path = "/health" if n % 2 else "/api/v2/users/me"
            with httpx.Client(headers={"connection": "close"}) as client:
                return client.get(server.base_url + path).status_code

        # Which worker accepts a connection is the kernel's choice: pausing one worker while
        # the other serves half the requests makes both count some, every run.
        statuses: list[int] = []
        half = REQUESTS // 2
        for i, paused in enumerate(workers):
            batch = range(i * half, (i + 1) * half)
            os.kill(paused, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(8) as pool:
                    statuses += pool.map(hit, batch)
            finally:
                os.kill(paused, signal.SIGCONT)
        assert sorted(statuses) == [200] * (REQUESTS // 2) + [401] * (REQUESTS // 2)

        after = httpx.get(server.base_url + "/metrics").text
        for route, status in (("/health", 200), ("/api/v2/users/me", 401)):
            counted = requests_counted(after, route, status) - requests_counted(
                before, route, status
            )
            assert counted == REQUESTS // 2, route

        served = set()
        for line in server.output().splitlines():
            if line.startswith("{") and '"route":"/api/v2/users/me"' in line:
                served.add(json.loads(line)["pid"])
        assert served == set(workers)


def test_logs_bind_each_keep_alive_request_to_its_own_trace_id(pg_url: str) -> None:
    env = server_env(COINLINK_DATABASE_URL=pg_url)
    with running_server(env) as server, httpx.Client(base_url=server.base_url) as client:
        # One connection, four requests: a value bound for one must not leak into the next.
        ids = [
            client.get("/api/v2/users/me", headers={"x-request-id": "first-request"}),
            client.get("/nowhere"),
            client.get("/health", headers={"x-request-id": "probe"}),
            client.get("/api/v2/users/me", headers={"x-request-id": "fourth-request"}),
        ]
        ids = [response.headers["x-request-id"] for response in ids]
        assert ids[0] == "first-request" and ids[2] == "probe" and ids[3] == "fourth-request"

        def access_lines() -> list[dict[str, Any]]:
            return [
                json.loads(line)
                for line in server.output().splitlines()
                if line.startswith("{") and '"logger":"coinlink.access"' in line
            ]

        # The last request's line may still be on its way to the log file.
        wait_for(
            lambda: any(e["trace_id"] == "fourth-request" for e in access_lines()),
            10,
            "the fourth request's access line",
        )
        access = access_lines()
    logged = [(entry["trace_id"], entry["route"], entry["status"]) for entry in access[-3:]]
    # Probes (/health, /readyz, /metrics) are counted in the metrics but not access-logged.
    assert logged == [
        ("first-request", "/api/v2/users/me", 401),
        (ids[1], "<unmatched>", 404),
        ("fourth-request", "/api/v2/users/me", 401),
    ]
    assert all(isinstance(entry["duration_ms"], float) for entry in access[-3:])


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_sigterm_stops_the_server_cleanly(database: str, pg_url: str, tmp_path: Path) -> None:
    # With the simulator feeding ingest: the leader stops and writes while the database is
    # still open (a write after Tortoise closed left an aiosqlite thread running).
    url = pg_url if database == "postgres" else f"sqlite://{tmp_path}/serve.sqlite3"
    server = ServerProcess(server_env(COINLINK_DATABASE_URL=url), workers=2).wait_ready()
    # Both workers serving, so both stop (a stop during start-up: test_shutdown).
    wait_for(lambda: server.logged("workers_started"), 60, "the manager's acknowledgements")
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 15
    assert "Traceback" not in server.output()
