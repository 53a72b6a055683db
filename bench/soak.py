"""A long soak of a production-mode CoinLink: memory over time under a steady, mixed load.

CoinLink runs as in production (``COINLINK_ENV=production``, ``--workers`` workers, a fresh
PostgreSQL database of its own, Redis, the simulator provider on ``--symbols`` tickers, bcrypt
at the production cost), started through ``bench.soak_app`` (``coinlink serve`` plus an
optional allocation trace). Limits are raised so that the rate limiter decides on every
request but never refuses. Then, for ``--minutes``:

* ``--sockets`` WebSocket connections (``bench.ws_clients``) spread over the tickers'
  channels, every update checked for a contiguous ``seq`` (a gap is a lost update);
* about ``--rps`` REST requests a second from ``--users`` signed-in users, open loop: reads
  of tickers, candles, ``/users/me``, alerts and notifications; alert creates (thresholds a
  few basis points from the live price, repeating with a short cooldown, so the simulator's
  moves fire them), patches and deletes; logins (a new session each) and refresh-token
  rotations (every user at least every 10 minutes, before the access token expires);
  marking notifications read.

Every minute it prints the RSS and USS (private pages, from ``/proc/<pid>/smaps_rollup``) of
CoinLink's main process and of each worker, the totals, requests and failures (a transport
error or an unexpected status), WebSocket updates, gaps and lost connections, and alert
firings (notification rows), the active alerts and which worker leads ingest. At the end:
the slope of the total USS and RSS after ``--warmup-minutes`` (least squares, KiB per minute)
and a verdict: flat when the USS slope is at most ``FLAT_KIB_PER_MIN``.

``--trace DIR`` makes every worker write tracemalloc diffs and object-type counts to
``DIR/<pid>.txt`` each minute (see ``bench.soak_app``): how the cause of a growth is found.
Tracing costs CPU and memory of its own: the figures of a traced run are not the verdict.

    .venv/bin/python -m bench.soak [--minutes 60] [--warmup-minutes 15] [--workers 2] [--rps 200]
        [--sockets 300] [--symbols 5] [--users 20]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--database-options QUERY]
        [--redis-url redis://127.0.0.1:6379/0] [--trace DIR] [--server-env K=V]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bench.http import delete_redis_keys, free_port
from bench.ws_fanout import (
    ClientProcess,
    Server,
    group_pids,
    raise_nofile,
    start_clients,
    stop_clients,
    stop_server,
    symbols,
)

ROOT = Path(__file__).resolve().parents[1]
FLAT_KIB_PER_MIN = 16.0
WINDOWS_FROM = (25, 35, 45)
"""Later starts of the memory slope, printed beside the verdict's."""
PASSWORD = "soak password 1234"  # noqa: S105 - the soak users' own, thrown away
ORIGIN = "https://soak.example"
REFRESH_AFTER_S = 600  # the access token lives 900 s
ALERTS_PER_USER = (5, 30)  # deletes below the upper bound only above the lower one
# Weights of the request mix (a fraction of --rps each).
MIX = {
    "tickers": 30,
    "ticker": 30,
    "candles": 10,
    "me": 25,
    "alerts": 15,
    "notifications": 15,
    "read_all": 2,
    "alert_create": 8,
    "alert_patch": 6,
    "alert_delete": 7,
    "refresh": 0.5,
    "login": 0.15,
}
EXPECTED = {"alert_create": 201, "alert_delete": 204}


