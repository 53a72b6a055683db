"""WebSocket fan-out of CoinLink's ``/ws`` against a bare ``websockets`` ceiling, side by side.

For every case (``--clients``, default 1,000, 5,000 and 10,000 connections) and every round,
each server is started in turn as a subprocess in a session of its own with ``--workers``
worker processes (default 2): CoinLink (``coinlink serve`` on SQLite and Redis, no market
data provider) and the bare server of ``bench/ws_bare.py`` (``websockets`` with
SO_REUSEPORT, one Redis pub/sub connection per worker, ``broadcast()``). Restarting the
server per case gives every case the same cold start and a clean RSS baseline. Then:

1. ``--client-procs`` client processes (``bench/ws_clients.py``, raw asyncio protocols)
   open the connections in batches; connection ``i`` subscribes to ``ticker:<symbol i % C>``
   (``--channels`` symbols) and waits for its ack and snapshot. The server's RSS (the sum
   over its process group) is read before and after: the difference per connection is
   the RSS per idle (subscribed, no traffic yet) connection.
2. The bench publishes ticker-shaped JSON through CoinLink's own ``RedisBus`` so both
   servers receive identical Redis traffic: each channel ``--rate`` times a second, the
   channels spread evenly over the second (one ``publish_many`` per tick); every client
   therefore receives ``--rate`` updates a second. ``--warmup`` seconds first, then the
   measured window of ``--seconds``; the data carries ``pub_ns`` (``time.time_ns()`` just
   before the publish) for the end-to-end latency the clients record.
3. After the window the bench waits (at most ``--drain`` s) until the clients have every
   update published in it, reads the CPU time of every thread of the server's process group
   (the scheduler's nanoseconds, ``/proc/<pid>/task/<tid>/schedstat``), and collects the
   clients' figures: deliveries, loss against the expected count, latency percentiles, seq
   gaps, connections lost.

Clients and bench share the machine (and its two cores) with the server: the latency
includes their scheduling delays, and throughput is bounded by the whole machine. CPU time
per delivery, counted for the server's processes only, is the steadier figure.

    .venv/bin/python -m bench.ws_fanout [--workers 2] [--clients 1000,5000,10000] [--rate 1]
        [--channels 10] [--seconds 10] [--rounds 1] [--redis-url URL] [--server-env K=V]
        [--only coinlink|bare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.http import NEVER_REFUSE, delete_redis_keys, free_port, group_cpu_s
from bench.ws_clients import HIST_SCALE
from coinlink.bus.redis_bus import RedisBus
from config.settings import DEFAULT_SYMBOLS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYMBOLS = DEFAULT_SYMBOLS
SERVERS = ("coinlink", "bare")
CPU_RATIO_TARGET = 0.85
P99_TARGET_MS = 250.0
P99_TARGET_CLIENTS = 10_000
RSS_PER_CONNECTION_TARGET_KIB = 40.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the servers and clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def group_rss_bytes(pgid: int) -> int:
    """Resident set size summed over the process group (shared pages counted per process)."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


def group_sockets(pgid: int) -> list[int]:
    """Open sockets of each process of the group: how the connections split over workers."""
    counts = []
    for pid in sorted(group_pids(pgid)):
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd").iterdir()
            counts.append(sum(1 for fd in fds if os.readlink(fd).startswith("socket:")))
    return counts


def symbols(count: int) -> list[str]:
    extra = [f"SYM{n}-USD" for n in range(max(0, count - len(SYMBOLS)))]
    return [*SYMBOLS, *extra][:count]


def tick_data(symbol: str, n: int) -> bytes:
    """A ticker like CoinLink's (``Ticker.snapshot``) plus ``pub_ns``: about 330 bytes."""
    price = 50_000 + (n * 37 % 2_000) / 100
    return orjson.dumps(
        {
            "symbol": symbol,
            "price": f"{price:.2f}",
            "bid": f"{price - 0.05:.2f}",
            "ask": f"{price + 0.05:.2f}",
            "open_24h": "49876.54",
            "high_24h": "51234.56",
            "low_24h": "48765.43",
            "volume_24h": "12345.678901",
            "quote_volume_24h": "617283945.12",
            "change_24h": f"{price - 49_876.54:.2f}",
            "change_pct_24h": "0.49",
            "ts": time.time_ns() // 1_000_000,
            "pub_ns": time.time_ns(),
        }
    )


