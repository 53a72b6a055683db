"""The capacity model's inputs: Redis CPU per published message and memory per idle socket.

**Redis CPU per published message against the number of subscribing instances.** A
throwaway ``redis-server`` of its own (nobody else's commands in its counters) and K
subscriber processes (``--subscribers``, default 1, 2, 4, 8, 16), each one
``RedisBus.subscription()`` on every ticker channel, as a worker's hub holds one
subscription for all its sockets' channels; every subscriber counts what it receives. This
process publishes through ``RedisBus.publish_many`` (the sequence-and-history script and
``PUBLISH``, as the ingest leader does), ``--rate`` messages a second spread over the
channels, in batches every 100 ms, for ``--seconds``, and waits until every subscriber has
every message. Redis's own CPU (``INFO cpu``: ``used_cpu_sys`` + ``used_cpu_user``, the
server's getrusage) over that time, less its idle CPU measured first, divided by the
messages, is the cost per published message; fitted against K, the intercept is the cost
of publishing and the slope the cost of each subscriber's delivery. K = 0 is measured too.

**Memory per idle socket.** ``coinlink serve`` with one worker (SQLite, the Redis bus on
the throwaway Redis, no market provider), then N anonymous WebSocket clients
(``bench.ws_clients``, each subscribed to one ticker channel, acked and sent its snapshot;
``--sockets``, default 1,000 and 5,000), the worker's USS (``Private_Clean +
Private_Dirty`` of ``/proc/<pid>/smaps_rollup``: what the process alone holds) before and
after, divided by N. A new server for each N. Authenticated sockets hold a little more (the
claims and the private notifications channel): not measured here.

CPU per delivery and the leader's ingest headroom come from ``bench.ws_fanout`` and
``bench.ingest`` (docs/performance.md); docs/capacity.md puts them together.

    .venv/bin/python -m bench.capacity [--subscribers 0,1,2,4,8,16] [--rate 2000]
        [--seconds 10] [--channels 10] [--sockets 1000,5000] [--only redis|sockets]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.ws_fanout import (
    ROOT,
    group_pids,
    migrate,
    raise_nofile,
    start_clients,
    start_server,
    stop_clients,
    stop_server,
    symbols,
    tick_data,
    wait_ready,
)
from coinlink.bus.redis_bus import RedisBus
from tests.support.services import RedisServer

READY = "ready"
BATCHES_PER_S = 10


# Redis CPU per published message


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def subscriber(url: str, prefix: str, channels: list[str], expected: int) -> None:
    """One instance's subscription: ``ready`` once subscribed, then the count received once
    it has ``expected`` messages or nothing came for 30 s."""
    bus = RedisBus(url, prefix=prefix)
    await bus.start()
    subscription = bus.subscription()
    await subscription.subscribe(*channels)
    print(READY, flush=True)
    received = 0
    messages = aiter(subscription)
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        while received < expected:
            await asyncio.wait_for(anext(messages), 30)
            received += 1
    print(received, flush=True)
    await subscription.close()
    await bus.close()


def start_subscribers(
    count: int, url: str, prefix: str, channels: list[str], expected: int
) -> list[subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "bench.capacity", "--subscriber", url, prefix]
    argv += [",".join(channels), str(expected)]
    processes = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(count)
    ]
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != READY:
            raise RuntimeError(f"subscriber {process.pid} did not subscribe")
    return processes


async def publish(url: str, prefix: str, channels: list[str], rate: int, seconds: float) -> int:
    """``rate`` messages a second over the channels for ``seconds``; how many were sent."""
    bus = RedisBus(url, prefix=prefix)
    await bus.start()
    per_batch = max(1, rate // BATCHES_PER_S)
    sent = 0
    started = time.monotonic()
    try:
        for batch in range(int(seconds * BATCHES_PER_S)):
            items = [
                (channels[(sent + i) % len(channels)], tick_data("BTC-USD", sent + i))
                for i in range(per_batch)
            ]
            await bus.publish_many(items)
            sent += per_batch
            # Paced on the clock: a late batch is not followed by a burst.
            await asyncio.sleep(max(0.0, started + (batch + 1) / BATCHES_PER_S - time.monotonic()))
    finally:
        await bus.close()
    return sent


def redis_case(args: argparse.Namespace, url: str, subscribers: int, idle_s: float) -> float:
    """Redis CPU µs per published message with ``subscribers`` subscribing processes."""
    prefix = f"bench-cap-{secrets.token_hex(4)}:"
    sent_total = args.rate // BATCHES_PER_S * int(args.seconds * BATCHES_PER_S)
    processes = start_subscribers(subscribers, url, prefix, args.channel_names, sent_total)
    client = redis.Redis.from_url(url)
    try:
        began, cpu = time.monotonic(), redis_cpu_s(client)
        sent = asyncio.run(publish(url, prefix, args.channel_names, args.rate, args.seconds))
        counts = []
        for process in processes:
            out, _ = process.communicate(timeout=120)
            counts.append(int(out.split()[-1]))
        used = redis_cpu_s(client) - cpu - idle_s * (time.monotonic() - began)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        client.close()
    if counts != [sent] * subscribers:
        raise RuntimeError(f"subscribers received {counts} of {sent} messages")
    return used / sent * 1e6


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of µs per message against subscribers."""
    slope, intercept = statistics.linear_regression(
        [float(k) for k, _ in points], [v for _, v in points]
    )
    return intercept, slope


