"""One socket's send path, over a real Sanic WebSocket whose client reads only when told.

Below the high-water mark a frame goes straight into the transport; past it the socket is
lagging: frames queue (tickers conflated, the rest in order) until a flush finds the
transport drained, and a socket that owes more than its budget must be closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coinlink.realtime import protocol
from coinlink.realtime.connection import HIGH_WATER, LOW_WATER, Connection, Laggards
from tests.support.metrics import sample
from tests.support.services import until
from tests.support.ws_pairs import Peer, WsEndpoint

BUDGET = 256 * 1024
TICKER = "ticker:BTC-USD"


def frame(name: str) -> bytes:
    return protocol.message({"n": name})


def sized(size: int, name: str = "") -> bytes:
    """A text frame of exactly ``size`` bytes (126 to 65535: a 4-byte header)."""
    pad = size - 4 - len(b'{"n":"","pad":""}') - len(name)
    return protocol.text_frame(b'{"n":"%s","pad":"%s"}' % (name.encode(), b"x" * pad))


def filler() -> bytes:
    """More than the high-water mark: the client has not read it, so it stays buffered."""
    return protocol.message({"n": "filler", "pad": "x" * (2 * HIGH_WATER)})


async def lagging(endpoint: WsEndpoint, budget: int = BUDGET) -> tuple[Connection, Peer]:
    """A connection whose transport holds more than the high-water mark."""
    ws, peer = await endpoint.open()
    conn = Connection(ws, "192.0.2.1", budget, Laggards())
    assert conn.send(filler())
    assert conn.transport.get_write_buffer_size() > HIGH_WATER  # the premise
    return conn, peer


def names(messages: list[Any]) -> list[str]:
    return [message["n"] for message in messages]


async def test_below_the_high_water_mark_every_frame_goes_straight_out_in_order(
    endpoint: WsEndpoint,
) -> None:
    ws, peer = await endpoint.open()
    laggards = Laggards()
    conn = Connection(ws, "192.0.2.1", BUDGET, laggards)
    assert conn.send(frame("a"))
    assert conn.send(frame("t1"), TICKER)  # a ticker is not held back either
    assert conn.send(frame("b"))
    assert conn.send(frame("t2"), TICKER)
    assert names(await peer.messages(4)) == ["a", "t1", "b", "t2"]
    assert not laggards and not laggards.arrived.is_set()


async def test_a_lagging_socket_queues_in_order_keeps_the_newest_ticker_and_flushes_once_drained(
    endpoint: WsEndpoint,
) -> None:
    conn, peer = await lagging(endpoint)
    conflated_before = sample("ws_conflations_total")
    for name, key in [
        ("c1", None),
        ("t1", TICKER),
        ("all1", "tickers"),
        ("c2", None),
        ("t2", TICKER),
        ("t3", TICKER),
    ]:
        assert conn.send(frame(name), key)
    assert conn.laggards == {conn} and conn.laggards.arrived.is_set()
    assert sample("ws_conflations_total") == conflated_before + 2

    assert names([await peer.message()]) == ["filler"]  # the client catches up...
    conn.transport.write(frame("marker"))
    assert names([await peer.message()]) == ["marker"]  # ...and nothing queued went out
    assert conn.flush()
    delivered = names(await peer.messages(4))
    # The queue in order, then the newest frame of each conflated channel.
    assert delivered[:2] == ["c1", "c2"] and sorted(delivered[2:]) == ["all1", "t3"]

    assert conn.send(frame("live"))  # keeping up again: straight out, no flush needed
    assert names([await peer.message()]) == ["live"]


async def test_flush_waits_for_the_transport_to_drain_below_half_the_high_water_mark(
    endpoint: WsEndpoint,
) -> None:
    conn, peer = await lagging(endpoint)
    assert conn.send(frame("queued"))
    assert not conn.flush()  # still over the mark
    # Read a little at a time until the transport holds less than the mark but more than
    # half of it: still too full to take the queue.
    async with asyncio.timeout(5):
        while not LOW_WATER < conn.transport.get_write_buffer_size() <= HIGH_WATER:
            await peer.read_some(1024)
    assert not conn.flush()
    assert names([await peer.message()]) == ["filler"]
    assert conn.flush()
    assert names([await peer.message()]) == ["queued"]


async def test_a_lagging_socket_owing_more_than_its_budget_must_be_closed(
    endpoint: WsEndpoint,
) -> None:
    conn, _ = await lagging(endpoint, budget=10_000)
    owed = [conn.send(sized(1000, str(n))) for n in range(11)]
    assert owed == [True] * 10 + [False]  # 10,000 bytes owed is the budget, not over it


async def test_conflated_tickers_cost_the_budget_once(endpoint: WsEndpoint) -> None:
    conn, _ = await lagging(endpoint, budget=10_000)
    assert all(conn.send(sized(1000, str(n)), TICKER) for n in range(100))


async def test_close_follows_what_the_transport_holds_and_drops_the_queue(
    endpoint: WsEndpoint,
) -> None:
    ws, peer = await endpoint.open()
    conn = Connection(ws, "192.0.2.1", BUDGET, Laggards())
    slow_before = sample("ws_slow_consumer_closes_total")
    assert conn.send(frame("sent"))
    assert conn.send(filler())
    assert conn.send(frame("queued"))
    conn.close(1013, "too slow to keep up")
    conn.close(1013, "again")  # closing already: nothing more is sent
    assert conn.send(frame("after"))  # a closing socket takes frames and drops them
    code, reason, before = await peer.closed()
    assert (code, reason) == (1013, "too slow to keep up")
    assert names(before) == ["sent", "filler"]
    with pytest.raises(ConnectionError):  # no second close frame: the server hung up
        await peer.frame()
    assert sample("ws_slow_consumer_closes_total") == slow_before + 1


async def test_only_a_1013_close_counts_as_a_slow_consumer(endpoint: WsEndpoint) -> None:
    ws, peer = await endpoint.open()
    conn = Connection(ws, "192.0.2.1", BUDGET, Laggards())
    slow_before = sample("ws_slow_consumer_closes_total")
    conn.close(1008, "session revoked")
    assert (await peer.closed())[:2] == (1008, "session revoked")
    assert sample("ws_slow_consumer_closes_total") == slow_before


async def test_stop_sending_writes_nothing_more_and_drops_the_queue(
    endpoint: WsEndpoint,
) -> None:
    conn, peer = await lagging(endpoint)
    assert conn.send(frame("queued"))
    assert conn.send(frame("ticker"), TICKER)
    conn.stop_sending()  # the session closes with the handshake itself
    assert conn.send(frame("after"))
    assert names([await peer.message()]) == ["filler"]
    assert conn.flush()  # drained, and nothing left to write
    conn.transport.write(frame("marker"))
    assert names([await peer.message()]) == ["marker"]


async def test_a_reply_counts_as_traffic_and_queues_behind_earlier_frames(
    endpoint: WsEndpoint,
) -> None:
    conn, peer = await lagging(endpoint)
    quiet_since = conn.last_sent
    assert conn.send(frame("update"))
    assert conn.reply(frame("ack"))
    assert conn.last_sent > quiet_since  # the hub's heartbeat skips this socket
    assert names([await peer.message()]) == ["filler"]
    assert conn.flush()
    assert names(await peer.messages(2)) == ["update", "ack"]


async def test_a_socket_whose_client_is_gone_cannot_be_flushed(endpoint: WsEndpoint) -> None:
    conn, peer = await lagging(endpoint)
    assert conn.send(frame("queued"))
    peer.close()  # with data unread: the kernel resets the connection
    await until(conn.transport.is_closing, what="the server noticing")
    assert not conn.flush()  # still owed: the hub closes it once that has lasted too long
