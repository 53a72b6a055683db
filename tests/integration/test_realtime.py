"""The /ws gateway on real processes: two instances of two workers, one PostgreSQL, one Redis.

Updates are published straight onto the bus (as the ingest leader does) so each test
decides exactly what flows; one test drives a price end to end through the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.accounts import signed_up
from tests.support.apps import (
    TEST_ORIGIN,
    TEST_SECRET,
    ServerProcess,
    ingest_heartbeat,
    instance_env,
)
from tests.support.services import eventually
from tests.support.ws import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Publisher,
    RawFrame,
    RawReader,
    WsClient,
    close_code,
    masked,
    masked_text,
    notification_data,
    raw_handshake,
    split_frames,
)

pytestmark = pytest.mark.timeout(120)

HISTORY = 20
MAX_SUBSCRIPTIONS = 5


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="module")
def instances(module_pg_url: str, redis_url: str, prefix: str) -> Iterator[list[ServerProcess]]:
    env = instance_env(
        module_pg_url,
        redis_url,
        redis_prefix=prefix,
        admin_ticks="true",
        symbols="BTC-USD,ETH-USD,SOL-USD",
        bus_history_size=str(HISTORY),
        ws_heartbeat_s="1",
        ws_revalidate_s="1",
        ws_max_subscriptions=str(MAX_SUBSCRIPTIONS),
    )
    first = ServerProcess(env, workers=2).wait_ready()
    servers = [first, ServerProcess(env, workers=2).wait_ready()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def url(instances: list[ServerProcess]) -> str:
    return instances[0].base_url


@pytest.fixture
async def publisher(redis_url: str, prefix: str) -> Any:
    async with Publisher(redis_url, prefix, HISTORY) as pub:
        yield pub


def data_of(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message["data"])


# -- the protocol --------------------------------------------------------------------------


async def test_ping_gets_a_pong_with_the_same_id_and_server_time(url: str) -> None:
    async with await WsClient.open(url) as client:
        before = time.time_ns() // 1_000_000
        reply = await client.request("ping")
        assert reply["type"] == "pong" and reply["id"] == 1
        assert before - 1000 <= reply["ts"] <= time.time_ns() // 1_000_000 + 1000


async def test_subscribe_acks_then_snapshot_then_contiguous_updates_with_exact_data(
    url: str, publisher: Publisher
) -> None:
    channel = "ticker:SOL-USD"
    before = await publisher.ticks(channel, 3)
    async with await WsClient.open(url) as client:
        ack = await client.request("subscribe", channels=[channel])
        assert ack == {
            "type": "ack",
            "id": 1,
            "op": "subscribe",
            "channels": [{"channel": channel, "recovered": False}],
        }
        snapshot = await client.next(lambda m: m["type"] == "snapshot")
        assert snapshot["channel"] == channel and snapshot["seq"] == before[-1]
        assert snapshot["data"]["n"] == 2  # the latest state, as its update carried it

        seqs = await publisher.ticks(channel, 30)
        [marker] = await publisher.ticks(channel, 1)  # read through it: nothing twice
        updates = await client.through(channel, marker)
        assert seqs == list(range(before[-1] + 1, seqs[-1] + 1))
        assert [u["seq"] for u in updates] == [*seqs, marker]
        assert [u["data"]["n"] for u in updates[:-1]] == list(range(30))


async def test_unsubscribe_stops_the_updates(url: str, publisher: Publisher) -> None:
    async with await WsClient.open(url) as client:
        await client.request("subscribe", channels=["ticker:ETH-USD", "candles:ETH-USD:1m"])
        ack = await client.request("unsubscribe", channels=["ticker:ETH-USD"])
        assert ack["op"] == "unsubscribe" and ack["channels"] == ["ticker:ETH-USD"]
        await publisher.ticks("ticker:ETH-USD", 2)
        await publisher.ticks("candles:ETH-USD:1m", 1)
        await client.next(lambda m: m["type"] == "update" and m["channel"] == "candles:ETH-USD:1m")
        assert not [
            m
            for m in client.received
            if m.get("channel") == "ticker:ETH-USD" and m["type"] == "update"
        ]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "invalid_message"),
        (b"[1, 2]", "invalid_message"),
        (b'{"op": "dance", "id": 1}', "invalid_message"),
        (b'{"op": "ping"}', "invalid_message"),
        (b'{"op": "ping", "id": "1"}', "invalid_message"),
        (b'{"op": "ping", "id": 1, "extra": true}', "invalid_message"),
        (b'{"op": "subscribe", "id": 1, "channels": []}', "invalid_message"),
        (
            b'{"op": "subscribe", "id": 1, "channels": ["tickers"], "since": {"tickers": -1}}',
            "invalid_message",
        ),
        (
            b'{"op": "subscribe", "id": 1, "channels": ["tickers"], "since": {"ticker": 3}}',
            "invalid_message",
        ),
        (b'{"op": "subscribe", "id": 1, "channels": ["ticker:DOGE-USD"]}', "unknown_channel"),
        (b'{"op": "subscribe", "id": 1, "channels": ["candles:BTC-USD:2m"]}', "unknown_channel"),
        (b'{"op": "unsubscribe", "id": 1, "channels": ["weather"]}', "unknown_channel"),
        (b'{"op": "subscribe", "id": 1, "channels": ["notifications"]}', "unauthorized"),
        (b'{"op": "auth", "id": 1, "token": "not-a-token"}', "invalid_token"),
        (b'{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}', "invalid_message"),
        (b'{"op": "subscribe", "id": 1, "channels": ["ticker:BTC-USD:1m"]}', "unknown_channel"),
    ],
)
async def test_bad_messages_get_a_typed_error_and_the_socket_stays_usable(
    url: str, raw: bytes, code: str
) -> None:
    async with await WsClient.open(url) as client:
        await client.conn.send(raw.decode())
        error = await client.next(lambda m: m["type"] == "error")
        assert error["code"] == code, error
        assert isinstance(error["message"], str) and error["message"]
        assert error["id"] == (1 if b'"id": 1' in raw else None)
        assert (await client.request("ping"))["type"] == "pong"


async def test_a_subscribe_to_many_unknown_channels_names_ten(url: str) -> None:
    async with await WsClient.open(url) as client:
        names = [f"ticker:X{i}-USD" for i in range(300)]
        error = await client.request("subscribe", channels=names)
    assert error["code"] == "unknown_channel"
    assert error["message"] == f"unknown channel: {', '.join(names[:10])} and 290 more"


async def test_a_message_in_another_exchanges_shape_is_told_the_ops(url: str) -> None:
    async with await WsClient.open(url) as client:
        await client.conn.send('{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7}')
        error = await client.next(lambda m: m["type"] == "error")
        assert error["id"] == 7
        assert "auth, subscribe, unsubscribe, ping" in error["message"]
        assert '{"op":"subscribe","id":1,"channels":["ticker:BTC-USD"]}' in error["message"]


async def test_channel_names_are_case_insensitive_and_answered_canonical(
    url: str, publisher: Publisher
) -> None:
    [seen] = await publisher.ticks("ticker:ETH-USD", 1)
    async with await WsClient.open(url) as client:
        ack = await client.request(
            "subscribe", channels=["Ticker:eth-usd", "TICKERS"], since={"ticker:Eth-Usd": seen}
        )
        assert ack["channels"] == [
            {"channel": "ticker:ETH-USD", "recovered": True},
            {"channel": "tickers", "recovered": False},
        ]
        await publisher.ticks("ticker:ETH-USD", 1)
        [update] = await client.updates("ticker:ETH-USD", 1)
        assert update["seq"] == seen + 1
        ack = await client.request("unsubscribe", channels=["ticker:eth-usd"])
        assert ack["channels"] == ["ticker:ETH-USD"]


async def test_more_subscriptions_than_the_cap_are_refused_whole(url: str) -> None:
    channels = [f"candles:BTC-USD:{i}" for i in ("1m", "5m", "15m", "1h")]
    async with await WsClient.open(url) as client:
        assert (await client.request("subscribe", channels=channels))["type"] == "ack"
        refused = await client.request("subscribe", channels=["ticker:BTC-USD", "ticker:ETH-USD"])
        assert refused["type"] == "error" and refused["code"] == "too_many_subscriptions"
        # Still subscribed to what it had, and one more fits.
        fits = await client.request("subscribe", channels=["ticker:BTC-USD", channels[0]])
        assert fits["type"] == "ack"


# -- recovery ------------------------------------------------------------------------------


async def test_since_within_history_replays_exactly_the_missed_updates(
    url: str, publisher: Publisher
) -> None:
    channel = "candles:SOL-USD:5m"
    await publisher.ticks(channel, 2)
    async with await WsClient.open(url) as client:
        await client.request("subscribe", channels=[channel])
        seen = (await client.next(lambda m: m["type"] == "snapshot"))["seq"]
        await publisher.ticks(channel, 3)
        seen = (await client.updates(channel, 3))[-1]["seq"]
    missed = await publisher.ticks(channel, 7)  # while disconnected

    async with await WsClient.open(url) as client:
        ack = await client.request("subscribe", channels=[channel], since={channel: seen})
        assert ack["channels"] == [{"channel": channel, "recovered": True}]
        replayed = await client.updates(channel, 7)
        assert [m["seq"] for m in replayed] == missed == list(range(seen + 1, seen + 8))
        assert [m["data"]["n"] for m in replayed] == list(range(7))
        live = await publisher.ticks(channel, 2)
        [marker] = await publisher.ticks(channel, 1)
        # Between the replay and the marker: the two live updates, each once, nothing else.
        assert [m["seq"] for m in await client.through(channel, marker)] == [*live, marker]
        assert not [m for m in client.received if m["type"] == "snapshot"]


async def test_since_older_than_history_gets_a_snapshot(url: str, publisher: Publisher) -> None:
    channel = "candles:SOL-USD:15m"
    first = await publisher.ticks(channel, 1)
    latest = await publisher.ticks(channel, HISTORY + 5)
    async with await WsClient.open(url) as client:
        ack = await client.request("subscribe", channels=[channel], since={channel: first[0]})
        [result] = ack["channels"]
        if result["recovered"]:
            # The serving worker's hub had not yet read past `since` (the messages were
            # published moments ago): nothing was missed, and all of them come live, in order.
            updates = await client.updates(channel, len(latest))
            assert [u["seq"] for u in updates] == latest
        else:  # the usual case: the history no longer reaches back to `since`
            snapshot = await client.next(lambda m: m["type"] == "snapshot")
            assert snapshot["seq"] == latest[-1]
        await publisher.ticks(channel, 1)
        assert (await client.updates(channel, 1))[0]["seq"] == latest[-1] + 1


async def test_since_at_the_newest_seq_recovers_nothing_and_follows_on(
    url: str, publisher: Publisher
) -> None:
    channel = "candles:SOL-USD:1h"
    seqs = await publisher.ticks(channel, 2)
    async with await WsClient.open(url) as client:
        ack = await client.request("subscribe", channels=[channel], since={channel: seqs[-1]})
        assert ack["channels"] == [{"channel": channel, "recovered": True}]
        more = await publisher.ticks(channel, 1)
        assert (await client.updates(channel, 1))[0]["seq"] == more[0]


# -- fan-out across workers and instances ------------------------------------------------


async def test_clients_on_every_worker_of_both_instances_get_the_same_stream(
    instances: list[ServerProcess], publisher: Publisher
) -> None:
    channel = "ticker:BTC-USD"
    # 12 sockets per instance: the kernel spreads them over both workers of each.
    clients = [await WsClient.open(server.base_url) for server in instances for _ in range(12)]
    try:
        for client in clients:
            await client.request("subscribe", channels=[channel])
        seqs = await publisher.ticks(channel, 50)
        [marker] = await publisher.ticks(channel, 1)  # read through it: nothing twice
        streams = await asyncio.gather(*(client.through(channel, marker) for client in clients))
        for stream in streams:
            assert [m["seq"] for m in stream] == [*seqs, marker]
            assert [m["data"]["n"] for m in stream[:-1]] == list(range(50))
    finally:
        for client in clients:
            await client.close()


async def test_an_admin_tick_reaches_sockets_on_both_instances(
    instances: list[ServerProcess], module_pg_url: str
) -> None:
    from tests.support.accounts import admin_headers

    headers = await asyncio.to_thread(admin_headers, instances[0], module_pg_url)
    # Admin ticks are taken once the ingest leader's heartbeat is there (run alone, this
    # test may come right after the servers started).
    await eventually(lambda: ingest_heartbeat(instances[1]), 30, "the leader's heartbeat")
    clients = [await WsClient.open(server.base_url) for server in instances]
    try:
        for client in clients:
            await client.request("subscribe", channels=["ticker:ETH-USD"])
        async with httpx.AsyncClient() as http:
            response = await http.post(
                instances[1].base_url + "/api/v2/admin/ticks",
                headers=headers,
                json={"symbol": "ETH-USD", "price": "3210.5", "volume": "2"},
            )
        assert response.status_code == 202, response.text
        for client in clients:
            update = await client.next(
                lambda m: m["type"] == "update" and m["data"]["price"] == "3210.5", timeout=20
            )
            assert update["channel"] == "ticker:ETH-USD" and update["data"]["symbol"] == "ETH-USD"
    finally:
        for client in clients:
            await client.close()


async def test_silent_sockets_get_heartbeats(url: str) -> None:
    before = time.time_ns() // 1_000_000
    async with await WsClient.open(url) as client:
        message = await asyncio.wait_for(client.receive(), 15)
        assert message["type"] == "heartbeat"
        # Server time (epoch ms), stamped after the socket opened and before it arrived.
        assert before - 1000 <= message["ts"] <= time.time_ns() // 1_000_000 + 1000


# -- the private channel -------------------------------------------------------------------


async def test_notifications_need_auth_and_carry_only_the_callers_own(
    instances: list[ServerProcess], publisher: Publisher
) -> None:
    alice, bob = await signed_up(instances[0].base_url), await signed_up(instances[0].base_url)
    async with await WsClient.open(instances[1].base_url) as client:
        refused = await client.request("subscribe", channels=["notifications"])
        assert refused["code"] == "unauthorized"
        ack = await client.request("auth", token=alice["tokens"]["access_token"])
        assert ack == {"type": "ack", "id": 2, "op": "auth", "user_id": alice["user"]["id"]}
        await client.request("subscribe", channels=["notifications", "ticker:BTC-USD"])
        snapshot = await client.next(
            lambda m: m["type"] == "snapshot" and m["channel"] == "notifications"
        )
        assert snapshot["data"] is None

        bobs, alices = (f"notifications:{u['user']['id']}" for u in (bob, alice))
        await publisher.bus.publish(bobs, notification_data("for bob"))
        await publisher.bus.publish(alices, notification_data("for alice"))
        await publisher.bus.publish(bobs, notification_data("for bob again"))
        await publisher.bus.publish(alices, notification_data("marker"))
        # Everything up to the marker: alice's one notification, then the marker itself.
        marker = await client.next(lambda m: (m.get("data") or {}).get("title") == "marker")
        mine = [m for m in client.received if m.get("channel") == "notifications"]
        assert [m["data"]["title"] for m in mine] == ["for alice"]
        assert [m["seq"] for m in [*mine, marker]] == [snapshot["seq"] + 1, snapshot["seq"] + 2]


async def test_logout_elsewhere_closes_the_users_sockets_with_1008(
    instances: list[ServerProcess],
) -> None:
    user = await signed_up(instances[0].base_url)
    token = user["tokens"]["access_token"]
    sockets = [await WsClient.open(server.base_url) for server in instances]
    for client in sockets:
        await client.request("auth", token=token)
        await client.request("subscribe", channels=["notifications"])
    async with httpx.AsyncClient() as http:
        response = await http.post(
            instances[1].base_url + "/api/v2/auth/logout", headers=user["headers"]
        )
    assert response.status_code == 204
    # Pushed to every worker at once (the revocations channel); the deadline is for a
    # loaded machine, not the promise.
    for client in sockets:
        assert await client.close_code() == 1008
    # The token is dead for new sockets too.
    async with await WsClient.open(instances[0].base_url) as client:
        assert (await client.request("auth", token=token))["code"] == "invalid_token"


async def test_an_expiring_token_closes_the_socket_with_1008(url: str) -> None:
    user = await signed_up(url)
    real = jwt.decode(user["tokens"]["access_token"], options={"verify_signature": False})
    short_exp = int(time.time()) + 2
    short = jwt.encode({**real, "exp": short_exp}, TEST_SECRET, algorithm="HS256")
    async with await WsClient.open(url) as client:
        assert (await client.request("auth", token=short))["type"] == "ack"
        await client.request("subscribe", channels=["notifications"])
        assert await client.close_code() == 1008
        assert time.time() >= short_exp  # closed for its expiry, not before it


async def test_a_refused_auth_keeps_the_sockets_user_and_says_so(url: str) -> None:
    alice, bob = await signed_up(url), await signed_up(url)
    async with await WsClient.open(url) as client:
        await client.request("auth", token=alice["tokens"]["access_token"])
        refused = await client.request("auth", token=bob["tokens"]["access_token"])
        assert refused["code"] == "invalid_message"
        kept = f"the socket stays authenticated as {alice['user']['id']}"
        assert refused["message"].endswith(kept)
        # A bad token (a failed refresh, say) leaves alice's auth in place, and says so.
        refused = await client.request("auth", token="not-a-token")
        assert (refused["code"], refused["message"].endswith(kept)) == ("invalid_token", True)
        ack = await client.request("subscribe", channels=["notifications"])
        assert ack["type"] == "ack"
        # A fresh token of the same user is fine (it extends the socket's life).
        again = await client.request("auth", token=alice["tokens"]["access_token"])
        assert again["type"] == "ack"


# -- protection ----------------------------------------------------------------------------


async def test_a_foreign_origin_is_refused_with_403_before_the_upgrade(url: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(url, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    assert orjson.loads(refused.value.response.body)["error"]["code"] == "forbidden"
    async with await WsClient.open(url, origin=TEST_ORIGIN) as client:
        assert (await client.request("ping"))["type"] == "pong"


async def test_an_oversized_frame_closes_with_1009(url: str) -> None:
    async with await WsClient.open(url, max_size=None) as client:
        await client.conn.send("x" * (64 * 1024 + 1))
        assert await client.close_code() == 1009


async def test_a_frame_of_exactly_64_kib_is_read(url: str) -> None:
    async with await WsClient.open(url) as client:
        await client.conn.send("x" * (64 * 1024))
        assert (await client.next(lambda m: m["type"] == "error"))["code"] == "invalid_message"


def closed_by_server(port: int, frames: bytes) -> tuple[int | None, str, list[RawFrame]]:
    """Send ``frames`` at once on a fresh socket, read to the server's close frame, answer
    it as a client must: (its code, its reason, every frame read)."""
    sock = raw_handshake(port, rcvbuf=1 << 20)
    try:
        sock.sendall(frames)
        got = RawReader(sock).until_closed(15)
        [close] = [payload for opcode, payload in got if opcode == CLOSE]
        sock.sendall(masked(CLOSE, close))
        return close_code(got), close[2:].decode(), got
    finally:
        sock.close()


async def test_a_text_frame_that_is_not_utf8_closes_1007_and_is_never_logged(
    instances: list[ServerProcess],
) -> None:
    secret = b"eyJhbGciOi-never-in-a-log"
    bad = masked_text(b'{"op": "auth", "id": 1, "token": "' + secret + b'\xff\xfe"}')
    code, reason, frames = await asyncio.to_thread(
        closed_by_server, instances[0].port, bad + masked_text(b'{"op": "ping", "id": 2}')
    )
    assert (code, reason) == (1007, "text messages must be UTF-8")
    assert [opcode for opcode, _ in frames] == [CLOSE]  # nothing after it was processed
    # Fragmented: the bad byte split across two frames is found all the same.
    split = masked(0x1, b'{"op": "ping", "id": 3, "x": "\xe2', fin=False) + masked(0x0, b'"}')
    code, _, _ = await asyncio.to_thread(closed_by_server, instances[0].port, split)
    assert code == 1007
    for server in instances:
        assert secret.decode() not in server.output()


@pytest.mark.parametrize(
    "frame",
    [
        masked_text(b'{"op": "ping", "id": 1}'),
        masked(BINARY, b'{"op": "ping", "id": 1}'),
        masked(PING, b"hi"),
        masked(PONG, b"hi"),
        masked(0x1, b'{"op": "ping",', fin=False) + masked(0x0, b' "id": 1}'),
    ],
    ids=["text", "binary", "ping", "pong", "fragmented"],
)
async def test_every_kind_of_frame_counts_against_the_inbound_limit(
    url: str, instances: list[ServerProcess], frame: bytes
) -> None:
    # 45 at once: more than the burst (40), faster than any refill.
    code, reason, _ = await asyncio.to_thread(closed_by_server, instances[0].port, frame * 45)
    assert (code, reason) == (1008, "too many messages")


async def test_a_flooder_receives_its_1008_through_a_close_handshake(url: str) -> None:
    """A client that sends as fast as it can until it is stopped (reading meanwhile, as
    the websockets library does) reads the close frame and why, and is not reset."""
    async with await WsClient.open(url) as client:

        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in client.conn:
                    pass

        reading = asyncio.create_task(read())
        message = orjson.dumps({"op": "ping", "id": 1, "pad": "x" * 16_000}).decode()
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(20):
                while True:
                    await client.conn.send(message)
        await reading
        assert closed.value.rcvd is not None and closed.value.sent is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "too many messages")
        assert closed.value.rcvd_then_sent is True  # the server's close, answered


def flood_reading_only_when_blocked(port: int, within_s: float) -> tuple[list[RawFrame], bool]:
    """Send pings as fast as the socket takes them, reading only when a send would block
    (as a websockets client in a send loop does: it yields to its reader only then), until
    the server's close frame arrives; then answer it. The frames read, and whether the
    server then ended the connection cleanly (EOF, not a reset)."""
    sock = raw_handshake(port, rcvbuf=65536)
    with contextlib.closing(sock):
        sock.setblocking(False)
        frame = masked(TEXT, orjson.dumps({"op": "ping", "id": 1, "pad": "x" * 16_000}))
        pending, rest, frames = b"", b"", list[RawFrame]()
        deadline = time.monotonic() + within_s
        while close_code(frames) is None:
            assert time.monotonic() < deadline, "no close frame came"
            try:
                pending = pending or frame
                pending = pending[sock.send(pending) :]
                continue
            except BlockingIOError:
                pass
            readable, _, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                chunk = sock.recv(1 << 20)  # a reset here is the failure this test is for
                assert chunk, "the server closed without a close frame"
                more, rest = split_frames(rest + chunk)
                frames += more
        sock.setblocking(True)
        sock.settimeout(within_s)
        closing = next(payload for opcode, payload in frames if opcode == CLOSE)
        sock.sendall(pending + masked(CLOSE, closing[:2]))
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            return frames, False
        return frames, True


async def test_a_flooder_that_reads_only_when_its_sends_block_gets_its_1008(url: str) -> None:
    """Dropping what a closing socket sends is paced, so a flooder's sends back up and it
    reads the close frame; it answers, and the server closes without a reset."""
    port = urlsplit(url).port
    assert port is not None
    frames, clean = await asyncio.to_thread(flood_reading_only_when_blocked, port, 30)
    closing = next(payload for opcode, payload in frames if opcode == CLOSE)
    assert (int.from_bytes(closing[:2], "big"), closing[2:]) == (1008, b"too many messages")
    assert clean


async def test_a_flood_closes_with_1008(url: str) -> None:
    async with await WsClient.open(url) as client:
        ping = orjson.dumps({"op": "ping", "id": 1}).decode()
        for _ in range(200):
            await client.conn.send(ping)
        assert await client.close_code() == 1008
        errors = [m for m in client.received if m["type"] == "error"]
        assert [e["code"] for e in errors] == ["rate_limited"]
        # The burst allowance (40) was answered before the limit struck.
        assert len([m for m in client.received if m["type"] == "pong"]) >= 40


async def test_shutdown_closes_sockets_with_1001(module_pg_url: str, redis_url: str) -> None:
    env = instance_env(module_pg_url, redis_url)
    server = await asyncio.to_thread(ServerProcess(env).wait_ready)
    try:
        client = await WsClient.open(server.base_url)
        await client.request("ping")
        server.process.terminate()
        assert await client.close_code(timeout=20) == 1001
    finally:
        await asyncio.to_thread(server.stop)
