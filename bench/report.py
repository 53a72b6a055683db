"""Every benchmark in production mode, side by side, written up as a report with plots.

``make bench`` runs it. In one run, on PostgreSQL and Redis (the ones at
``COINLINK_TEST_DATABASE_URL`` / ``COINLINK_TEST_REDIS_URL`` or on 127.0.0.1 when they
answer, else throwaway servers started from the installed binaries, as the test suite does):

1. HTTP (``bench.http`` as a library, wrk): CoinLink (``COINLINK_ENV=production``, every
   middleware on, the rate limiter deciding every request but never refusing, access log
   on, the simulator feeding live tickers, 500 closed candles in PostgreSQL), the FastAPI +
   Redis stack of ``bench/fastapi_app.py`` and the bare Sanic hello world, each with the
   same number of workers. Endpoints: the ticker, ``/users/me``, the alert and notification
   lists, 500 candles; for every connection count of the sweep and every round, each
   (server, endpoint) is measured in turn, the order alternating between rounds, so that
   machine noise hits all alike. Ratios are taken per round, then the median.
2. Login: a burst of logins (wrk POSTs) against the bcrypt bound measured in this process,
   and the ticker's p99 alone and while the logins run (nothing must queue behind them).
3. WebSocket fan-out (``bench.ws_fanout`` as a library): CoinLink's ``/ws`` against bare
   ``websockets.broadcast()`` at each client count, several client processes.

Writes ``<out>/README.md`` (the report), PNG plots and ``results.json`` beside it.

    .venv/bin/python -m bench.report [--quick] [--out docs/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import redis
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import http, ws_fanout
from tests.support.services import fresh_database, postgres_server, redis_server

ROOT = Path(__file__).resolve().parents[1]
LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
PASSWORD = "bench password 0123"  # noqa: S105 - the throwaway user of the run
SERVERS = ("coinlink", "fastapi", "bare")
# endpoint -> (path, authenticated); bare Sanic answers its hello world for every one.
ENDPOINTS = {
    "ticker": (http.TICKER, False),
    "users/me": ("/api/v2/users/me", True),
    "alerts": ("/api/v2/alerts", True),
    "notifications": ("/api/v2/notifications", True),
    "candles": (http.CANDLES, False),
}
FASTAPI_ENDPOINTS = ("ticker", "users/me", "candles")
HELLO = "hello"
Point = dict[str, float]


@dataclass(frozen=True)
class Plan:
    """What one run measures, and for how long."""

    connections: tuple[int, ...] = (16, 64, 256)
    rounds: int = 3
    seconds: int = 5
    warmup: int = 1  # seconds of load before each server, endpoint and connection count
    workers: int = 2
    bcrypt_rounds: int = 12
    login_connections: int = 4  # the hashing slots of 2 workers (COINLINK_BCRYPT_CONCURRENCY)
    login_seconds: int = 10
    ws_clients: tuple[int, ...] = (1000, 2000, 10000)
    ws_rate: float = 2.0
    ws_seconds: float = 10.0
    ws_rounds: int = 3  # one 10 s window per case left the 1,000-client ratio to chance
    ws_client_procs: int = 4


FULL = Plan()
# A smoke test of the whole machinery (tests/integration/test_bench_report.py runs it).
QUICK = Plan(
    connections=(64,),
    rounds=1,
    seconds=1,
    warmup=0,
    login_seconds=3,
    ws_clients=(100,),
    ws_seconds=1.0,
    ws_rounds=1,
    ws_client_procs=1,
)


@dataclass
class Results:
    """Everything a run measured, and where; what the report is written from."""

    plan: Plan
    command: str
    started: str
    machine: dict[str, Any]
    services: dict[str, str] = field(default_factory=dict)
    # "server endpoint connections" -> one Point per round
    http: dict[str, list[Point]] = field(default_factory=dict)
    login: dict[str, float] = field(default_factory=dict)
    # "server clients" -> one row per round (bench.ws_fanout's figures)
    ws: dict[str, list[Point]] = field(default_factory=dict)

    def points(self, server: str, endpoint: str, connections: int) -> list[Point]:
        return self.http.get(f"{server} {endpoint} {connections}", [])


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    if git("status", "--porcelain", "--untracked-files=no").strip():
        commit += " with uncommitted changes"
    return {
        "commit": commit,
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_start": os.getloadavg(),
    }


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis: the configured or local ones when they answer, else throwaway."""
    os.environ.setdefault("COINLINK_TEST_DATABASE_URL", LOCAL_POSTGRES)
    os.environ.setdefault("COINLINK_TEST_REDIS_URL", LOCAL_REDIS)
    with postgres_server() as server, redis_server() as redis_url, fresh_database(server) as db:
        yield db, redis_url


