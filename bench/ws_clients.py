"""A client process of ``bench.ws_fanout``: many cheap WebSocket connections, driven by stdin.

Each connection is a raw asyncio ``Protocol`` with a hand-written HTTP/1.1 upgrade and a
minimal RFC 6455 frame parser (server frames unmasked, client frames masked, no extensions):
a few microseconds per message instead of a full client library's task, queue and buffers
per connection, so the clients leave the two cores to the server. Connection ``i`` (of
``--start`` .. ``--start + --count - 1``) subscribes to ``channels[i % len(channels)]`` and
is ready once it has the ack and the channel's snapshot. Heartbeats and pongs are ignored;
pings are answered.

Protocol with the parent, one JSON object per line:

* stdout ``{"event":"connected","ok":n,"failed":n,"errors":{reason:count},"per_channel":{...}}``
  once every connection is ready or has failed (connected in batches of ``--batch``);
* stdin ``{"cmd":"start","from":{channel:seq}}``: count from here on only updates with a
  higher seq (latency, deliveries); answers ``{"event":"started"}``;
* stdin ``{"cmd":"count"}``: answers ``{"event":"count","delivered":n}``;
* stdin ``{"cmd":"report"}``: answers the window's figures (deliveries, latency histogram,
  seq gaps, connections lost);
* stdin ``{"cmd":"close"}`` or end of input: close frames, then exit.

Latency is the receive time (``time.time_ns()`` when the bytes arrive) minus the
``pub_ns`` the publisher put in the data, bucketed on a log scale of ~2 % resolution.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import resource
import sys
import time
from collections import Counter
from typing import Any, cast

import orjson

# Latency buckets: bucket b holds latencies in [exp(b / SCALE), exp((b + 1) / SCALE)) µs.
HIST_SCALE = 50


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Stats:
    """Everything this process measures, shared by its connections."""

    def __init__(self) -> None:
        self.window_from: dict[str, int] | None = None
        self.delivered = 0
        self.latency: Counter[int] = Counter()
        self.gaps = 0  # an update whose seq is not last + 1 (the whole run, warm-up included)
        self.missing = 0  # updates skipped over by those gaps
        self.reordered = 0  # an update whose seq is not above the last one
        self.heartbeats = 0
        self.lost: Counter[str] = Counter()  # connections that ended before close, by reason
        self.closing = False


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One FIN frame from a client: masked as RFC 6455 requires."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return header + key + masked


class Client(asyncio.Protocol):
    """One WebSocket connection subscribed to one channel."""

    def __init__(self, stats: Stats, host: str, path: str, channel: str, ident: int) -> None:
        self.stats = stats
        self.channel = channel
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.subscribe = client_frame(
            0x1, orjson.dumps({"op": "subscribe", "id": ident, "channels": [channel]})
        )
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.acked = False
        self.buffer = b""
        self.fragments: list[bytes] = []
        self.last_seq = -1
        self.delivered = 0
        self.close_code: int | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = (
            f"close code {self.close_code}"
            if self.close_code is not None
            else (type(exc).__name__ if exc else "EOF")
        )
        established = (
            self.ready.done() and not self.ready.cancelled() and not self.ready.exception()
        )
        self.fail(f"connection lost before ready: {reason}")
        if established and not self.stats.closing:
            self.stats.lost[reason] += 1

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            status = buffer[: buffer.find(b"\r\n")].decode(errors="replace")
            if not status.startswith("HTTP/1.1 101"):
                self.fail(f"handshake: {status}")
                self.abort()
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
            self.write(self.subscribe)
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length, offset = second & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, offset = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, offset = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), pos + 10
            key = b""
            if second & 0x80:  # a masked server frame is a protocol error; read it anyway
                key, offset = buffer[offset : offset + 4], offset + 4
            if size < offset + length:
                break
            payload = buffer[offset : offset + length]
            if key:
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            pos = offset + length
            self.frame(first, payload, now_ns)
        self.buffer = buffer[pos:] if pos < size else b""

    # frames and messages

    def frame(self, first: int, payload: bytes, now_ns: int) -> None:
        opcode = first & 0x0F
        if opcode == 0x0 or not first & 0x80:  # fragments
            self.fragments.append(payload)
            if not first & 0x80:
                return
            payload, self.fragments = b"".join(self.fragments), []
        if opcode in (0x1, 0x2, 0x0):
            self.message(payload, now_ns)
        elif opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.write(client_frame(0x8, payload[:2]))
            self.abort()
        elif opcode == 0x9:
            self.write(client_frame(0xA, payload))

    def message(self, payload: bytes, now_ns: int) -> None:
        message: dict[str, Any] = orjson.loads(payload)
        kind = message.get("type")
        if kind == "update":
            self.update(message, now_ns)
        elif kind == "heartbeat":
            self.stats.heartbeats += 1
        elif kind == "ack":
            self.acked = True
        elif kind == "snapshot":
            # A snapshot without data (seq 0: nothing seen yet) says nothing about the
            # next seq: the first update then starts the count instead of being a gap.
            seq = int(message.get("seq") or 0)
            self.last_seq = seq if seq > 0 and message.get("data") is not None else -1
            if self.acked and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "error":
            self.fail(f"error {message.get('code')}: {message.get('message')}")

    def update(self, message: dict[str, Any], now_ns: int) -> None:
        stats, seq = self.stats, message["seq"]
        if self.last_seq >= 0 and seq != self.last_seq + 1:
            if seq > self.last_seq:
                stats.gaps += 1
                stats.missing += seq - self.last_seq - 1
            else:
                stats.reordered += 1
        self.last_seq = max(seq, self.last_seq)
        start = stats.window_from
        if start is None or seq <= start.get(self.channel, 0):
            return
        self.delivered += 1
        stats.delivered += 1
        pub_ns = message["data"].get("pub_ns")
        if pub_ns is None:  # CoinLink's own ticks (bench.soak): no publish time to measure
            return
        micros = (now_ns - pub_ns) // 1000
        stats.latency[int(math.log(micros) * HIST_SCALE) if micros > 1 else 0] += 1

    # helpers

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.write(client_frame(0x8, (1000).to_bytes(2, "big")))
        if self.transport is not None:
            self.transport.close()


async def connect_all(
    args: argparse.Namespace, stats: Stats
) -> tuple[list[Client], dict[str, Any]]:
    loop = asyncio.get_running_loop()
    channels = args.channels.split(",")
    clients: list[Client] = []
    errors: Counter[str] = Counter()
    per_channel: Counter[str] = Counter()
    host = f"{args.host}:{args.port}"
    began = time.monotonic()
    for first in range(args.start, args.start + args.count, args.batch):
        batch = range(first, min(first + args.batch, args.start + args.count))

        async def one(i: int) -> Client:
            channel = channels[i % len(channels)]
            _, client = await loop.create_connection(
                lambda: Client(stats, host, args.path, channel, i), args.host, args.port
            )
            try:
                await client.ready
            except BaseException:
                client.abort()  # timed out or refused: it must not stay connected
                raise
            return client

        results = await asyncio.gather(
            *(asyncio.wait_for(one(i), args.connect_timeout) for i in batch),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Client):
                clients.append(result)
                per_channel[result.channel] += 1
            elif isinstance(result, BaseException):
                errors[describe(result)] += 1
    seconds = time.monotonic() - began
    figures = {
        "event": "connected",
        "ok": len(clients),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "per_channel": dict(per_channel),
        "seconds": round(seconds, 3),
    }
    return clients, figures


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out (no ack and snapshot)"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def emit(figures: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    stats = Stats()
    clients, figures = await connect_all(args, stats)
    emit(figures)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = orjson.loads(line)
        cmd = command["cmd"]
        if cmd == "start":
            stats.window_from = command["from"]
            stats.delivered = 0
            stats.latency.clear()
            for client in clients:
                client.delivered = 0
            emit({"event": "started"})
        elif cmd == "count":
            emit({"event": "count", "delivered": stats.delivered})
        elif cmd == "report":
            emit(report(stats, clients))
        elif cmd == "close":
            break
    stats.closing = True
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)


def report(stats: Stats, clients: list[Client]) -> dict[str, Any]:
    per_client = [c.delivered for c in clients]
    return {
        "event": "report",
        "delivered": stats.delivered,
        "latency": {str(b): n for b, n in stats.latency.items()},
        "gaps": stats.gaps,
        "missing": stats.missing,
        "reordered": stats.reordered,
        "heartbeats": stats.heartbeats,
        "lost": dict(stats.lost),
        "open": sum(1 for c in clients if c.transport and not c.transport.is_closing()),
        "min_per_client": min(per_client, default=0),
        "max_per_client": max(per_client, default=0),
        "silent_clients": sum(1 for n in per_client if n == 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--start", type=int, default=0, help="global index of the first client")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--channels", required=True, help="comma-separated channels")
    parser.add_argument("--batch", type=int, default=250, help="connections opened at once")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    args = parser.parse_args()
    raise_nofile()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a CoinLink dependency
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
