"""The bare WebSocket fan-out ceiling for ``bench.ws_fanout``: ``websockets`` + one Redis pub/sub.

Speaks the part of CoinLink's ``/ws`` protocol the benchmark uses, on any path: a
``{"op":"subscribe","id":n,"channels":["ticker:SYM", ...]}`` gets
``{"type":"ack","id":n,"op":"subscribe","channels":[{"channel":...,"recovered":false}]}``
then one ``{"type":"snapshot",...}`` per channel (the last update this worker saw, ``data``
null before the first); ``{"op":"ping","id":n}`` gets a pong. Every worker process holds ONE
Redis pub/sub connection subscribed to ``<prefix>ch:<channel>`` for every channel given on
the command line; for each message (``b"<seq> <published µs> <data>"``, or the older
``b"<seq> <data>"``) it builds the update JSON once and hands it to
``websockets.asyncio.server.broadcast`` for the connections subscribed to that channel in
this worker; ``--framing once`` instead builds the WebSocket frame once and writes the same
bytes to every socket's transport, as CoinLink's hub does. No compression, no heartbeats,
no limits, no logging: it is the ceiling, not a product. Keepalive pings every
``--ping-interval`` s (20, as CoinLink's default ``COINLINK_WS_PING_INTERVAL_S``; the bench
passes CoinLink's) so that both servers pay for the same keepalive.

The main process starts ``--workers`` copies of itself that share the port with
SO_REUSEPORT, each touching ``<ready-file>.<n>`` once it listens and its Redis subscription
is confirmed; SIGTERM (or a worker's death) stops them all. Run it in a session of its own
so that the bench can read CPU and RSS for the whole process group.

    python -m bench.ws_bare --port P --workers 2 --redis-url redis://127.0.0.1:6379/0 \
        --prefix bench-ws-x: --channels ticker:BTC-USD,ticker:ETH-USD --ready-file /tmp/r
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.protocol import State

BACKLOG = 1024  # as CoinLink's `coinlink serve`


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Fanout:
    """One worker's subscribers, last updates and Redis reader."""

    def __init__(self, channels: list[str], prefix: str, frame_once: bool = False) -> None:
        self.frame_once = frame_once
        self.channels = set(channels)
        self.prefix = f"{prefix}ch:"
        self.subscribers: dict[str, set[ServerConnection]] = {c: set() for c in channels}
        self.last: dict[str, tuple[bytes, bytes]] = {}  # channel -> (seq, data)

    async def handler(self, ws: ServerConnection) -> None:
        mine: set[str] = set()
        try:
            async for raw in ws:
                try:
                    message = orjson.loads(raw)
                    op, ident = message.get("op"), message.get("id")
                except (orjson.JSONDecodeError, AttributeError):
                    await send(ws, error(None, "invalid_message", "not a JSON object"))
                    continue
                if op == "subscribe":
                    await self.subscribe(ws, ident, message.get("channels"), mine)
                elif op == "unsubscribe":
                    for channel in message.get("channels") or []:
                        mine.discard(channel)
                        self.subscribers.get(channel, set()).discard(ws)
                    await send(ws, orjson.dumps({"type": "ack", "id": ident, "op": op}))
                elif op == "ping":
                    pong = {"type": "pong", "id": ident, "ts": time.time_ns() // 1_000_000}
                    await send(ws, orjson.dumps(pong))
                else:
                    await send(ws, error(ident, "invalid_message", f"unknown op {op!r}"))
        finally:
            for channel in mine:
                self.subscribers[channel].discard(ws)

    async def subscribe(
        self, ws: ServerConnection, ident: Any, channels: Any, mine: set[str]
    ) -> None:
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            await send(ws, error(ident, "invalid_message", "channels must be a list of strings"))
            return
        unknown = [c for c in channels if c not in self.channels]
        if unknown:
            await send(ws, error(ident, "unknown_channel", ", ".join(unknown)))
            return
        acked = [{"channel": c, "recovered": False} for c in channels]
        await send(
            ws, orjson.dumps({"type": "ack", "id": ident, "op": "subscribe", "channels": acked})
        )
        for channel in channels:
            mine.add(channel)
            self.subscribers[channel].add(ws)
            seq, data = self.last.get(channel, (b"0", b"null"))
            await send(ws, frame(b"snapshot", channel.encode(), seq, data))

    async def read_redis(self, url: str, subscribed: asyncio.Event) -> None:
        client = Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.subscribe(*(self.prefix + c for c in self.channels))
        skip = len(self.prefix)
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            if message["type"] == "subscribe":
                if message["data"] == len(self.channels):
                    subscribed.set()
                continue
            if message["type"] != "message":
                continue
            channel_bytes: bytes = message["channel"][skip:]
            seq, _, data = message["data"].partition(b" ")
            if data[:1].isdigit():  # b"<seq> <published µs> <data>" since the gateway landed
                data = data.partition(b" ")[2]
            channel = channel_bytes.decode()
            self.last[channel] = (seq, data)
            connections = self.subscribers.get(channel)
            if not connections:
                continue
            payload = frame(b"update", channel_bytes, seq, data)
            if self.frame_once:
                # The WebSocket frame built once, the same bytes written to every socket.
                wire = text_frame_header(len(payload)) + payload
                for ws in connections:
                    if ws.protocol.state is State.OPEN:
                        ws.transport.write(wire)
            else:
                broadcast(connections, payload, text=True)


def text_frame_header(length: int) -> bytes:
    """FIN + text opcode, unmasked (server to client), no extensions."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


def frame(kind: bytes, channel: bytes, seq: bytes, data: bytes) -> bytes:
    """The update or snapshot JSON, with ``data`` spliced in untouched."""
    return b'{"type":"%s","channel":"%s","seq":%s,"data":%s}' % (kind, channel, seq, data)


async def send(ws: ServerConnection, payload: bytes) -> None:
    """JSON bytes as a text frame."""
    await ws.send(payload, text=True)


def error(ident: Any, code: str, text: str) -> bytes:
    return orjson.dumps({"type": "error", "id": ident, "code": code, "message": text})


async def worker(args: argparse.Namespace) -> None:
    fanout = Fanout(args.channels.split(","), args.prefix, args.framing == "once")
    subscribed = asyncio.Event()
    reader = asyncio.create_task(fanout.read_redis(args.redis_url, subscribed))
    async with serve(
        fanout.handler,
        args.host,
        args.port,
        reuse_port=True,
        backlog=BACKLOG,
        compression=None,
        ping_interval=args.ping_interval or None,
        max_size=64 * 1024,
    ) as server:
        confirmed = asyncio.ensure_future(subscribed.wait())
        await asyncio.wait({reader, confirmed}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        confirmed.cancel()
        if reader.done():
            reader.result()  # it failed: say why
        if not subscribed.is_set():
            raise SystemExit("no Redis subscription confirmed within 10 s")
        Path(f"{args.ready_file}.{args.worker_index}").touch()
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
        server.close()
        if reader.done():
            reader.result()  # the reader died: report why
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def supervise(args: argparse.Namespace) -> int:
    """Start the workers (same process group) and wait; SIGTERM or a dead worker ends all."""
    argv = [sys.executable, "-m", "bench.ws_bare", *sys.argv[1:]]
    workers = [subprocess.Popen([*argv, "--worker-index", str(n)]) for n in range(args.workers)]
    done = False

    def terminate(signum: int, frame: object) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    status = 0
    while not done:
        for process in workers:
            code = process.poll()
            if code is not None:
                print(f"ws_bare: worker {process.pid} exited with {code}", file=sys.stderr)
                status, done = code or 1, True
        time.sleep(0.2)
    for process in workers:
        if process.poll() is None:
            process.terminate()
    for process in workers:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", required=True, help="CoinLink's COINLINK_REDIS_PREFIX")
    parser.add_argument("--channels", required=True, help="comma-separated, e.g. ticker:BTC-USD")
    parser.add_argument(
        "--ping-interval", type=float, default=20.0, help="keepalive pings (0: none)"
    )
    parser.add_argument(
        "--framing",
        choices=("broadcast", "once"),
        default="broadcast",
        help="websockets' broadcast() (a frame per socket) or one frame written to every socket",
    )
    parser.add_argument("--ready-file", required=True, help="workers touch <this>.<n> when ready")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile()
    if args.worker_index is None:
        sys.exit(supervise(args))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a CoinLink dependency
        asyncio.run(worker(args))
    else:
        uvloop.run(worker(args))


if __name__ == "__main__":
    main()