def where(url: str) -> str:
    """A URL without its user: what the report says about the servers it used."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


@contextlib.contextmanager
def fresh_ticker(port: int, redis_url: str, key: str) -> Iterator[None]:
    """Copy CoinLink's live BTC-USD ticker into Redis every 0.5 s: the FastAPI app's source."""
    stop = threading.Event()
    client = redis.Redis.from_url(redis_url)
    url = f"http://127.0.0.1:{port}{http.TICKER}"

    def copy() -> None:
        client.set(key, httpx.get(url, timeout=5).content)

    def loop() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(httpx.HTTPError, redis.RedisError):
                copy()

    copy()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        client.close()


def sign_up(base: str) -> tuple[str, str]:
    """A user with 10 alerts that fired (10 notifications) and 10 that wait; email, token."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    body = {"email": email, "password": PASSWORD}
    token = httpx.post(f"{base}/api/v2/auth/register", json=body, timeout=30).json()["tokens"]
    headers = {"authorization": f"Bearer {token['access_token']}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for threshold in ("1",) * 10 + ("100000000",) * 10:
            alert = {"symbol": "BTC-USD", "condition": "above", "threshold": threshold}
            client.post("/api/v2/alerts", json=alert).raise_for_status()
        deadline = time.monotonic() + 60
        while len(client.get("/api/v2/notifications").json()["items"]) < 10:
            if time.monotonic() > deadline:
                raise RuntimeError("the alerts at 1 USD did not fire within 60 s")
            time.sleep(0.2)
    return email, str(headers["authorization"])


@dataclass(frozen=True)
class Server:
    port: int
    pgid: int  # its process group: the main process and its workers

    def measure(
        self, path: str, connections: int, seconds: int, auth: str | None, body: str | None = None
    ) -> Point:
        """One wrk run, with the CPU time per request of the whole group."""
        cpu_before = http.group_cpu_s(self.pgid)
        url = f"http://127.0.0.1:{self.port}{path}"
        figures = http.run_wrk(url, seconds, connections, auth, body)
        # Per answered request: a refused one (a login turned away with 503) costs little.
        figures["answered"] = max(1.0, figures["rps"] * figures["seconds"] - figures["errors"])
        figures["cpu_s"] = http.group_cpu_s(self.pgid) - cpu_before
        figures["cpu_us"] = figures["cpu_s"] / figures["answered"] * 1e6
        return figures

    def idle_thread_cpu(self, seconds: float) -> tuple[float, float]:
        """CPU seconds a second the event loops and the other threads spend with no request
        (timers, market data), once hashes left from an earlier run have finished."""
        last = http.group_thread_cpu_s(self.pgid)[1]
        for _ in range(20):  # at most 10 s: a slot's queue is bounded by its wait
            time.sleep(0.5)
            now = http.group_thread_cpu_s(self.pgid)[1]
            if now - last < 0.02:
                break
            last = now
        loops, others = http.group_thread_cpu_s(self.pgid)
        time.sleep(seconds)
        loops_after, others_after = http.group_thread_cpu_s(self.pgid)
        return (loops_after - loops) / seconds, (others_after - others) / seconds


def http_cases(connections: int) -> list[tuple[str, str, str, bool]]:
    """(server, endpoint, path, authenticated) of one sweep step."""
    cases = [("bare", HELLO, "/health", False)]
    for endpoint, (path, authenticated) in ENDPOINTS.items():
        cases.append(("coinlink", endpoint, path, authenticated))
        if endpoint in FASTAPI_ENDPOINTS:
            cases.append(("fastapi", endpoint, path, authenticated))
    return cases


def bcrypt_cpu_ms(rounds: int) -> float:
    """CPU time of one password check at this cost: what a login cannot do without.

    CPU time, not wall time: on a shared machine the wall time of a check moves with the
    load, its CPU time hardly.
    """
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds))
    began, checks = time.process_time(), 0
    while time.process_time() - began < 1:
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        checks += 1
    return (time.process_time() - began) / checks * 1000


