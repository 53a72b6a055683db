"""``coinlink serve --workers 2`` as a real process: metrics add up across workers."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.apps import running_server, server_env

REQUESTS = 120


def health_requests_counted(metrics: str) -> float:
    match = re.search(
        r'^http_requests_total\{method="GET",route="/health",status="200"\} (\S+)$', metrics, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_metrics_count_every_request_across_two_workers(pg_url: str, redis_url: str) -> None:
    env = server_env(COINLINK_DATABASE_URL=pg_url, COINLINK_REDIS_URL=redis_url)
    with running_server(env, workers=2) as server:
        before = health_requests_counted(httpx.get(server.base_url + "/metrics").text)

        def hit(_: int) -> int:
            # A new connection per request lets the kernel hand requests to either worker.
            with httpx.Client(headers={"connection": "close"}) as client:
                return client.get(server.base_url + "/health").status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(hit, range(REQUESTS)))
        assert statuses == [200] * REQUESTS

        metrics = httpx.get(server.base_url + "/metrics").text
        assert health_requests_counted(metrics) - before == REQUESTS

        pids = set()
        for line in server.output().splitlines():
            if line.startswith("{") and '"route":"/health"' in line:
                pids.add(json.loads(line)["pid"])
        assert len(pids) == 2, "requests were not spread over both workers"
