"""Alerts end to end on two real instances: admin ticks in, notifications out everywhere.

The alert is set on one instance, the price moved through the other's admin API, the
notification read back over REST and received on a WebSocket of either instance, and
(where the test says) by a local webhook receiver; one test kills the leader with
``kill -9`` between the firing's commit and its publish.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.test_ingest_failover import admin_headers, leads
from tests.support.accounts import PASSWORD, new_email
from tests.support.apps import RATE_LIMITS, ServerProcess, server_env
from tests.support.services import RedisServer, wait_for
from tests.support.webhook_receiver import Received, Receiver, answer, receiver
from tests.support.ws import WsClient

pytestmark = pytest.mark.timeout(180)
LEASE_S = 2.0


def env_for(pg_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return server_env(
        COINLINK_DATABASE_URL=pg_url,
        COINLINK_REDIS_URL=redis_url,
        COINLINK_REDIS_PREFIX=f"t{uuid.uuid4().hex[:10]}:",
        COINLINK_PROVIDER="none",
        COINLINK_ADMIN_TICKS="true",
        COINLINK_AUTO_MIGRATE="true",
        COINLINK_INGEST_LEASE_S=str(LEASE_S),
        COINLINK_SYMBOLS="BTC-USD,ETH-USD",
        COINLINK_WEBHOOK_ALLOW_PRIVATE="true",
        **{f"COINLINK_{name.upper()}": "100000/60" for name in RATE_LIMITS},
        **extra,
    )


def start_pair(env: dict[str, str]) -> list[ServerProcess]:
    first = ServerProcess(env, workers=2).wait_ready()  # migrates before the second starts
    servers = [first, ServerProcess(env, workers=2).wait_ready()]
    wait_for(lambda: sum(leads(s) for s in servers) == 1, 20, "one ingest leader")
    return servers


@pytest.fixture
def pair(fresh_pg_url: str, redis_url: str) -> Iterator[list[ServerProcess]]:
    servers = start_pair(env_for(fresh_pg_url, redis_url))
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def signed_up(url: str) -> dict[str, Any]:
    response = httpx.post(
        url + "/api/v2/auth/register", json={"email": new_email(), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    body = dict(response.json())
    body["headers"] = {"authorization": f"Bearer {body['tokens']['access_token']}"}
    return body


def tick(server: ServerProcess, admin: dict[str, str], price: str) -> None:
    response = httpx.post(
        server.base_url + "/api/v2/admin/ticks",
        headers=admin,
        json={"symbol": "BTC-USD", "price": price, "volume": "1"},
    )
    assert response.status_code == 202, response.text


def notifications(server: ServerProcess, user: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.get(server.base_url + "/api/v2/notifications", headers=user["headers"])
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def alert(server: ServerProcess, user: dict[str, Any], alert_id: str) -> dict[str, Any]:
    response = httpx.get(server.base_url + f"/api/v2/alerts/{alert_id}", headers=user["headers"])
    return dict(response.json())


async def listening(server: ServerProcess, user: dict[str, Any]) -> WsClient:
    client = await WsClient.open(server.base_url)
    await client.request("auth", token=user["tokens"]["access_token"])
    await client.request("subscribe", channels=["notifications"])
    await client.next(lambda m: m["type"] == "snapshot")
    return client


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    """A webhook receiver that answers 200."""
    async with receiver(answer(200)) as rcv:
        yield rcv


async def test_an_alert_set_on_one_instance_fires_once_and_reaches_every_socket(
    pair: list[ServerProcess], fresh_pg_url: str, hook: Receiver
) -> None:
    first, second = pair
    admin = await asyncio.to_thread(admin_headers, first, fresh_pg_url)
    user = signed_up(first.base_url)
    secret = webhook_for(second, user, hook.port)
    tick(second, admin, "100")
    created = httpx.post(
        first.base_url + "/api/v2/alerts",
        headers=user["headers"],
        json={"symbol": "BTC-USD", "condition": "above", "threshold": "105"},
    )
    assert created.status_code == 201, created.text
    alert_id = created.json()["id"]
    sockets = [await listening(server, user) for server in pair]
    await asyncio.sleep(1)  # a change reaches the leader's engine within a second

    tick(second, admin, "5000")  # an absurd jump: dropped by validation, fires nothing
    tick(second, admin, "104.99")  # not yet
    tick(second, admin, "105")  # >= threshold: fires
    tick(first, admin, "106")  # a one-shot alert fires once
    for client in sockets:
        pushed = await client.next(
            lambda m: m["type"] == "update" and m["channel"] == "notifications", timeout=10
        )
        assert pushed["data"]["kind"] == "price_alert"
        assert pushed["data"]["data"]["alert_id"] == alert_id
        assert pushed["data"]["data"]["price"] == "105"
    wait_for(lambda: len(notifications(first, user)) == 1, 5, "the notification in REST")
    time.sleep(1)
    [stored] = notifications(second, user)
    assert stored["id"] == pushed["data"]["id"] and stored["read_at"] is None
    assert stored["data"] == {
        "alert_id": alert_id,
        "symbol": "BTC-USD",
        "condition": "above",
        "threshold": "105",
        "price": "105",
        "ts": stored["data"]["ts"],
    }
    fired = alert(second, user, alert_id)
    assert fired["status"] == "triggered" and fired["trigger_count"] == 1
    for client in sockets:
        assert not [m for m in client.received if m.get("channel") == "notifications"]
        await client.close()
    # ...and exactly one signed POST reached the user's webhook.
    deadline = time.monotonic() + 10
    while not hook.requests:
        assert time.monotonic() < deadline, "no webhook delivery"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    [request] = hook.requests
    assert_signed(request, secret)
    assert orjson.loads(request.body) == stored


def webhook_for(server: ServerProcess, user: dict[str, Any], port: int) -> str:
    """Point the user's webhook at a local receiver; the signing secret."""
    prefs = httpx.put(
        server.base_url + "/api/v2/users/me/preferences",
        headers=user["headers"],
        json={"webhook_url": f"http://127.0.0.1:{port}/hook"},
    )
    assert prefs.status_code == 200, prefs.text
    created = httpx.post(
        server.base_url + "/api/v2/users/me/webhook-secret", headers=user["headers"]
    )
    return str(created.json()["secret"])