def run_http(
    results: Results,
    servers: dict[str, Server],
    auth: str,
    email: str,
    advance: Callable[[str], None],
) -> None:
    plan = results.plan
    for connections in plan.connections:
        cases = http_cases(connections)
        for server, _, path, authenticated in cases if plan.warmup else ():  # pools, caches
            servers[server].measure(path, connections, plan.warmup, auth if authenticated else None)
        for round_no in range(plan.rounds):
            order = cases if round_no % 2 == 0 else cases[::-1]
            for server, endpoint, path, authenticated in order:
                advance(f"{server} {endpoint} @{connections} (round {round_no + 1})")
                figures = servers[server].measure(
                    path, connections, plan.seconds, auth if authenticated else None
                )
                results.http.setdefault(f"{server} {endpoint} {connections}", []).append(figures)
    advance("login burst")
    run_login(results, servers["coinlink"], email)


def run_login(results: Results, coinlink: Server, email: str) -> None:
    """Logins at ``login_connections`` for ``login_seconds``, with a ticker load beside them."""
    plan = results.plan
    body = json.dumps({"email": email, "password": PASSWORD})
    base = f"http://127.0.0.1:{coinlink.port}"
    alone = coinlink.measure(http.TICKER, 16, plan.login_seconds, None)
    beside: dict[str, Point] = {}

    def ticker_load() -> None:
        beside["ticker"] = http.run_wrk(base + http.TICKER, plan.login_seconds, 16, None)

    thread = threading.Thread(target=ticker_load)
    thread.start()
    logins = http.run_wrk(
        base + "/api/v2/auth/login", plan.login_seconds, plan.login_connections, None, body
    )
    thread.join()
    # Alone (the ticker load beside would count in it), the CPU time per login of the
    # executor threads, where bcrypt runs, and of the event loops (parsing, the database,
    # tokens), each less what it spends without any request (the simulator, ingest, the
    # alert engine: noise far larger than a login's loop work if not told apart).
    idle_loops, idle_others = coinlink.idle_thread_cpu(3)
    loops, others = http.group_thread_cpu_s(coinlink.pgid)
    alone_logins = coinlink.measure(
        "/api/v2/auth/login", plan.login_connections, plan.login_seconds, None, body
    )
    loops_after, others_after = http.group_thread_cpu_s(coinlink.pgid)
    seconds, answered = alone_logins["seconds"], alone_logins["answered"]
    loop_s = max(0.0, loops_after - loops - idle_loops * seconds)
    hashing_s = max(0.0, others_after - others - idle_others * seconds)
    if answered <= 1:  # every login refused or failed: no cost per login to speak of
        loop_s = hashing_s = 0.0
    results.login = {
        "rps": logins["rps"],
        "p50_ms": logins["p50_ms"],
        "p99_ms": logins["p99_ms"],
        "errors": logins["errors"] + alone_logins["errors"],
        "alone_rps": alone_logins["rps"],
        "hashing_cpu_ms": hashing_s / answered * 1000,
        "loop_cpu_ms": loop_s / answered * 1000,
        "idle_cpu_ms_s": (idle_loops + idle_others) * 1000,
        "bcrypt_cpu_ms": bcrypt_cpu_ms(plan.bcrypt_rounds),
        "ticker_p99_alone_ms": alone["p99_ms"],
        "ticker_p99_beside_ms": beside["ticker"]["p99_ms"],
    }