# Memory


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, USS) of one process in KiB: USS is its private pages, what it alone holds."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0])
    return fields.get("Rss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def process_label(pid: int, main_pid: int) -> str:
    """``main``, a Sanic process's own name (``Sanic-Server-0-0``: a worker) or the command."""
    if pid == main_pid:
        return "main"
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    for item in environ:
        if item.startswith(b"SANIC_WORKER_NAME="):
            return item.partition(b"=")[2].decode()
    if any(b"resource_tracker" in arg for arg in cmdline):
        return "resource-tracker"
    if any(b"spawn_main" in arg for arg in cmdline):
        return "sync-manager"  # Sanic's multiprocessing Manager (the workers' shared state)
    return f"other-{pid}"


def group_memory(pgid: int) -> dict[str, tuple[int, int]]:
    """(RSS, USS) in KiB of each process of CoinLink's process group, main first."""
    labelled = {process_label(pid, pgid): memory_kib(pid) for pid in group_pids(pgid)}
    return dict(sorted(labelled.items(), key=lambda item: (item[0] != "main", item[0])))


def slope_kib_per_min(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, KiB) samples."""
    if len(samples) < 3:
        return float("nan")
    minutes, values = zip(*samples, strict=True)
    return statistics.linear_regression(minutes, values).slope


# Server


def server_env(args: argparse.Namespace, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINLINK_", "PROMETHEUS_"))}
    raised = "100000000/60"
    env.update(
        COINLINK_ENV="production",
        COINLINK_DATABASE_URL=database_url,
        COINLINK_REDIS_URL=args.redis_url,
        COINLINK_REDIS_PREFIX=args.redis_prefix,
        COINLINK_JWT_SECRET=secrets.token_hex(32),
        COINLINK_CORS_ORIGINS=ORIGIN,
        COINLINK_SYMBOLS=",".join(args.symbol_names),
        COINLINK_PROVIDER="simulator",
        COINLINK_LOG_LEVEL="warning",
        COINLINK_WS_MAX_CONNECTIONS_PER_IP=str(args.sockets + 100),
        # The limiter decides on every request but never refuses: one address, many users.
        COINLINK_RATE_LIMIT_ANONYMOUS=raised,
        COINLINK_RATE_LIMIT_USER=raised,
        COINLINK_RATE_LIMIT_LOGIN_ACCOUNT=raised,
        COINLINK_RATE_LIMIT_LOGIN_IP=raised,
        COINLINK_RATE_LIMIT_REGISTER=raised.replace("/60", "/3600"),
        COINLINK_ALERTS_MAX_PER_USER=str(ALERTS_PER_USER[1] + 20),
    )
    if args.trace:
        env["SOAK_TRACE_DIR"] = str(args.trace)
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def start_server(args: argparse.Namespace, env: dict[str, str], tmp: str) -> Server:
    migrated = subprocess.run(
        [sys.executable, "-m", "coinlink", "migrate"], cwd=ROOT, env=env, capture_output=True
    )
    if migrated.returncode:
        raise SystemExit(f"coinlink migrate failed:\n{migrated.stderr.decode()[-3000:]}")
    port = free_port()
    log = Path(tmp) / "server.log"
    argv = [sys.executable, "-m", "bench.soak_app", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(args.workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    return Server("CoinLink", port, process, log)


async def wait_ready(server: Server, workers: int) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"CoinLink exited while starting:\n{server.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                ready = await http.get(f"http://127.0.0.1:{server.port}/readyz")
                if ready.status_code == 200 and len(group_pids(server.process.pid)) > workers:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"CoinLink not ready after 60 s:\n{server.tail()}")


async def create_database(server_url: str) -> str:
    name = f"coinlink_soak_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(server_url.replace("postgres://", "postgresql://", 1))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"{server_url.rsplit('/', 1)[0]}/{name}"


async def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(server_url.replace("postgres://", "postgresql://", 1))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


# Load


@dataclass
class User:
    email: str
    access: str = ""
    refresh: str = ""
    signed_in: float = 0.0
    alerts: list[str] = field(default_factory=list)
    busy: bool = False  # a refresh in flight: a second one would be a reuse


@dataclass
class Load:
    http: httpx.AsyncClient
    users: list[User]
    symbols: list[str]
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    firings: bool = True  # False: thresholds no price reaches (the engine holds, never fires)
    prices: dict[str, Decimal] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    behind: int = 0  # requests not sent because --concurrency were already in flight

    def signed_in(self, user: User, tokens: dict[str, str]) -> None:
        user.access, user.refresh = tokens["access_token"], tokens["refresh_token"]
        user.signed_in = time.monotonic()

    async def call(
        self, kind: str, method: str, path: str, user: User | None = None, **kwargs: Any
    ) -> httpx.Response | None:
        headers = {"authorization": f"Bearer {user.access}"} if user else {}
        self.requests[kind] += 1
        try:
            response = await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            self.failures[f"{kind}: {type(exc).__name__}"] += 1
            return None
        if response.status_code != EXPECTED.get(kind, 200):
            self.failures[f"{kind}: {response.status_code}"] += 1
            return None
        return response

    async def sign_up(self, user: User) -> None:
        body = {"email": user.email, "password": PASSWORD}
        response = await self.http.post("/api/v2/auth/register", json=body)
        response.raise_for_status()
        self.signed_in(user, response.json()["tokens"])

    async def one(self, kind: str) -> None:
        user = self.rng.choice(self.users)
        symbol = self.rng.choice(self.symbols)
        if time.monotonic() - user.signed_in > REFRESH_AFTER_S and not user.busy:
            kind = "refresh"
        if kind == "alert_delete" and len(user.alerts) <= ALERTS_PER_USER[0]:
            kind = "alert_create"
        if kind == "alert_create" and len(user.alerts) >= ALERTS_PER_USER[1]:
            kind = "alert_delete"
        if kind in ("alert_patch", "alert_delete") and not user.alerts:
            kind = "alert_create"
        if kind == "refresh" and user.busy:
            kind = "me"
        if kind == "tickers":
            response = await self.call(kind, "GET", "/api/v2/market/tickers")
            if response is not None:
                for item in response.json()["items"]:
                    if item.get("price") is not None:
                        self.prices[item["symbol"]] = Decimal(item["price"])
        elif kind == "ticker":
            await self.call(kind, "GET", f"/api/v2/market/tickers/{symbol}")
        elif kind == "candles":
            await self.call(kind, "GET", f"/api/v2/market/candles/{symbol}?interval=1m&limit=100")
        elif kind == "me":
            await self.call(kind, "GET", "/api/v2/users/me", user)
        elif kind == "alerts":
            await self.call(kind, "GET", "/api/v2/alerts?limit=20", user)
        elif kind == "notifications":
            await self.call(kind, "GET", "/api/v2/notifications?limit=20", user)
        elif kind == "read_all":
            await self.call(kind, "POST", "/api/v2/notifications/read-all", user)
        elif kind == "alert_create":
            await self.create_alert(user, symbol)
        elif kind == "alert_patch":
            # Out of the list while in flight: a concurrent delete must not pick it (a 404).
            alert = user.alerts.pop(self.rng.randrange(len(user.alerts)))
            body = {
                "note": f"patched {secrets.token_hex(3)}",
                "cooldown_s": self.rng.randint(5, 60),
            }
            try:
                await self.call(kind, "PATCH", f"/api/v2/alerts/{alert}", user, json=body)
            finally:
                user.alerts.append(alert)
        elif kind == "alert_delete":
            alert = user.alerts.pop(self.rng.randrange(len(user.alerts)))
            await self.call(kind, "DELETE", f"/api/v2/alerts/{alert}", user)
        elif kind == "refresh":
            user.busy = True
            try:
                body = {"refresh_token": user.refresh}
                response = await self.call(kind, "POST", "/api/v2/auth/refresh", json=body)
                if response is not None:
                    self.signed_in(user, response.json()["tokens"])
            finally:
                user.busy = False
        elif kind == "login":
            body = {"email": user.email, "password": PASSWORD}
            response = await self.call(kind, "POST", "/api/v2/auth/login", json=body)
            if response is not None and not user.busy:
                self.signed_in(user, response.json()["tokens"])

    async def create_alert(self, user: User, symbol: str) -> None:
        price = self.prices.get(symbol)
        if price is None:  # no tickers read yet
            body: dict[str, Any] = {
                "symbol": symbol,
                "condition": "pct_change",
                "threshold": "0.05" if self.firings else "90",
                "window_s": 60,
            }
        else:
            # A few basis points away: the simulator's moves cross it within seconds or
            # minutes. Without firings, 90 % away: never within an hour.
            above = self.rng.random() < 0.5
            away = Decimal(self.rng.randint(1, 20)) / 10_000 if self.firings else Decimal("0.9")
            threshold = price * (1 + away if above else 1 - away)
            body = {
                "symbol": symbol,
                "condition": "above" if above else "below",
                "threshold": str(threshold.quantize(Decimal("0.0001"))),
            }
        body |= {"repeat": True, "cooldown_s": self.rng.randint(5, 60)}
        response = await self.call("alert_create", "POST", "/api/v2/alerts", user, json=body)
        if response is not None:
            user.alerts.append(response.json()["id"])

    async def run(self, rps: float, concurrency: int, stop: asyncio.Event) -> None:
        """Open loop: ``rps`` requests a second on a schedule, whatever the latency."""
        kinds, weights = list(MIX), list(MIX.values())
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            due = int((loop.time() - began) * rps)
            for kind in self.rng.choices(kinds, weights, k=max(0, due - sent)):
                if len(tasks) >= concurrency:
                    self.behind += 1
                    continue
                task = asyncio.create_task(self.one(kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent = max(sent, due)
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks, return_exceptions=True)


# The soak


@dataclass
class Minute:
    minute: float
    memory: dict[str, tuple[int, int]]  # (RSS, USS) KiB by process label
    requests: int
    failures: int
    updates: int
    gaps: int
    lost: int
    firings: int
    alerts: int  # active
    leader: str = "?"  # the label of the process holding the ingest lease
    load: float = 0.0  # the machine's 1-minute load average: a starved server's peaks grow


async def ws_figures(clients: list[ClientProcess]) -> tuple[int, int, int]:
    delivered = gaps = lost = 0
    for client in clients:
        report = await client.ask({"cmd": "report"})
        delivered += report["delivered"]
        gaps += report["gaps"] + report["reordered"]
        lost += sum(report["lost"].values())
    return delivered, gaps, lost


async def alert_rows(database_url: str) -> tuple[int, int]:
    """(alert firings so far: notification rows, active alerts: what the leader's engine
    holds). The alerts fill towards users x the bench's upper bound; at a low request rate
    that takes long, and the leader's memory grows with them meanwhile (warm-up)."""
    connection = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
    try:
        fired = await connection.fetchval("SELECT count(*) FROM notifications")
        active = await connection.fetchval("SELECT count(*) FROM alerts WHERE status = 'active'")
        return int(fired), int(active)
    finally:
        await connection.close()


async def ingest_leader(client: redis.asyncio.Redis, prefix: str, main_pid: int) -> str:
    """The process that runs ingest (and evaluates alerts), from its heartbeat: the holder is
    ``host:pid:nonce``. Under load the lease can change hands, and with it the growth."""
    with contextlib.suppress(redis.RedisError, ValueError, KeyError, IndexError):
        beat = await client.get(f"{prefix}kv:ingest:heartbeat")
        if beat is not None:
            return process_label(int(orjson.loads(beat)["holder"].split(":")[1]), main_pid)
    return "?"


def describe(row: Minute, previous: Minute | None) -> str:
    total_rss = sum(rss for rss, _ in row.memory.values())
    total_uss = sum(uss for _, uss in row.memory.values())
    parts = []
    for label, (rss, uss) in row.memory.items():
        parts.append(f"{label} {rss / 1024:.2f}/{uss / 1024:.2f}")
    before = previous or Minute(0, {}, 0, 0, 0, 0, 0, 0, 0)
    return (
        f"{row.minute:5.1f} min  RSS/USS MiB: {'  '.join(parts)}  total "
        f"{total_rss / 1024:.2f}/{total_uss / 1024:.2f}  |  "
        f"requests +{row.requests - before.requests:,}"
        f" failures {row.failures}  |  ws updates +{row.updates - before.updates:,} gaps {row.gaps}"
        f" lost {row.lost}  |  firings +{row.firings - before.firings:,} alerts {row.alerts}"
        f"  |  leader {row.leader}  |  load {row.load:.2f}"
    )


async def soak(
    args: argparse.Namespace, server: Server, database_url: str, console: Console
) -> list[Minute]:
    await wait_ready(server, args.workers)
    base = f"http://127.0.0.1:{server.port}"
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    clients: list[ClientProcess] = []
    rows: list[Minute] = []
    stop = asyncio.Event()
    beats = redis.asyncio.Redis.from_url(args.redis_url)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http, beats:
        users = [User(f"soak-{n}-{secrets.token_hex(3)}@example.com") for n in range(args.users)]
        load = Load(http, users, args.symbol_names, firings=not args.no_firings)
        for user in users:  # one at a time: bcrypt at the production cost
            await load.sign_up(user)
        channels = ",".join(f"ticker:{s}" for s in args.symbol_names)
        args.channel_names = channels.split(",")
        args.client_procs, args.batch = 1, 100
        clients = await start_clients(args, server.port, args.sockets)
        connected = sum(c.connected["ok"] for c in clients)
        if connected < args.sockets:
            raise RuntimeError(
                f"{connected} of {args.sockets} sockets connected: {clients[0].connected}"
            )
        for client in clients:
            await client.ask({"cmd": "start", "from": {}})
        console.print(
            f"CoinLink on :{server.port}, {args.users} users, {connected} sockets on "
            f"{len(args.symbol_names)} tickers; load {args.rps:g} req/s"
        )
        runner = asyncio.create_task(load.run(args.rps, args.concurrency, stop))
        began = time.monotonic()
        pgid = server.process.pid
        columns = (
            TextColumn("soak"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} min"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            bar = progress.add_task("soak", total=args.minutes)
            reported: Counter[str] = Counter()
            try:
                for minute in range(1, args.minutes + 1):
                    await asyncio.sleep(max(0.0, began + minute * 60 - time.monotonic()))
                    if server.process.poll() is not None or runner.done():
                        raise RuntimeError(f"CoinLink or the load stopped:\n{server.tail()}")
                    updates, gaps, lost = await ws_figures(clients)
                    fired, active = await alert_rows(database_url)
                    row = Minute(
                        (time.monotonic() - began) / 60,
                        group_memory(pgid),
                        sum(load.requests.values()),
                        sum(load.failures.values()),
                        updates,
                        gaps,
                        lost,
                        fired,
                        active,
                        await ingest_leader(beats, args.redis_prefix, pgid),
                        os.getloadavg()[0],
                    )
                    progress.console.print(describe(row, rows[-1] if rows else None))
                    new = load.failures - reported
                    if new:
                        listed = "; ".join(f"{n} x {kind}" for kind, n in new.most_common(5))
                        progress.console.print(f"        new failures: {listed}")
                        reported = Counter(load.failures)
                    rows.append(row)
                    progress.update(bar, completed=minute)
            finally:
                stop.set()
                await runner
                await stop_clients(clients)
                if load.failures:
                    failures = load.failures.most_common(10)
                    console.print("failures: " + "; ".join(f"{n} x {k}" for k, n in failures))
                console.print(
                    f"requests: {sum(load.requests.values()):,} ("
                    + ", ".join(f"{k} {n:,}" for k, n in load.requests.most_common())
                    + f"); not sent, {args.concurrency} in flight already: {load.behind:,}"
                )
    return rows


def verdict(args: argparse.Namespace, rows: list[Minute], console: Console) -> bool:
    after = [r for r in rows if r.minute > args.warmup_minutes]
    uss = slope_kib_per_min([(r.minute, sum(u for _, u in r.memory.values())) for r in after])
    rss = slope_kib_per_min([(r.minute, sum(s for s, _ in r.memory.values())) for r in after])
    per_process = []
    for label in after[-1].memory if after else {}:
        samples = [(r.minute, r.memory[label][1]) for r in after if label in r.memory]
        per_process.append(f"{label} {slope_kib_per_min(samples):+.1f}")
    last = rows[-1] if rows else None
    console.print(
        f"\n{args.minutes} min soak, {args.workers} workers, {args.rps:g} req/s, {args.sockets} "
        f"sockets on {len(args.symbol_names)} tickers: {last.requests if last else 0:,} requests, "
        f"{last.failures if last else 0} failures, {last.updates if last else 0:,} WebSocket "
        f"updates, {last.gaps if last else 0} gaps, {last.lost if last else 0} connections lost, "
        f"{last.firings if last else 0:,} alert firings"
    )
    console.print(
        f"memory slope after {args.warmup_minutes} min of warm-up ({len(after)} samples): "
        f"USS {uss:+.1f} KiB/min, RSS {rss:+.1f} KiB/min; USS per process: {', '.join(per_process)}"
    )
    # A growth that stops is a bound being reached (pages touched as a peak rises), a leak
    # does not stop: the slope from later starts too, and the load the machine had.
    windows = []
    for start in WINDOWS_FROM:
        samples = [(r.minute, sum(u for _, u in r.memory.values())) for r in rows]
        late = [(m, u) for m, u in samples if m >= start]
        if start > args.warmup_minutes and len(late) >= 5:
            windows.append(f"from minute {start}: {slope_kib_per_min(late):+.1f}")
    if windows:
        console.print("USS slope, KiB/min, " + "; ".join(windows))
    if after:
        loads = [r.load for r in after]
        console.print(f"load average after warm-up: {min(loads):.2f} to {max(loads):.2f}")
    leaders = Counter(r.leader for r in after)
    changes = sum(a.leader != b.leader for a, b in itertools.pairwise(after))
    console.print(
        "ingest leader after warm-up (minutes): "
        + ", ".join(f"{label} {n}" for label, n in leaders.most_common())
        + f"; it changed hands {changes} times; active alerts "
        + (f"{after[0].alerts} to {after[-1].alerts}" if after else "?")
        + f" (the bench keeps at most {args.users * ALERTS_PER_USER[1]})"
    )
    flat = uss <= FLAT_KIB_PER_MIN
    clean = last is not None and not (last.failures or last.gaps or last.lost)
    console.print(
        f"verdict: memory {'flat' if flat else 'GROWING'} "
        f"(USS slope <= {FLAT_KIB_PER_MIN:g} KiB/min); "
        f"{'nothing lost' if clean else 'FAILURES, GAPS OR LOST CONNECTIONS'}"
    )
    return flat and clean


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=15.0,
        help="left out of the slope: caches filling, pools opening; the verified-token cache "
        "holds an access token's lifetime (15 min) of tokens",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rps", type=float, default=200.0, help="REST requests a second")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="REST requests in flight at most"
    )
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--symbols", type=int, default=5, help="tickers (the first N defaults)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server: the soak creates and drops a database on it",
    )
    parser.add_argument(
        "--database-options",
        default="",
        metavar="QUERY",
        help="added to CoinLink's database URL, e.g. max_inactive_connection_lifetime=0 "
        "(Tortoise passes pool options to asyncpg)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--trace", type=Path, help="directory for the workers' allocation traces")
    parser.add_argument(
        "--no-firings",
        action="store_true",
        help="alert thresholds no price reaches: the same alerts held, none fired (to tell "
        "the firings' share of the leader's memory from the rest)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for CoinLink (repeatable)",
    )
    args = parser.parse_args()
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    if args.minutes < 1 or args.rps <= 0 or args.sockets < 1 or args.users < 1:
        parser.error("--minutes, --rps, --sockets and --users must be positive")
    args.symbol_names = symbols(args.symbols)
    args.redis_prefix = f"soak-{secrets.token_hex(4)}:"
    if args.trace:
        args.trace = args.trace.resolve()
        args.trace.mkdir(parents=True, exist_ok=True)
    return args


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too unwinds through the finally blocks


def main() -> None:
    signal.signal(signal.SIGTERM, interrupt)
    args = parse_args()
    raise_nofile()
    console = Console(highlight=False, soft_wrap=True)
    database_url = asyncio.run(create_database(args.database_url))
    server: Server | None = None
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix="coinlink-soak-") as tmp:
            options = f"?{args.database_options}" if args.database_options else ""
            server = start_server(args, server_env(args, database_url + options), tmp)
            try:
                rows = asyncio.run(soak(args, server, database_url, console))
            finally:
                stop_server(server)
            ok = verdict(args, rows, console)
    except KeyboardInterrupt:
        print("interrupted: server and clients stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        asyncio.run(drop_database(args.database_url, database_url))
        delete_redis_keys(args.redis_url, args.redis_prefix)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
