"""The /ws gateway under misbehaving clients and a failing Redis (real processes)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from tests.support import log_guard
from tests.support.apps import ServerProcess, instance_env, metric, server_env
from tests.support.services import RedisServer, eventually
from tests.support.ws import (
    PING,
    TEXT,
    Publisher,
    RawFrame,
    RawReader,
    WsClient,
    close_code,
    masked_text,
    raw_handshake,
)

pytestmark = pytest.mark.timeout(120)


def start(pg_url: str, redis_url: str, prefix: str, **ws: str) -> ServerProcess:
    env = instance_env(
        pg_url,
        redis_url,
        redis_prefix=prefix,
        **{f"ws_{name}": value for name, value in ws.items()},
    )
    # Silent and dropped clients leave Sanic's keepalive tasks behind at shutdown.
    return ServerProcess(env, expected_errors=log_guard.SANIC_WEBSOCKET_TASKS).wait_ready()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


def replied(op: str) -> Callable[[list[RawFrame]], bool]:
    """Whether the server's reply of type ``op`` (ack, pong) is among the frames."""
    return lambda frames: any(
        opcode == TEXT and orjson.loads(payload)["type"] == op for opcode, payload in frames
    )


async def deliveries(client: WsClient, channel: str, count: int) -> list[tuple[int, float]]:
    """(seq, latency in ms from its ``sent_ns``) of the next ``count`` updates."""
    got = []
    for _ in range(count):
        message = await client.next(lambda m: m["type"] == "update" and m["channel"] == channel)
        got.append((message["seq"], (time.time_ns() - message["data"]["sent_ns"]) / 1e6))
    return got