def assert_signed(request: Received, secret: str) -> None:
    stamp = request.headers["x-coinlink-timestamp"]
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
    assert request.headers["x-coinlink-signature"] == f"sha256={digest.hexdigest()}"


async def test_kill_9_between_commit_and_publish_delivers_once_after_take_over(
    fresh_pg_url: str, redis_url: str
) -> None:
    servers = start_pair(env_for(fresh_pg_url, redis_url, COINLINK_TEST_ALERT_PAUSE_S="30"))
    try:
        leader = next(s for s in servers if leads(s))
        follower = next(s for s in servers if s is not leader)
        admin = await asyncio.to_thread(admin_headers, follower, fresh_pg_url)
        user = signed_up(follower.base_url)
        tick(follower, admin, "100")
        created = httpx.post(
            follower.base_url + "/api/v2/alerts",
            headers=user["headers"],
            json={"symbol": "BTC-USD", "condition": "below", "threshold": "90"},
        )
        alert_id = created.json()["id"]
        client = await listening(follower, user)
        await asyncio.sleep(1)

        tick(follower, admin, "89.5")
        # Committed (in REST), then the leader sits in its 30 s pause before publishing.
        wait_for(lambda: len(notifications(follower, user)) == 1, 10, "the commit")
        os.killpg(leader.process.pid, signal.SIGKILL)
        leader.process.wait(10)

        pushed = await client.next(
            lambda m: m["type"] == "update" and m["channel"] == "notifications",
            timeout=4 * LEASE_S + 10,
        )
        [stored] = notifications(follower, user)
        assert pushed["data"]["id"] == stored["id"]
        # The new leader loaded the alert as triggered: more ticks fire nothing.
        tick(follower, admin, "80")
        tick(follower, admin, "79")
        await asyncio.sleep(2)
        assert len(notifications(follower, user)) == 1
        assert alert(follower, user, alert_id)["trigger_count"] == 1
        assert not [m for m in client.received if m.get("channel") == "notifications"]
        await client.close()
    finally:
        for server in servers:
            server.stop()


