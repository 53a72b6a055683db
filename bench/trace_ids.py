"""What a request's trace id costs: CoinLink's way against the library ways, in one run.

Per call, in this process: ``trace_id_of`` on a request without ``X-Request-ID`` (what
the middleware does for almost every request) against Sanic's ``request.id`` (which draws
a ``uuid4`` even when the client sent an id, and echoes any client value unchecked), and a
fresh id (``secrets.token_hex(16)``) against ``uuid.uuid4().hex``.
The cases alternate across rounds so that machine noise hits each alike; prints medians.

    .venv/bin/python -m bench.trace_ids [--rounds 7] [--calls 200000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from sanic import Request, Sanic

from coinlink.http.trace_ids import new_trace_id, trace_id_of


def per_call_ns(step: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        step()
    return (time.perf_counter_ns() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()

    app = Sanic("bench_trace_ids", configure_logging=False)

    def request() -> Request:
        return Request(b"/health", {}, "1.1", "GET", None, app)  # type: ignore[arg-type]

    def coinlink_id() -> str:
        return trace_id_of(request())

    def sanic_id() -> object:
        return request().id

    # Request cases are shown above the bare request's cost: what the id adds.
    with_request: dict[str, Callable[[], Any]] = {
        "request only (baseline)": request,
        "CoinLink trace_id_of(request)": coinlink_id,
        "Sanic request.id": sanic_id,
    }
    fresh_ids: dict[str, Callable[[], Any]] = {
        "new_trace_id": new_trace_id,
        "uuid.uuid4().hex": lambda: uuid.uuid4().hex,
    }
    cases = with_request | fresh_ids
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, step in cases.items():
            figures[name].append(per_call_ns(step, args.calls))
    median = {name: statistics.median(runs) for name, runs in figures.items()}
    baseline = median["request only (baseline)"]
    print(f"{'a request id':36} {'ns/call':>8} {'the id alone':>13}")
    for name in with_request:
        print(f"{name:36} {median[name]:8.0f} {median[name] - baseline:13.0f}")
    first = median["new_trace_id"]
    print(f"\n{'a fresh id':36} {'ns/call':>8} {'ratio':>13}")
    for name in fresh_ids:
        print(f"{name:36} {median[name]:8.0f} {median[name] / first:12.2f}x")


if __name__ == "__main__":
    main()