def redis_figures(args: argparse.Namespace) -> None:
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        cpu = redis_cpu_s(client)
        time.sleep(args.idle)  # nothing to wait for: Redis's own idle work over a span
        idle_s = (redis_cpu_s(client) - cpu) / args.idle
        client.close()
        print(f"Redis idle: {idle_s * 1e3:.2f} ms CPU per second")
        print(
            f"publishing {args.rate} messages/s over {len(args.channel_names)} channels for "
            f"{args.seconds:g} s; Redis CPU µs per published message (median of {args.rounds})"
        )
        points = []
        for k in args.subscriber_counts:
            runs = [redis_case(args, server.url, k, idle_s) for _ in range(args.rounds)]
            value = statistics.median(runs)
            points.append((k, value))
            shown = ", ".join(f"{r:.1f}" for r in runs)
            print(f"  {k:3d} subscribers: {value:7.1f} µs/message  ({shown})")
        intercept, slope = fit(points)
        print(
            f"fit: {intercept:.1f} µs per message + {slope:.2f} µs per subscriber delivery "
            f"(one core: {1e6 / slope:,.0f} deliveries/s)"
        )
    finally:
        server.stop()


# Memory per idle socket


def uss_bytes(pid: int) -> int:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return fields["Private_Clean"] + fields["Private_Dirty"]


def group_uss(pgid: int) -> dict[int, int]:
    found = {}
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            found[pid] = uss_bytes(pid)
    return found


async def socket_case(args: argparse.Namespace, tmp: str, count: int) -> tuple[float, int]:
    """(KiB of the worker's USS per idle socket, the worker's USS with none)."""
    server = start_server("coinlink", args, tmp, f"sockets-{count}")
    try:
        await wait_ready(server, args, tmp, str(count))
        await asyncio.sleep(2)  # let start-up garbage settle before the baseline
        before = group_uss(server.process.pid)
        clients = await start_clients(args, server.port, count)
        try:
            connected = sum(int(c.connected["ok"]) for c in clients)
            if connected != count:
                raise RuntimeError(f"{connected} of {count} clients connected")
            await asyncio.sleep(2)
            after = group_uss(server.process.pid)
        finally:
            await stop_clients(clients)
    finally:
        stop_server(server)
    # The worker is the process that grew: Sanic's main and manager processes hold no socket.
    worker = max(after, key=lambda pid: after[pid] - before.get(pid, after[pid]))
    return (after[worker] - before[worker]) / count / 1024, before[worker]


def socket_figures(args: argparse.Namespace) -> None:
    server = RedisServer().start()
    args.redis_url = server.url
    try:
        with tempfile.TemporaryDirectory(prefix="coinlink-capacity-") as tmp:
            migrate(args, tmp)
            print("USS of one worker per idle subscribed socket (anonymous, one ticker each)")
            for count in args.socket_counts:
                runs = [asyncio.run(socket_case(args, tmp, count)) for _ in range(args.rounds)]
                per_socket = statistics.median(r[0] for r in runs)
                base = statistics.median(r[1] for r in runs) / 2**20
                shown = ", ".join(f"{r[0]:.1f}" for r in runs)
                print(
                    f"  {count:6d} sockets: {per_socket:5.1f} KiB per socket ({shown}); "
                    f"worker USS with none {base:.0f} MiB"
                )
    finally:
        server.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", default="0,1,2,4,8,16")
    parser.add_argument("--rate", type=int, default=2000, help="published messages per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=10, help="ticker channels")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of Redis idle measured")
    parser.add_argument("--sockets", default="1000,5000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=("redis", "sockets"))
    args = parser.parse_args()
    args.subscriber_counts = [int(n) for n in args.subscribers.split(",")]
    args.socket_counts = [int(n) for n in args.sockets.split(",")]
    if args.rate < BATCHES_PER_S or args.seconds <= 0 or args.channels < 1:
        parser.error(f"--rate must be at least {BATCHES_PER_S}; --seconds, --channels positive")
    # What bench.ws_fanout's server and client helpers read.
    args.symbols = symbols(args.channels)
    args.channel_names = [f"ticker:{s}" for s in args.symbols]
    args.redis_prefix = f"bench-cap-{secrets.token_hex(4)}:"
    args.workers, args.client_procs, args.batch = 1, 2, 250
    args.server_env, args.bare_framing = [], "once"
    return args


def main() -> None:
    if sys.argv[1:2] == ["--subscriber"]:
        url, prefix, channels, expected = sys.argv[2:6]
        asyncio.run(subscriber(url, prefix, channels.split(","), int(expected)))
        return
    args = parse_args()
    raise_nofile()
    with open("/proc/loadavg") as load:
        print(f"load average at the start: {' '.join(load.read().split()[:3])}")
    if args.only != "sockets":
        redis_figures(args)
    if args.only != "redis":
        socket_figures(args)


if __name__ == "__main__":
    main()