# Servers


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def coinlink_env(args: argparse.Namespace, tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINLINK_", "PROMETHEUS_"))}
    env.update(
        COINLINK_ENV="production" if args.production else "development",
        COINLINK_REDIS_URL=args.redis_url,
        COINLINK_REDIS_PREFIX=args.redis_prefix,
        COINLINK_DATABASE_URL=args.database_url or f"sqlite://{tmp}/bench.sqlite3",
        COINLINK_JWT_SECRET=args.jwt_secret,
        COINLINK_CORS_ORIGINS="https://bench.example",
        COINLINK_PROVIDER="none",
        COINLINK_SYMBOLS=",".join(args.symbols),
        COINLINK_LOG_LEVEL="warning",
        COINLINK_ACCESS_LOG="false",
        COINLINK_WS_MAX_CONNECTIONS_PER_IP="100000",
        COINLINK_WS_HEARTBEAT_S="30",
        # Keepalive pings (CoinLink's default every 20 s) would land in or out of the
        # window depending on how long connecting took: both servers ping every 600 s.
        COINLINK_WS_PING_INTERVAL_S="600",
        # Every upgrade is an anonymous request to the rate limiter (300/60 per address
        # would turn most of the clients away), and a connection from 127.0.0.1.
        **NEVER_REFUSE,
    )
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def migrate(args: argparse.Namespace, tmp: str) -> None:
    done = subprocess.run(
        [str(BIN / "coinlink"), "migrate"],
        cwd=ROOT,
        env=coinlink_env(args, tmp),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"coinlink migrate failed ({done.returncode}):\n{done.stderr[-3000:]}")


def start_server(name: str, args: argparse.Namespace, tmp: str, tag: str) -> Server:
    port = free_port()
    log = Path(tmp) / f"{name}-{tag}.log"
    if name == "coinlink":
        argv = [str(BIN / "coinlink"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(args.workers)]
        env = coinlink_env(args, tmp)
    else:
        argv = [sys.executable, "-m", "bench.ws_bare", "--port", str(port)]
        argv += ["--workers", str(args.workers), "--redis-url", args.redis_url]
        argv += ["--prefix", args.redis_prefix, "--channels", ",".join(args.channel_names)]
        argv += ["--ready-file", f"{tmp}/ready-{tag}", "--framing", args.bare_framing]
        # The same keepalive as CoinLink (--server-env may change its interval).
        ping = coinlink_env(args, tmp).get("COINLINK_WS_PING_INTERVAL_S", "20")
        argv += ["--ping-interval", ping]
        env = dict(os.environ)
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    return Server(name, port, process, log)


async def wait_ready(server: Server, args: argparse.Namespace, tmp: str, tag: str) -> None:
    """Until every worker accepts: the bare workers' ready files, CoinLink's /health."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.process.returncode} while starting; "
                    f"log tail:\n{server.tail()}"
                )
            if server.name == "bare":
                ready = sum(Path(f"{tmp}/ready-{tag}.{n}").exists() for n in range(args.workers))
                if ready == args.workers:
                    return
            else:
                with contextlib.suppress(httpx.HTTPError):
                    health = await http.get(f"http://127.0.0.1:{server.port}/health")
                    workers = len(group_pids(server.process.pid)) - 1
                    if health.status_code == 200 and workers >= args.workers:
                        await asyncio.sleep(1)  # the other workers' startup
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after 60 s; log tail:\n{server.tail()}")


def stop_server(server: Server) -> None:
    """SIGTERM the server's process group; SIGKILL whatever is left after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        print(f"  {server.name} ignored SIGTERM for 15 s: killing its process group")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)  # workers can outlive their main
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(5)


# Clients


@dataclass
class ClientProcess:
    process: asyncio.subprocess.Process
    connected: dict[str, Any] = field(default_factory=dict)

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(command) + b"\n")
        await self.process.stdin.drain()

    async def receive(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process {self.process.pid} exited without answering")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def ask(self, command: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        await self.send(command)
        return await self.receive(timeout)


async def start_clients(args: argparse.Namespace, port: int, count: int) -> list[ClientProcess]:
    procs = max(1, min(args.client_procs, count))
    clients = []
    for k in range(procs):
        start, end = count * k // procs, count * (k + 1) // procs
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ws_clients",
            "--port",
            str(port),
            "--start",
            str(start),
            "--count",
            str(end - start),
            "--channels",
            ",".join(args.channel_names),
            "--batch",
            str(args.batch),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        clients.append(ClientProcess(process))
    timeout = 60 + count / 50
    for client in clients:
        client.connected = await client.receive(timeout)
    return clients


async def stop_clients(clients: list[ClientProcess]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.send({"cmd": "close"})
            assert client.process.stdin is not None
            client.process.stdin.close()
    for client in clients:
        try:
            await asyncio.wait_for(client.process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                client.process.kill()
            await client.process.wait()


# Publishing


async def publish(
    bus: RedisBus, args: argparse.Namespace, seconds: float, counter: list[int]
) -> dict[str, int]:
    """Each channel ``args.rate`` times a second for ``seconds``, spread evenly; last seqs.

    ``counter[0]`` numbers the ticks across calls (prices move). A tick late by more than a
    step is caught up at once (published in the same ``publish_many``), so the count of
    publishes per channel is exact.
    """
    channels, names = args.channel_names, args.symbols
    per_channel = max(1, round(args.rate * seconds))
    total = per_channel * len(channels)
    step = 1 / (args.rate * len(channels))
    loop = asyncio.get_running_loop()
    began = loop.time()
    done = 0
    last: dict[str, int] = {}
    while done < total:
        due = min(total, int((loop.time() - began) / step) + 1)
        if due > done:
            items = []
            for i in range(done, due):
                n = counter[0] + i
                items.append((channels[i % len(channels)], tick_data(names[i % len(names)], n)))
            for (channel, _), seq in zip(items, await bus.publish_many(items), strict=True):
                last[channel] = seq
            done = due
        await asyncio.sleep(max(0.0, began + done * step - loop.time()))
    counter[0] += total
    return last


# One case


def percentile(hist: Counter[int], q: float) -> float:
    """The ``q`` quantile of a latency histogram, in ms (bucket midpoints)."""
    total = sum(hist.values())
    if not total:
        return math.nan
    rank, seen = q * total, 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return math.exp((bucket + 0.5) / HIST_SCALE) / 1000
    return math.nan


async def run_case(
    name: str,
    count: int,
    args: argparse.Namespace,
    tmp: str,
    bus: RedisBus,
    counter: list[int],
) -> dict[str, float]:
    tag = f"{name}-{count}-{secrets.token_hex(2)}"
    server = start_server(name, args, tmp, tag)
    clients: list[ClientProcess] = []
    try:
        await wait_ready(server, args, tmp, tag)
        pgid = server.process.pid
        await asyncio.sleep(0.5)
        # The server's own idle CPU (process managers, timers), to tell fixed costs from
        # the cost of each delivery.
        idle_before = group_cpu_s(pgid)
        await asyncio.sleep(args.idle)
        idle_rate = (group_cpu_s(pgid) - idle_before) / args.idle
        rss_before = group_rss_bytes(pgid)
        clients = await start_clients(args, server.port, count)
        connected = sum(c.connected["ok"] for c in clients)
        errors: Counter[str] = Counter()
        for client in clients:
            errors.update(client.connected["errors"])
        connect_s = max(c.connected["seconds"] for c in clients)
        if errors:
            listed = "; ".join(f"{n} x {reason}" for reason, n in errors.most_common(5))
            print(f"  {name}: {sum(errors.values())} of {count} failed to connect: {listed}")
        if not connected:
            raise RuntimeError(f"{name}: no client connected; server log tail:\n{server.tail()}")
        await asyncio.sleep(1)
        rss_idle = group_rss_bytes(pgid)
        sockets = group_sockets(pgid)
        per_channel: Counter[str] = Counter()
        for client in clients:
            per_channel.update(client.connected["per_channel"])

        start_seqs = await publish(bus, args, args.warmup, counter)
        for client in clients:
            await client.ask({"cmd": "start", "from": start_seqs})
        cpu_before = group_cpu_s(pgid)
        began = time.monotonic()
        end_seqs = await publish(bus, args, args.seconds, counter)
        window = time.monotonic() - began
        expected = sum(n * (end_seqs[ch] - start_seqs.get(ch, 0)) for ch, n in per_channel.items())
        deadline = time.monotonic() + args.drain
        while True:
            delivered = 0
            for client in clients:
                delivered += (await client.ask({"cmd": "count"}))["delivered"]
            if delivered >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        cpu_s = group_cpu_s(pgid) - cpu_before
        busy_s = time.monotonic() - began
        rss_end = group_rss_bytes(pgid)
        reports = [await client.ask({"cmd": "report"}) for client in clients]
        if server.process.poll() is not None:
            raise RuntimeError(f"{name} died during the case; log tail:\n{server.tail()}")
    finally:
        await stop_clients(clients)
        stop_server(server)

    hist: Counter[int] = Counter()
    for report in reports:
        hist.update({int(b): n for b, n in report["latency"].items()})
    delivered = sum(r["delivered"] for r in reports)
    lost: Counter[str] = Counter()
    for report in reports:
        lost.update(report["lost"])
    if lost:
        listed = "; ".join(f"{n} x {reason}" for reason, n in lost.most_common(5))
        print(f"  {name}: connections ended by the server during the case: {listed}")
    split = "/".join(str(n) for n in sockets if n > 1)
    print(f"  {name}: open sockets per server process when connected: {split}")
    return {
        "clients": count,
        "connected": connected,
        "connect_s": connect_s,
        "expected": expected,
        "delivered": delivered,
        "loss_pct": 100 * (expected - delivered) / expected if expected else math.nan,
        "rate": delivered / window,
        "p50_ms": percentile(hist, 0.50),
        "p95_ms": percentile(hist, 0.95),
        "p99_ms": percentile(hist, 0.99),
        "max_ms": percentile(hist, 1.0),
        "cpu_us": cpu_s / delivered * 1e6 if delivered else math.nan,
        "idle_ms_s": idle_rate * 1000,
        "marginal_us": max(0.0, cpu_s - idle_rate * busy_s) / delivered * 1e6
        if delivered
        else math.nan,
        "cpu_s": cpu_s,
        "cores": cpu_s / busy_s,
        "rss_mib": rss_idle / 2**20,
        "rss_end_mib": rss_end / 2**20,
        "kib_per_conn": (rss_idle - rss_before) / 1024 / connected,
        "gaps": sum(r["gaps"] for r in reports),
        "missing": sum(r["missing"] for r in reports),
        "silent": sum(r["silent_clients"] for r in reports),
        "lost": sum(lost.values()),
    }


def describe(f: dict[str, float]) -> str:
    return (
        f"{f['connected']:6.0f} conn in {f['connect_s']:4.1f} s  {f['rate']:7.0f} msg/s  "
        f"loss {f['loss_pct']:5.2f}%  "
        f"p50 {f['p50_ms']:7.1f}  p95 {f['p95_ms']:7.1f}  p99 {f['p99_ms']:7.1f} ms  "
        f"{f['cpu_us']:6.1f} us CPU/msg ({f['cpu_s']:.2f} s, {f['cores']:.2f} cores; "
        f"idle {f['idle_ms_s']:.1f} ms/s, above idle {f['marginal_us']:.1f} us/msg)  "
        f"RSS {f['rss_mib']:6.1f} MiB, {f['kib_per_conn']:5.1f} KiB/conn  "
        f"gaps {f['gaps']:.0f}  lost {f['lost']:.0f}"
    )


# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of the command line, or of ``argv`` when the bench is driven as a library."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--clients", default="1000,5000,10000", help="comma-separated connection counts"
    )
    parser.add_argument("--rate", type=float, default=1.0, help="updates per second per client")
    parser.add_argument("--channels", type=int, default=10, help="ticker channels (symbols)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="publishing before the window")
    parser.add_argument("--drain", type=float, default=5.0, help="max wait for late deliveries")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=float, default=3.0, help="idle CPU measured before")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    parser.add_argument("--batch", type=int, default=250, help="connections opened at once")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", help="CoinLink's database (default: SQLite in a tmp dir)")
    parser.add_argument(
        "--production",
        action="store_true",
        help="COINLINK_ENV=production (needs --database-url postgres://...)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for CoinLink (repeatable)",
    )
    parser.add_argument("--only", choices=SERVERS, help="run one server only")
    parser.add_argument(
        "--bare-framing",
        choices=("broadcast", "once"),
        default="broadcast",
        help="bare server: websockets' broadcast() (a frame per socket, the default) or one "
        "frame written to every socket (as CoinLink's hub)",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    if args.production and not str(args.database_url).startswith("postgres"):
        parser.error("--production needs --database-url postgres://...")
    args.jwt_secret = secrets.token_hex(32)
    try:
        args.client_counts = [int(n) for n in args.clients.split(",")]
    except ValueError:
        parser.error("--clients takes comma-separated integers")
    if args.rate <= 0 or args.seconds <= 0 or args.channels < 1 or args.workers < 1:
        parser.error("--rate, --seconds, --channels and --workers must be positive")
    args.symbols = symbols(args.channels)
    args.channel_names = [f"ticker:{s}" for s in args.symbols]
    args.redis_prefix = f"bench-ws-{secrets.token_hex(4)}:"
    args.servers = [args.only] if args.only else list(SERVERS)
    return args


async def run(
    args: argparse.Namespace, tmp: str, on_case: Callable[[str, int], None] | None = None
) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Every case of every round; ``on_case(server, clients)`` after each (a progress bar)."""
    bus = RedisBus(args.redis_url, prefix=args.redis_prefix)
    await bus.start()
    counter = [0]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for round_no in range(1, args.rounds + 1):
            # Alternate the order so that drift (thermal, neighbours) hits both alike.
            order = args.servers if round_no % 2 else args.servers[::-1]
            for count in args.client_counts:
                for name in order:
                    figures = await run_case(name, count, args, tmp, bus, counter)
                    results.setdefault((name, count), []).append(figures)
                    print(f"round {round_no} {name:8s} {count:6d}: {describe(figures)}")
                    if on_case:
                        on_case(name, count)
    finally:
        await bus.close()
    return results


def report(
    args: argparse.Namespace, results: dict[tuple[str, int], list[dict[str, float]]]
) -> None:
    label = "medians of rounds" if args.rounds > 1 else "one round"
    print(
        f"\nWebSocket fan-out, {args.workers} worker(s), {args.rate:g} update/s per client, "
        f"{args.channels} channels, {args.seconds:g} s windows, {label}"
    )
    header = (
        "| server | clients | connected | msg/s | expected | delivered | loss | p50 ms | p95 ms "
        "| p99 ms | CPU µs/msg | above idle µs/msg | idle ms/s | cores | RSS MiB | KiB/conn |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for key, rows in results.items():
        medians[key] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for count in args.client_counts:
        for name in args.servers:
            row = medians.get((name, count))
            if row is None:
                continue
            m = row
            print(
                f"| {name} | {count:,} | {m['connected']:,.0f} | {m['rate']:,.0f} "
                f"| {m['expected']:,.0f} | {m['delivered']:,.0f} | {m['loss_pct']:.2f}% "
                f"| {m['p50_ms']:.1f} | {m['p95_ms']:.1f} | {m['p99_ms']:.1f} "
                f"| {m['cpu_us']:.1f} | {m['marginal_us']:.1f} | {m['idle_ms_s']:.1f} "
                f"| {m['cores']:.2f} | {m['rss_mib']:.0f} "
                f"| {m['kib_per_conn']:.1f} |"
            )
    print()
    for count in args.client_counts:
        bare, coin = results.get(("bare", count)), results.get(("coinlink", count))
        if bare and coin:
            pairs = list(zip(bare, coin, strict=True))
            cpu = [b["cpu_us"] / c["cpu_us"] for b, c in pairs]
            # Above idle can be 0 in a short window (the idle rate measured before was higher).
            above = [
                b["marginal_us"] / c["marginal_us"] if c["marginal_us"] else math.nan
                for b, c in pairs
            ]
            rate = [c["rate"] / b["rate"] for b, c in pairs]
            ok = statistics.median(cpu) >= CPU_RATIO_TARGET
            print(
                f"{count:,} clients: CPU per delivery bare/coinlink {statistics.median(cpu):.2f}"
                f" (rounds {', '.join(f'{r:.2f}' for r in cpu)}; target >= {CPU_RATIO_TARGET}: "
                f"{'met' if ok else 'MISSED'}); above idle {statistics.median(above):.2f}; "
                "delivered/s coinlink/bare "
                f"{statistics.median(rate):.2f}"
            )
    for name in args.servers:
        target_row = medians.get((name, P99_TARGET_CLIENTS))
        if target_row is not None:
            m = target_row
            if args.rate == 1 and args.workers == 2:
                verdict = "met" if m["p99_ms"] < P99_TARGET_MS else "MISSED"
            else:
                verdict = "target defined at 1 update/s on 2 workers"
            print(
                f"{name}: p99 at {P99_TARGET_CLIENTS:,} clients x {args.rate:g}/s on "
                f"{args.workers} workers {m['p99_ms']:.1f} ms (target < {P99_TARGET_MS:.0f} ms: "
                f"{verdict})"
            )
        per_conn = [medians[(name, n)]["kib_per_conn"] for n in args.client_counts if n >= 1000]
        per_conn = [v for v in per_conn if not math.isnan(v)]
        if per_conn:
            worst = max(per_conn)
            ok = worst <= RSS_PER_CONNECTION_TARGET_KIB
            print(
                f"{name}: RSS per idle connection up to {worst:.1f} KiB (target <= "
                f"{RSS_PER_CONNECTION_TARGET_KIB:.0f} KiB: {'met' if ok else 'MISSED'})"
            )


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too unwinds through the finally blocks: servers stopped


def main() -> None:
    signal.signal(signal.SIGTERM, interrupt)
    args = parse_args()
    limit = raise_nofile()
    needed = max(args.client_counts) // max(1, args.client_procs) + 1024
    if limit < needed:
        print(f"warning: RLIMIT_NOFILE hard limit {limit} < {needed} needed per client process")
    print(
        f"servers: {', '.join(args.servers)}; {args.workers} worker(s) each; clients "
        f"{args.clients} from {args.client_procs} process(es); {args.channels} channels at "
        f"{args.rate:g}/s; bare framing {args.bare_framing}; Redis {args.redis_url} "
        f"prefix {args.redis_prefix!r}; "
        f"tick data {len(tick_data(args.symbols[0], 0))} bytes"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="coinlink-wsbench-") as tmp:
            if "coinlink" in args.servers:
                migrate(args, tmp)
            results = asyncio.run(run(args, tmp))
    except KeyboardInterrupt:
        print("interrupted: servers and clients stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        delete_redis_keys(args.redis_url, args.redis_prefix)
    report(args, results)


if __name__ == "__main__":
    main()
