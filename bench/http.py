"""GET /health on CoinLink against a bare Sanic app, side by side in one run.

Both servers run with the same worker count; rounds alternate between them so that machine
noise hits both alike. Prints per-round figures, the medians and the ratio CoinLink / bare.
Uses wrk (Debian package ``wrk``) when installed, else a slower Python load generator.

    .venv/bin/python -m bench.http [--workers 1] [--rounds 5] [--seconds 5] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, port: int, args: argparse.Namespace, tmp: str) -> subprocess.Popen[bytes]:
    workers = args.workers
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINLINK_", "PROMETHEUS_"))}
    if name == "coinlink":
        env.update(
            COINLINK_ENV="development",
            COINLINK_DATABASE_URL=args.database_url or f"sqlite://{tmp}/bench.sqlite3",
            COINLINK_LOG_FORMAT="json",
            COINLINK_JWT_SECRET=secrets.token_hex(32),
            COINLINK_BCRYPT_ROUNDS=str(args.bcrypt_rounds),
            COINLINK_REDIS_PREFIX=f"bench{secrets.token_hex(4)}:",
            # The limiter runs on every request but never refuses: its cost is measured,
            # not its refusals.
            COINLINK_RATE_LIMIT_USER="100000000/60",
            COINLINK_RATE_LIMIT_ANONYMOUS="100000000/60",
            COINLINK_RATE_LIMIT_LOGIN_ACCOUNT="100000000/60",
            COINLINK_RATE_LIMIT_LOGIN_IP="100000000/60",
        )
        if args.redis_url:
            env["COINLINK_REDIS_URL"] = args.redis_url
        argv = [
            sys.executable,
            "-m",
            "coinlink",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "sanic",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-logs",
            "--no-motd",
        ]
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not start")


Load = Callable[[str, int, int, str | None], dict[str, float]]
_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by every process of a server's process group (main + workers).

    Throughput on two shared cores is noisy; CPU time per request is the steadier figure.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / _TICK


def sign_up(port: int, rounds: int) -> str:
    """Register a user; report login throughput per core at this bcrypt cost; the token."""
    base = f"http://127.0.0.1:{port}/api/v2/auth"
    body = {"email": f"bench-{secrets.token_hex(4)}@example.com", "password": "bench password"}
    token = httpx.post(f"{base}/register", json=body, timeout=30).json()["tokens"]["access_token"]
    started, logins = time.perf_counter(), 10
    for _ in range(logins):
        assert httpx.post(f"{base}/login", json=body, timeout=30).status_code == 200
    rate = logins / (time.perf_counter() - started)
    print(f"login: {rate:.1f}/s sequential at bcrypt cost {rounds} (one core per login)")
    return str(token)


def run_wrk(url: str, seconds: int, connections: int, auth: str | None) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(ROOT / "bench/wrk_report.lua"),
            *(["-H", f"Authorization: {auth}"] if auth else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return {
        "rps": report["requests"] / report["seconds"],
        "seconds": report["seconds"],
        "p50_ms": report["p50_us"] / 1000,
        "p95_ms": report["p95_us"] / 1000,
        "p99_ms": report["p99_us"] / 1000,
        "errors": report["errors"],
    }


def run_python(url: str, seconds: int, connections: int, auth: str | None) -> dict[str, float]:
    async def main() -> dict[str, float]:
        latencies: list[float] = []
        stop = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections)
        headers = {"authorization": auth} if auth else {}
        async with httpx.AsyncClient(limits=limits, headers=headers) as client:

            async def worker() -> None:
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    await client.get(url)
                    latencies.append(time.perf_counter() - started)

            began = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.monotonic() - began
        q = statistics.quantiles(latencies, n=100)
        return {
            "rps": len(latencies) / elapsed,
            "seconds": elapsed,
            "p50_ms": q[49] * 1000,
            "p95_ms": q[94] * 1000,
            "p99_ms": q[98] * 1000,
            "errors": 0,
        }

    return asyncio.run(main())


def describe(f: dict[str, float]) -> str:
    return (
        f"{f['rps']:9.0f} req/s  {f['cpu_us']:6.1f} us CPU/req  p50 {f['p50_ms']:6.2f} ms"
        f"  p95 {f['p95_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  errors {f['errors']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url", help="CoinLink's database (default: SQLite in a tmp dir)")
    parser.add_argument("--redis-url", help="CoinLink's Redis (default: the in-process bus)")
    parser.add_argument("--bcrypt-rounds", type=int, default=12, help="cost for the login figure")
    args = parser.parse_args()
    load = run_wrk if shutil.which("wrk") else run_python
    print(
        f"load generator: {'wrk -t1' if load is run_wrk else 'python httpx'}, "
        f"{args.connections} connections, {args.seconds} s per round, {args.workers} worker(s)"
    )

    with tempfile.TemporaryDirectory(prefix="coinlink-bench-") as tmp:
        results = measure(args, load, tmp)

    print("\nmedians")
    for name, rows in results.items():
        print(
            f"  {name:13s} {describe({k: statistics.median(r[k] for r in rows) for k in rows[0]})}"
        )
    for name, base in (("coinlink", "bare"), ("users/me", "coinlink")):
        pairs = list(zip(results[base], results[name], strict=True))
        ratios = [c["rps"] / b["rps"] for b, c in pairs]
        cpu = [b["cpu_us"] / c["cpu_us"] for b, c in pairs]
        print(
            f"ratio {name}/{base}: throughput median {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
            f"CPU per request {base}/{name} median {statistics.median(cpu):.2f}"
        )


def measure(args: argparse.Namespace, load: Load, tmp: str) -> dict[str, list[dict[str, float]]]:
    """Start both servers, then alternate the cases round by round."""
    ports = {name: free_port() for name in ("bare", "coinlink")}
    processes: list[subprocess.Popen[bytes]] = []
    cases = {
        "bare": ("bare", "/health"),
        "coinlink": ("coinlink", "/health"),
        "users/me": ("coinlink", "/api/v2/users/me"),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    try:
        for name, port in ports.items():
            processes.append(start(name, port, args, tmp))
        token = sign_up(ports["coinlink"], args.bcrypt_rounds)
        headers = {"/api/v2/users/me": f"Bearer {token}"}
        for server, path in cases.values():  # warm-up
            load(f"http://127.0.0.1:{ports[server]}{path}", 1, args.connections, headers.get(path))
        pgids = dict(zip(ports, (p.pid for p in processes), strict=True))
        for round_no in range(1, args.rounds + 1):
            for case, (server, path) in cases.items():
                url = f"http://127.0.0.1:{ports[server]}{path}"
                cpu_before = group_cpu_s(pgids[server])
                figures = load(url, args.seconds, args.connections, headers.get(path))
                requests = figures["rps"] * figures["seconds"]
                figures["cpu_us"] = (group_cpu_s(pgids[server]) - cpu_before) / requests * 1e6
                results[case].append(figures)
                print(f"round {round_no} {case:13s} {describe(figures)}")
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
    return results


if __name__ == "__main__":
    main()
