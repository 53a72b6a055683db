"""What a worker's subscription to a Redis Cluster does that a single Redis's does not have
to: keep one connection per shard, and read those only as fast as the worker consumes.
(The shared behaviour is the bus contract's, tests/integration/test_bus_contract.py.)"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from coinlink.bus import RESUBSCRIBED, Message, RedisBus, redis_shards
from tests.support.redis_cluster import RedisCluster
from tests.support.services import until

pytestmark = pytest.mark.timeout(60)


async def pubsub_backlog(port: int) -> int:
    """Bytes a node holds for its pub/sub clients that they have not read yet."""
    client = redis.Redis(port=port)
    try:
        clients = await client.client_list(_type="pubsub")
    finally:
        await client.aclose()
    return sum(int(each["omem"]) for each in clients)


async def test_a_slow_consumer_leaves_the_backlog_in_redis(
    redis_cluster: RedisCluster, bus_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_shards, "QUEUE_SIZE", 8)
    bus = RedisBus(redis_cluster.url, prefix=bus_prefix, history_size=10)
    await bus.start()
    sub = bus.subscription()
    try:
        await sub.subscribe("burst")
        # More than the kernel's socket buffers hold: once they are full, whatever the
        # worker does not read has to wait somewhere.
        count, data = 400, b"x" * 32_000
        for _ in range(count):
            await bus.publish("burst", data)
        node = redis_cluster.master_of(bus.keys.channel("burst"))
        assert await until(lambda: pubsub_backlog(node.port), 15, "a backlog in Redis")
        assert sub._queue.qsize() == 8  # the worker holds no more than its bound

        received: list[Message] = []
        async with asyncio.timeout(30):
            async for message in sub:
                received.append(message)
                if len(received) == count:
                    break
        assert [m.seq for m in received] == list(range(1, count + 1))
        assert all(m.data == data for m in received)
    finally:
        await sub.close()
        await bus.close()


async def test_redis_drops_a_worker_too_slow_to_catch_up_and_it_recovers(
    redis_cluster: RedisCluster, bus_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a single Redis: past the node's pub/sub output-buffer limit the connection
    is closed; the subscription reconnects and says so, and the consumer reads history."""
    monkeypatch.setattr(redis_shards, "QUEUE_SIZE", 8)
    bus = RedisBus(redis_cluster.url, prefix=bus_prefix, history_size=10)
    await bus.start()
    sub = bus.subscription()
    node = redis_cluster.master_of(bus.keys.channel("flood"))
    admin = redis.Redis(port=node.port)
    limit = "client-output-buffer-limit"
    before = (await admin.config_get(limit))[limit]
    try:
        await sub.subscribe("flood")
        await admin.config_set(limit, "pubsub 1mb 0 0")
        count, data = 400, b"x" * 32_000
        for _ in range(count):
            await bus.publish("flood", data)

        received: list[Message] = []
        async with asyncio.timeout(30):
            async for message in sub:
                received.append(message)
                if message.channel == RESUBSCRIBED:
                    break
        assert len(received) < count  # Redis dropped the rest, not the worker's memory
        await bus.publish("flood", b"after")
        async with asyncio.timeout(15):
            resumed = await anext(aiter(sub))
        assert resumed == Message("flood", count + 1, b"after")
        # What was missed is filled from history, or (trimmed) the channel starts over.
        last = max(m.seq for m in received if m.channel == "flood")
        assert await bus.history("flood", last) is None
    finally:
        await admin.config_set(limit, before)
        await admin.aclose()
        await sub.close()
        await bus.close()