def run_ws(
    results: Results,
    db: str,
    redis_url: str,
    tmp: str,
    advance: Callable[[str], None],
) -> None:
    plan = results.plan
    argv = ["--production", "--database-url", db, "--redis-url", redis_url]
    argv += ["--workers", str(plan.workers), "--rate", f"{plan.ws_rate:g}"]
    argv += ["--clients", ",".join(str(n) for n in plan.ws_clients)]
    argv += ["--seconds", f"{plan.ws_seconds:g}", "--rounds", str(plan.ws_rounds)]
    argv += ["--client-procs", str(plan.ws_client_procs)]
    if plan.ws_seconds < 5:  # --quick: shorter idle and warm-up phases too
        argv += ["--idle", "1", "--warmup", "1", "--drain", "3"]
    args = ws_fanout.parse_args(argv)
    needed = max(plan.ws_clients) // plan.ws_client_procs + 1024
    limit = ws_fanout.raise_nofile()
    if limit < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {limit} < {needed} per client process")
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if high - low < max(plan.ws_clients) * 1.2:
        raise SystemExit(f"ephemeral ports {low}-{high} too few for {max(plan.ws_clients)}")
    results.machine["nofile"] = limit
    results.machine["ephemeral_ports"] = f"{low}-{high}"
    try:
        rows = asyncio.run(
            ws_fanout.run(args, tmp, lambda server, n: advance(f"websocket {server} {n}"))
        )
    finally:
        http.delete_redis_keys(redis_url, args.redis_prefix)
    for (server, clients), figures in rows.items():
        results.ws[f"{server} {clients}"] = figures


def steps(plan: Plan) -> int:
    per_step = len(http_cases(0)) * plan.rounds
    return len(plan.connections) * per_step + 1 + len(plan.ws_clients) * 2 * plan.ws_rounds


def run(plan: Plan, command: str) -> Results:
    results = Results(plan, command, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine())
    columns = (
        TextColumn("{task.description:42s}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress, tempfile.TemporaryDirectory(prefix="coinlink-") as tmp:
        task = progress.add_task("starting PostgreSQL, Redis, servers", total=steps(plan))

        def advance(what: str) -> None:
            progress.update(task, description=what)
            progress.advance(task)

        with services() as (db, redis_url):
            results.services = {"postgresql": where(db), "redis": where(redis_url)}
            args = argparse.Namespace(
                workers=plan.workers,
                production=True,
                database_url=db,
                redis_url=redis_url,
                bcrypt_rounds=plan.bcrypt_rounds,
                redis_prefix=f"bench{secrets.token_hex(4)}:",
                server_env=[],
                jwt_secret=secrets.token_hex(32),
            )
            began = time.monotonic()

            def log(what: str) -> None:
                progress.console.log(f"{what} ({time.monotonic() - began:.1f} s)")

            log(f"PostgreSQL {where(db)}, Redis {where(redis_url)}")
            http.seed_candles(db)
            log("migrated, 500 candles seeded")
            processes: list[subprocess.Popen[bytes]] = []
            try:
                servers = {}
                for name in SERVERS:  # all at once: starting is mostly waiting on imports
                    port = http.free_port()
                    processes.append(http.launch(name, port, args, tmp))
                    servers[name] = Server(port, processes[-1].pid)
                for name, process in zip(SERVERS, processes, strict=True):
                    http.wait_healthy(name, servers[name].port, process)
                    log(f"{name} answering on port {servers[name].port}, {plan.workers} workers")
                coinlink = servers["coinlink"].port
                http.check_market(coinlink)
                email, auth = sign_up(f"http://127.0.0.1:{coinlink}")
                log("user signed up; its alerts fired")
                with fresh_ticker(coinlink, redis_url, http.fastapi_ticker_key(args)):
                    run_http(results, servers, auth, email, advance)
            finally:
                http.stop(processes)
                http.delete_redis_keys(redis_url, args.redis_prefix)
            log("HTTP done")
            run_ws(results, db, redis_url, tmp, advance)
            log("WebSocket done")
    results.machine["load_end"] = os.getloadavg()
    return results


def load(path: Path) -> Results:
    """The results a run saved (``results.json``)."""
    data = json.loads(path.read_text())
    plan = {k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("plan").items()}
    return Results(Plan(**plan), **data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per point (smoke)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench", help="report folder")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="measure nothing: write the report and plots again from <out>/results.json",
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop every server.
    signal.signal(signal.SIGTERM, ws_fanout.interrupt)
    from bench.report_doc import write  # matplotlib: loaded once there is something to plot

    saved = args.out / "results.json"
    if args.rewrite:
        results = load(saved)
    else:
        command = shlex.join(["python", "-m", "bench.report", *sys.argv[1:]])
        results = run(QUICK if args.quick else FULL, command)
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(asdict(results), indent=1) + "\n")
    write(results, args.out)
    print(f"report: {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
