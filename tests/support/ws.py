"""A WebSocket test client for ``/ws`` (the ``websockets`` library) and a bus publisher.

Every frame and close the clients here receive is checked against the served AsyncAPI
document (:mod:`tests.support.asyncapi`): a frame it does not describe fails the test.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.streams import StreamReader

from coinlink.bus import RedisBus
from coinlink.market.types import INTERVALS
from tests.support.asyncapi import check_close, check_frame

Json = dict[str, Any]


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws"


class WsClient:
    """Sends ops with fresh ids; keeps what arrives so tests can pick messages out of order."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.received: list[Json] = []
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, base_url: str, **options: Any) -> WsClient:
        conn = await connect(ws_url(base_url), compression=None, open_timeout=10, **options)
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, op: str, **fields: Any) -> int:
        msg_id = next(self._ids)
        await self.conn.send(orjson.dumps({"op": op, "id": msg_id, **fields}).decode())
        return msg_id

    async def request(self, op: str, **fields: Any) -> Json:
        """Send an op and return its reply (ack, pong or error with the same id)."""
        msg_id = await self.send(op, **fields)
        return await self.next(lambda m: m.get("id") == msg_id and m["type"] != "update")

    async def next(
        self, match: Callable[[Json], bool] = lambda m: True, timeout: float = 15
    ) -> Json:
        """The first message (heartbeats aside) that ``match`` accepts; it is taken out.
        What arrived before it stays in ``received``. (The deadlines here are for a loaded
        machine: each returns as soon as what it waits for is there.)"""
        if not await self.arrived(match, timeout):
            raise TimeoutError(f"no matching message; have {self.received[-5:]}")
        index = next(i for i, message in enumerate(self.received) if match(message))
        return self.received.pop(index)

    async def arrived(self, match: Callable[[Json], bool], timeout: float) -> bool:
        """Whether a message ``match`` accepts is in ``received`` within ``timeout``
        (heartbeats aside); it stays there, with whatever arrived meanwhile."""
        deadline = time.monotonic() + timeout
        while not any(match(message) for message in self.received):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                message = await asyncio.wait_for(self.receive(), remaining)
            except TimeoutError:
                return False
            if message["type"] != "heartbeat":
                self.received.append(message)
        return True

    async def receive(self) -> Json:
        """The next frame, as it comes (heartbeats too), checked against the document."""
        try:
            message: Json = orjson.loads(await self.conn.recv())
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd_then_sent:
                check_close(exc.rcvd.code, exc.rcvd.reason)  # the server closed first
            raise
        check_frame(message)
        return message

    async def updates(self, channel: str, count: int, timeout: float = 20) -> list[Json]:
        return [
            await self.next(lambda m: m["type"] == "update" and m["channel"] == channel, timeout)
            for _ in range(count)
        ]

    async def through(self, channel: str, seq: int) -> list[Json]:
        """The updates of ``channel`` up to and including the one numbered ``seq``, taken
        out. With ``seq`` a marker published after what a test expects, a duplicate or a
        stray update cannot hide after the last expected one."""
        last = await self.next(
            lambda m: m["type"] == "update" and m["channel"] == channel and m["seq"] == seq
        )
        earlier = [m for m in self.received if m["type"] == "update" and m["channel"] == channel]
        self.received = [m for m in self.received if m not in earlier]
        return [*earlier, last]

    async def close_code(self, timeout: float = 15) -> int | None:
        """Read until the server closes; the close code it sent."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self.received.append(await self.receive())
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


class Publisher:
    """Publishes straight onto CoinLink's bus (as the ingest leader would)."""

    def __init__(self, redis_url: str, prefix: str, history_size: int = 100) -> None:
        # The publisher trims the history: give it the servers' COINLINK_BUS_HISTORY_SIZE.
        self.bus = RedisBus(redis_url, prefix=prefix, history_size=history_size)

    async def __aenter__(self) -> Publisher:
        await self.bus.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()

    async def ticks(self, channel: str, count: int, size: int = 0) -> list[int]:
        """``count`` messages on a ``ticker:`` or ``candles:`` channel, numbered from 0."""
        items = [(channel, market_data(channel, i, size)) for i in range(count)]
        return await self.bus.publish_many(items)


