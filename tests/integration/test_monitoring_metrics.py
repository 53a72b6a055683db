"""The alert rules and the dashboard read only metrics a real ``coinlink serve`` exports.

One instance of two workers (so /metrics is the merged multi-process output) with Redis
and PostgreSQL; the test drives what gives the labelled metrics their first samples
(multi-process mode exports a metric only once it has one): REST requests, a WebSocket
fed by a tick, an alert whose webhook cannot be delivered, failed logins up to a 429.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_alerts_processes import call, create_alert, tick
from tests.support.accounts import admin_headers, signed_up
from tests.support.apps import ServerProcess, instance_env, leads
from tests.support.monitoring import used_metrics
from tests.support.services import eventually, free_port
from tests.support.ws import WsClient

pytestmark = pytest.mark.timeout(180)
LOGINS_PER_ADDRESS = 2


def served(text: str) -> set[str]:
    """The sample names of an exposition (``x_total``, ``x_bucket``: what queries read)."""
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


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
    server = ServerProcess(env, workers=2)
    try:
        await asyncio.to_thread(server.wait_ready)
        await eventually(lambda: leads(server), 30, "an ingest leader")
        admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
        user = await signed_up(server.base_url)
        # A webhook to a port nobody listens on: the attempt is counted, never delivered.
        prefs = await call(
            "PUT",
            server.base_url + "/api/v2/users/me/preferences",
            headers=user["headers"],
            json={"webhook_url": f"http://127.0.0.1:{free_port()}/hook"},
        )
        assert prefs.status_code == 200, prefs.text
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
        exported = served(await asyncio.to_thread(metrics))
    finally:
        server.stop()

    missing = {name: where for name, where in used_metrics().items() if name not in exported}
    assert not missing, f"read by the rules or the dashboard, not served: {missing}"
