"""The latency check: p95 of sequential REST reads of a ticker and of WebSocket pings."""

from __future__ import annotations

import statistics
import time

from coinlink.verify.runner import Deployment, Failed, expect
from coinlink.verify.socket import Socket

REST_SAMPLES = 50
WS_SAMPLES = 20  # under the default inbound burst (40) and rate (20/s)
REST_P95_MS = 150.0
WS_P95_MS = 250.0


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


async def latency(deployment: Deployment) -> str:
    path = f"/api/v2/market/tickers/{await deployment.symbol()}"
    rest: list[float] = []
    for _ in range(REST_SAMPLES):
        start = time.perf_counter()
        expect(await deployment.http.get(path), 200)
        rest.append((time.perf_counter() - start) * 1000)
    pings: list[float] = []
    async with Socket(str(deployment.http.base_url)) as socket:
        for _ in range(WS_SAMPLES):
            start = time.perf_counter()
            reply = await socket.request("ping")
            if reply["type"] != "pong":
                raise Failed(f"ping answered {reply}")
            pings.append((time.perf_counter() - start) * 1000)
    measured = (
        f"REST p95 {p95(rest):.1f} ms (of {REST_SAMPLES}), "
        f"WebSocket ping p95 {p95(pings):.1f} ms (of {WS_SAMPLES})"
    )
    if p95(rest) >= REST_P95_MS or p95(pings) >= WS_P95_MS:
        raise Failed(f"{measured}; limits {REST_P95_MS:.0f} ms and {WS_P95_MS:.0f} ms")
    return measured
