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
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(name: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINLINK_", "PROMETHEUS_"))}
    if name == "coinlink":
        tmp = tempfile.mkdtemp(prefix="coinlink-bench-")
        env.update(
            COINLINK_ENV="development",
            COINLINK_DATABASE_URL=f"sqlite://{tmp}/bench.sqlite3",
            COINLINK_LOG_FORMAT="json",
        )
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


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(ROOT / "bench/wrk_report.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return {
        "rps": report["requests"] / report["seconds"],
        "p50_ms": report["p50_us"] / 1000,
        "p95_ms": report["p95_us"] / 1000,
        "p99_ms": report["p99_us"] / 1000,
        "errors": report["errors"],
    }


def run_python(url: str, seconds: int, connections: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        latencies: list[float] = []
        stop = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits) as client:

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
            "p50_ms": q[49] * 1000,
            "p95_ms": q[94] * 1000,
            "p99_ms": q[98] * 1000,
            "errors": 0,
        }

    return asyncio.run(main())


def describe(f: dict[str, float]) -> str:
    return (
        f"{f['rps']:9.0f} req/s  p50 {f['p50_ms']:6.2f} ms  p95 {f['p95_ms']:6.2f} ms"
        f"  p99 {f['p99_ms']:6.2f} ms  errors {f['errors']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    load = run_wrk if shutil.which("wrk") else run_python
    print(
        f"load generator: {'wrk -t1' if load is run_wrk else 'python httpx'}, "
        f"{args.connections} connections, {args.seconds} s per round, {args.workers} worker(s)"
    )

    ports = {name: free_port() for name in ("bare", "coinlink")}
    processes = {name: start(name, port, args.workers) for name, port in ports.items()}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
    try:
        for port in ports.values():  # warm-up
            load(f"http://127.0.0.1:{port}/health", 1, args.connections)
        for round_no in range(1, args.rounds + 1):
            for name, port in ports.items():
                figures = load(f"http://127.0.0.1:{port}/health", args.seconds, args.connections)
                results[name].append(figures)
                print(f"round {round_no} {name:9s} {describe(figures)}")
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)

    print("\nmedians")
    for name, rows in results.items():
        print(
            f"  {name:9s} {describe({k: statistics.median(r[k] for r in rows) for k in rows[0]})}"
        )
    ratios = [
        c["rps"] / b["rps"] for b, c in zip(results["bare"], results["coinlink"], strict=True)
    ]
    print(
        f"ratio coinlink/bare throughput: median {statistics.median(ratios):.2f} "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