async def test_a_webhook_is_retried_with_backoff_until_the_receiver_recovers(
    fresh_pg_url: str, redis_url: str
) -> None:
    answers = iter([503, 503, 200])
    times: list[float] = []

    async def flaky(received: Received, writer: asyncio.StreamWriter) -> None:
        times.append(time.monotonic())
        await answer(next(answers, 200))(received, writer)

    env = env_for(fresh_pg_url, redis_url, COINLINK_WEBHOOK_RETRY_BASE_S="0.5")
    server = ServerProcess(env).wait_ready()
    try:
        async with receiver(flaky) as hook:
            admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
            user = signed_up(server.base_url)
            secret = webhook_for(server, user, hook.port)
            wait_for(lambda: leads(server), 10, "a leader")
            created = httpx.post(
                server.base_url + "/api/v2/alerts",
                headers=user["headers"],
                json={"symbol": "ETH-USD", "condition": "above", "threshold": "10"},
            )
            assert created.status_code == 201
            await asyncio.sleep(1)
            response = httpx.post(
                server.base_url + "/api/v2/admin/ticks",
                headers=admin,
                json={"symbol": "ETH-USD", "price": "11", "volume": "1"},
            )
            assert response.status_code == 202

            deadline = time.monotonic() + 20
            while len(hook.requests) < 3:
                assert time.monotonic() < deadline, f"{len(hook.requests)} attempts"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # nothing more once delivered
            assert len(hook.requests) == 3
            [stored] = notifications(server, user)
            for request in hook.requests:
                assert request.method == "POST" and request.target == "/hook"
                assert_signed(request, secret)
                assert orjson.loads(request.body) == stored
            # One logical delivery: the same id on every attempt.
            assert len({r.headers["x-coinlink-delivery"] for r in hook.requests}) == 1
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps  # base/2, then 2 x base/2

            log = httpx.get(
                server.base_url + "/api/v2/notifications/deliveries", headers=user["headers"]
            ).json()["items"]
            assert [(a["attempt"], a["ok"], a["status_code"]) for a in log] == [
                (3, True, 200),
                (2, False, 503),
                (1, False, 503),
            ]
            assert {a["delivery_id"] for a in log} == {
                hook.requests[0].headers["x-coinlink-delivery"]
            }
    finally:
        server.stop()


async def test_a_firing_caught_by_a_redis_restart_is_delivered_from_the_outbox(
    fresh_pg_url: str,
) -> None:
    """SECURITY 36: Redis dies after the commit, before the publish; the socket and the
    notification both survive it."""
    redis = RedisServer().start()
    env = env_for(fresh_pg_url, redis.url, COINLINK_TEST_ALERT_PAUSE_S="3")
    server = ServerProcess(env).wait_ready()
    try:
        wait_for(lambda: leads(server), 10, "a leader")
        admin = await asyncio.to_thread(admin_headers, server, fresh_pg_url)
        user = signed_up(server.base_url)
        created = httpx.post(
            server.base_url + "/api/v2/alerts",
            headers=user["headers"],
            json={"symbol": "BTC-USD", "condition": "above", "threshold": "50"},
        )
        assert created.status_code == 201
        client = await listening(server, user)
        await asyncio.sleep(1)
        tick(server, admin, "51")
        wait_for(lambda: len(notifications(server, user)) == 1, 10, "the commit")

        redis.stop()  # during the pause between commit and publish
        await asyncio.sleep(1)
        redis.start()

        pushed = await client.next(
            lambda m: m["type"] == "update" and m["channel"] == "notifications", timeout=30
        )
        [stored] = notifications(server, user)
        assert pushed["data"]["id"] == stored["id"]
        assert (await client.request("ping"))["type"] == "pong"  # the same socket
        await client.close()
    finally:
        server.stop()
        redis.stop()
