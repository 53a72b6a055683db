"""The alert rules and the dashboard read only metrics a real ``coinlink serve`` exports.

One instance of two workers (so /metrics is the merged multi-process output) with Redis
and PostgreSQL; the test drives what gives the labelled metrics their first samples
(multi-process mode exports a metric only once it has one): REST requests, a WebSocket
fed by a tick, an alert whose webhook cannot be delivered, failed logins up to a 429.
It also reads the metrics that stand in for ``process_*`` and the outbox: one process
series per worker, and the webhook left waiting for its retry counted once.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.integration.test_alerts_processes import call, create_alert, tick, webhook_for
from tests.support.accounts import admin_headers, signed_up
from tests.support.apps import ServerProcess, ingest_heartbeat, instance_env
from tests.support.monitoring import used_metrics
from tests.support.services import eventually, free_port
from tests.support.ws import WsClient

pytestmark = pytest.mark.timeout(180)
LOGINS_PER_ADDRESS = 2
WORKERS = 2
PROCESS_METRICS = (
    "coinlink_process_cpu_seconds",
    "coinlink_process_resident_memory_bytes",
    "coinlink_process_open_fds",
)


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def served(text: str) -> set[str]:
    """The sample names of an exposition (``x_total``, ``x_bucket``: what queries read)."""
    return {sample.name for sample in samples(text)}


def values(text: str, name: str) -> list[float]:
    return [sample.value for sample in samples(text) if sample.name == name]


async def test_every_metric_the_rules_and_dashboard_read_is_served(
    fresh_pg_url: str, redis_url: str
) -> None:
    env = instance_env(
        fresh_pg_url,
        redis_url,
        admin_ticks="true",
        webhook_allow_private="true",
        symbols="BTC-USD,ETH-USD",
        rate_limit_login_ip=f"{LOGINS_PER_ADDRESS}/60",
    )
    server = ServerProcess(env, workers=WORKERS)
    try:
        await asyncio.to_thread(server.wait_ready)
        # The admin tick API takes ticks once the leader's heartbeat is there.
        await eventually(lambda: ingest_heartbeat(server), 30, "the leader's heartbeat")
        admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
        user = await signed_up(server.base_url)
        # A webhook to a port nobody listens on: the attempt is counted, never delivered.
        await webhook_for(server, user, free_port())
        await create_alert(server, user, "above", "105")

        async with await WsClient.open(server.base_url) as client:
            await client.request("subscribe", channels=["ticker:BTC-USD"])
            await tick(server, admin, "100")
            await client.next(lambda m: m["type"] == "update")
            await tick(server, admin, "106")  # fires the alert

        statuses = []
        for _ in range(LOGINS_PER_ADDRESS + 1):
            response = await call(
                "POST",
                server.base_url + "/api/v2/auth/login",
                json={"email": user["user"]["email"], "password": "not the password"},
            )
            statuses.append(response.status_code)
        assert statuses == [401] * LOGINS_PER_ADDRESS + [429]

        def metrics() -> str:
            return httpx.get(server.base_url + "/metrics", timeout=5).text

        await eventually(
            lambda: "webhook_attempts_total" in metrics(), 30, "the webhook attempt counted"
        )
        # The delivery waits for its retry: the lease holder's count, the others' 0s merged.
        await eventually(
            lambda: values(metrics(), "webhook_backlog") == [1.0], 30, "the backlog counted"
        )
        text = await asyncio.to_thread(metrics)
    finally:
        server.stop()

    for name in PROCESS_METRICS:
        per_worker = {s.labels["pid"]: s.value for s in samples(text) if s.name == name}
        assert len(per_worker) == WORKERS and all(v > 0 for v in per_worker.values()), name
    exported = served(text)

    missing = {name: where for name, where in used_metrics().items() if name not in exported}
    assert not missing, f"read by the rules or the dashboard, not served: {missing}"