async def flood(publisher: Publisher, channel: str, batches: int, size: int) -> list[int]:
    """``batches`` x 10 updates of ``size`` bytes, 10 ms apart."""
    seqs = []
    for _ in range(batches):
        seqs += await publisher.ticks(channel, 10, size=size)
        await asyncio.sleep(0.01)
    return seqs


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def test_a_reader_that_stops_is_conflated_then_closed_1013_and_others_keep_pace(
    module_pg_url: str, redis_url: str, prefix: str
) -> None:
    server = await asyncio.to_thread(
        start, module_pg_url, redis_url, prefix, buffer_bytes="65536", slow_close_s="2"
    )
    channel = "ticker:BTC-USD"
    try:
        async with Publisher(redis_url, prefix) as publisher:
            fast = await WsClient.open(server.base_url, max_size=None)
            await fast.request("subscribe", channels=[channel])
            await fast.next(lambda m: m["type"] == "snapshot")
            alone, _ = await asyncio.gather(
                deliveries(fast, channel, 400), flood(publisher, channel, 40, 8000)
            )

            slow = raw_handshake(server.port)
            request = {"op": "subscribe", "id": 1, "channels": [channel]}
            slow.sendall(masked_text(orjson.dumps(request)))
            # It reads its subscription's ack, then nothing more.
            reader = RawReader(slow)
            await asyncio.to_thread(reader.read_until, replied("ack"), 15)
            beside_slow, published = await asyncio.gather(
                deliveries(fast, channel, 400), flood(publisher, channel, 40, 8000)
            )

            # The fast client got every update, in order, as quickly as when it was alone:
            # had a write waited for the slow reader, the fast one would have waited until
            # the slow one was closed (2 s). The margin below that is for a loaded machine.
            assert [seq for seq, _ in beside_slow] == published
            before, after = p95([ms for _, ms in alone]), p95([ms for _, ms in beside_slow])
            assert after <= max(3 * before, before + 1000), (before, after)

            await eventually(
                lambda: metric(server, "ws_slow_consumer_closes_total") >= 1,
                30,
                "the slow reader's close",
            )
            assert metric(server, "ws_conflations_total") > 0
            frames = await asyncio.to_thread(reader.until_closed, 15)
            assert close_code(frames) == 1013
            seqs = [
                orjson.loads(p)["seq"] for op, p in frames if op == 0x1 and b'"update"' in p[:20]
            ]
            assert seqs == sorted(set(seqs))  # conflated: gaps, but never an older one after
            assert len(seqs) < len(published)
            await fast.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_client_that_stops_answering_pings_is_closed_within_interval_and_timeout(
    module_pg_url: str, redis_url: str, prefix: str
) -> None:
    server = await asyncio.to_thread(
        start, module_pg_url, redis_url, prefix, ping_interval_s="1", ping_timeout_s="1"
    )
    try:
        silent = raw_handshake(server.port, rcvbuf=65536)
        started = time.monotonic()
        frames = await asyncio.to_thread(RawReader(silent, answer_pings=False).until_closed, 30)
        took = time.monotonic() - started
        assert PING in [opcode for opcode, _ in frames]  # it was pinged
        assert close_code(frames) == 1011
        # Interval + timeout is 2 s; the margin is for a loaded machine, and still far below
        # what Sanic's defaults (20 s + 20 s) would take.
        assert took < 10, took
        # A client that answers pings stays: pinged three times (past the point where the
        # silent one was closed), it is still open and still answers.
        answering = RawReader(raw_handshake(server.port, rcvbuf=65536))
        pinged = await asyncio.to_thread(
            answering.read_until, lambda f: [op for op, _ in f].count(PING) >= 3, 30
        )
        assert close_code(pinged) is None
        answering.sock.sendall(masked_text(b'{"op": "ping", "id": 1}'))
        frames = await asyncio.to_thread(answering.read_until, replied("pong"), 15)
        assert close_code(frames) is None
        answering.sock.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_connections_per_address_are_capped_at_the_handshake(
    module_pg_url: str, redis_url: str, prefix: str
) -> None:
    server = await asyncio.to_thread(
        start, module_pg_url, redis_url, prefix, max_connections_per_ip="3"
    )
    try:
        clients = [await WsClient.open(server.base_url) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await WsClient.open(server.base_url)
        assert refused.value.response.status_code == 429
        assert orjson.loads(refused.value.response.body)["error"]["code"] == "rate_limited"
        await clients.pop().close()
        # Its place is free once the server has let go of it.
        await eventually(lambda: metric(server, "ws_connections") == 2, 30, "the close")
        clients.append(await WsClient.open(server.base_url))
        for client in clients:
            await client.close()
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.expected_errors(*log_guard.REDIS_GONE)
async def test_redis_restarted_mid_stream_sockets_stay_open_and_updates_resume(
    module_pg_url: str, prefix: str
) -> None:
    redis = await asyncio.to_thread(RedisServer().start)
    server = await asyncio.to_thread(start, module_pg_url, redis.url, prefix)
    channel = "ticker:BTC-USD"
    try:
        async with await WsClient.open(server.base_url) as client:
            await client.request("subscribe", channels=[channel])
            await client.next(lambda m: m["type"] == "snapshot")
            async with Publisher(redis.url, prefix) as publisher:
                seqs = await publisher.ticks(channel, 3)
                assert [m["seq"] for m in await client.updates(channel, 3)] == seqs

            await asyncio.to_thread(redis.stop)
            # Down until the server's hub has lost its subscription.
            await eventually(lambda: server.logged("bus.subscription.lost"), 30, "the loss")
            await asyncio.to_thread(redis.start)  # same port, empty: seq starts again at 1

            resumed_by = time.monotonic() + 30
            async with Publisher(redis.url, prefix) as publisher:
                while True:
                    await publisher.ticks(channel, 1)
                    try:
                        first = await client.next(
                            lambda m: m.get("channel") == channel, timeout=0.5
                        )
                        break
                    except TimeoutError:
                        assert time.monotonic() < resumed_by, "updates never resumed"
                # The restart is announced by a snapshot; then updates are contiguous again
                # (read through a marker: nothing twice, nothing missing). A tick the loop
                # above published after the snapshot's may come first.
                assert first["type"] == "snapshot", first
                more = await publisher.ticks(channel, 3)
                [marker] = await publisher.ticks(channel, 1)
                got = [m["seq"] for m in await client.through(channel, marker)]
                assert got == list(range(first["seq"] + 1, marker + 1))
                assert got[-4:] == [*more, marker]
            assert (await client.request("ping"))["type"] == "pong"
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(redis.stop)


async def test_the_embedded_default_streams_simulated_prices(tmp_path: Path) -> None:
    """No Redis, no PostgreSQL: the in-process bus feeds the one worker's hub."""
    env = server_env(
        COINLINK_DATABASE_URL=f"sqlite://{tmp_path}/embedded.sqlite3",
        COINLINK_AUTO_MIGRATE="true",
        COINLINK_SIMULATOR_RATE="20",
    )
    server = await asyncio.to_thread(ServerProcess(env).wait_ready)
    try:
        async with await WsClient.open(server.base_url) as client:
            await client.request("subscribe", channels=["ticker:BTC-USD", "tickers"])
            snapshot = await client.next(lambda m: m["type"] == "snapshot")
            updates = await client.updates("ticker:BTC-USD", 5)
            seqs = [m["seq"] for m in updates]
            assert seqs == list(range(seqs[0], seqs[0] + 5))
            assert seqs[0] >= snapshot["seq"] + 1 or snapshot["channel"] == "tickers"
            assert all(float(m["data"]["price"]) > 0 for m in updates)
            batch = await client.next(lambda m: m["type"] == "update" and m["channel"] == "tickers")
            assert {t["symbol"] for t in batch["data"]} >= {"BTC-USD", "ETH-USD"}
    finally:
        await asyncio.to_thread(server.stop)