RawFrame = tuple[int, bytes]  # (opcode, payload) of a frame a raw client read
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client-to-server frame of any opcode (masked, with a zero mask); ``fin=False`` for
    a fragment that more follow."""
    return bytes(((0x80 if fin else 0) | opcode,)) + masked_text(payload)[1:]


def split_frames(data: bytes) -> tuple[list[RawFrame], bytes]:
    """Each complete server frame at the start of ``data``, and the incomplete rest."""
    frames = read_frames(data)
    # Servers encode lengths minimally (RFC 6455): 7 bits, then 16, then 64.
    used = sum(2 + (0 if len(p) < 126 else 2 if len(p) < 65536 else 8) + len(p) for _, p in frames)
    return frames, data[used:]


def close_code(frames: list[RawFrame]) -> int | None:
    """The code of the server's close frame among ``frames``; None when there is none."""
    closes = [payload for opcode, payload in frames if opcode == CLOSE]
    return int.from_bytes(closes[0][:2], "big") if closes else None


class RawReader:
    """Reads what the server sends to a :func:`raw_handshake` client, frame by frame, only
    when told to (blocking socket reads: run them in a thread). It answers pings with
    pongs, as every client must, unless ``answer_pings`` is False. ``own_closes``: the
    payloads of close frames the client sent, which the server echoes (RFC 6455, 5.5.1)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        answer_pings: bool = True,
        own_closes: Collection[bytes] = (),
    ) -> None:
        self.sock = sock
        self.answer_pings = answer_pings
        self.own_closes = own_closes
        self.frames: list[RawFrame] = []
        self._rest = b""

    def read_until(self, done: Callable[[list[RawFrame]], bool], within_s: float) -> list[RawFrame]:
        """Read until ``done`` holds for the frames read so far, or the server has closed
        the connection; every frame read. TimeoutError after ``within_s``."""
        deadline = time.monotonic() + within_s
        while not done(self.frames):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not done within {within_s} s; last: {self.frames[-3:]}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if not chunk:
                break
            frames, self._rest = split_frames(self._rest + chunk)
            for opcode, payload in frames:
                if opcode == PING and self.answer_pings:
                    self.sock.sendall(masked(PONG, payload))
                elif opcode == TEXT:
                    check_frame(orjson.loads(payload))
                elif opcode == CLOSE and payload not in self.own_closes:
                    check_close(int.from_bytes(payload[:2], "big"), payload[2:].decode())
            self.frames += frames
        return self.frames

    def until_closed(self, within_s: float) -> list[RawFrame]:
        return self.read_until(lambda frames: close_code(frames) is not None, within_s)


def market_data(channel: str, n: int, size: int = 0) -> bytes:
    """A ticker or candle of ``channel``, as the ingest leader publishes it, with the test's
    own fields (clients ignore fields they do not know): ``n`` numbers it, ``sent_ns``
    lets a reader measure latency, ``pad`` adds bulk."""
    kind, _, rest = channel.partition(":")
    symbol, _, interval = rest.partition(":")
    price, now = f"{50_000 + n}.5", time.time_ns()
    test_fields = {"n": n, "sent_ns": now, "pad": "x" * size}
    if kind == "ticker":
        stats = ("open_24h", "high_24h", "low_24h", "change_24h", "change_pct_24h")
        ticker = {"symbol": symbol, "price": price, "bid": None, "ask": None}
        ticker |= dict.fromkeys(stats, "0") | {"volume_24h": "0", "quote_volume_24h": "0"}
        return orjson.dumps({**ticker, "ts": now // 1_000_000, **test_fields})
    assert kind == "candles", channel
    length = INTERVALS[interval]
    start = now // 1_000_000 // length * length
    ohlc = dict.fromkeys(("open", "high", "low", "close"), price)
    return orjson.dumps(
        {
            "symbol": symbol,
            "interval": interval,
            "open_time": start,
            "close_time": start + length - 1,
            **ohlc,
            "volume": "1",
            "trades": n + 1,
            "closed": False,
            **test_fields,
        }
    )


def notification_data(title: str) -> bytes:
    """A notification as the alert evaluator publishes it."""
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "kind": "price_alert",
            "title": title,
            "body": title,
            "data": {
                "alert_id": str(uuid.uuid4()),
                "symbol": "BTC-USD",
                "condition": "above",
                "threshold": "50000",
                "price": "50000.5",
                "ts": time.time_ns() // 1_000_000,
            },
            "created_at": "2026-12-06T00:00:00.000Z",
            "read_at": None,
        }
    )


# A client's upgrade request to /ws, offering no extension.
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def raw_handshake(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A client that upgrades to WebSocket and then does nothing at all (reads nothing).

    Its receive buffer is tiny, so the server's writes back up almost at once.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked_text(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask; the mask here is zero)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 65536:
        header = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def read_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete server frame in ``data``."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if at + size > len(data):
            break
        frames.append((opcode, data[at : at + size]))
        at += size
    return frames


async def raw_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """:func:`raw_handshake` for async tests: (reader, writer, the 101 response's head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(UPGRADE)
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer, head


def parse_frame(data: bytes) -> Frame:
    """The one server frame in ``data`` as the ``websockets`` library parses it."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")
