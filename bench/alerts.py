"""Ticks per second through the alert engine with many armed alerts, against a naive scan.

``--alerts`` alerts over ``--symbols`` symbols: 45 % above and 45 % below with thresholds
0.5-30 % (log-uniform) away from the symbol's opening price on the right side, 10 %
pct_change of 1-20 % over a random window; 30 % of them repeating (cooldown 1-60 min).
Ticks: the symbols in turn, each price a random walk of +-0.01 % steps (two decimals), 5 ms
apart (each symbol ticks 10 times a second), generated outside the timed sections. So few
alerts fire per tick, as in production.

Reported: build time (``add`` of every alert, specs built beforehand), memory per alert
(tracemalloc over a second build: the engine's own structures, the specs and each symbol's
fixed price history apart), ticks/s
through ``on_tick`` (median over ``--runs`` consecutive slices of the stream, one engine),
and per-tick cost of a naive scan of the same alerts on the first ``--naive-ticks`` ticks.
The naive scan is a lower bound: the tick's symbol's alerts only (already grouped by symbol),
a bare comparison per alert, moves computed once per window, no state to update.

    .venv/bin/python -m bench.alerts [--alerts 1000000] [--symbols 20] [--ticks 300000]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time
import tracemalloc
import uuid
from bisect import bisect_left
from decimal import Decimal

from coinlink.alerts.engine import PCT_WINDOWS, AlertEngine, AlertSpec

CENT = Decimal("0.01")
TICK_STEP_MS = 5
T0 = 1_710_028_800_000


def opening_prices(rng: random.Random, symbols: list[str]) -> dict[str, float]:
    return {s: math.exp(rng.uniform(math.log(0.5), math.log(60_000))) for s in symbols}


def build_specs(rng: random.Random, n: int, opening: dict[str, float]) -> list[AlertSpec]:
    symbols = list(opening)
    specs = []
    for seq in range(n):
        symbol = symbols[seq % len(symbols)]
        price = opening[symbol]
        kind = rng.random()
        distance = math.exp(rng.uniform(math.log(0.005), math.log(0.3)))
        window = None
        if kind < 0.45:
            condition = "above"
            threshold = Decimal(price * (1 + distance)).quantize(CENT)
        elif kind < 0.9:
            condition = "below"
            threshold = max(Decimal(price * (1 - distance)).quantize(CENT), CENT)
        else:
            condition = "pct_change"
            threshold = Decimal(rng.uniform(1, 20)).quantize(CENT)
            window = rng.choice(PCT_WINDOWS)
        repeat = rng.random() < 0.3
        specs.append(
            AlertSpec(
                id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                seq=seq,
                symbol=symbol,
                condition=condition,  # type: ignore[arg-type]
                threshold=threshold,
                window_s=window,
                repeat=repeat,
                cooldown_s=rng.randint(60, 3600) if repeat else 0,
            )
        )
    return specs


def build_ticks(
    rng: random.Random, n: int, opening: dict[str, float]
) -> list[tuple[str, Decimal, int]]:
    symbols = list(opening)
    walk = dict(opening)
    ticks = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        walk[symbol] *= 1 + rng.uniform(-0.0001, 0.0001)
        price = max(Decimal(walk[symbol]).quantize(CENT), CENT)
        ticks.append((symbol, price, T0 + i * TICK_STEP_MS))
    return ticks


def build(specs: list[AlertSpec]) -> AlertEngine:
    engine = AlertEngine()
    add = engine.add
    for spec in specs:
        add(spec)
    return engine


def naive_cost(specs: list[AlertSpec], ticks: list[tuple[str, Decimal, int]]) -> float:
    """Seconds per tick of the scan, over the given ticks."""
    by_symbol: dict[str, list[tuple[str, Decimal, int]]] = {}
    for s in specs:
        by_symbol.setdefault(s.symbol, []).append((s.condition, s.threshold, s.window_s or 0))
    history: dict[str, tuple[list[int], list[Decimal]]] = {}
    fired = 0
    started = time.perf_counter()
    for symbol, price, ts in ticks:
        times, prices = history.setdefault(symbol, ([], []))
        times.append(ts)
        prices.append(price)
        moves = {}
        for w in PCT_WINDOWS:
            ref = prices[bisect_left(times, ts - w * 1000)]
            moves[w] = abs(price - ref) * 100 / ref
        for condition, threshold, window in by_symbol[symbol]:
            if condition == "above":
                hit = price >= threshold
            elif condition == "below":
                hit = price <= threshold
            else:
                hit = moves[window] >= threshold
            if hit:
                fired += 1
    return (time.perf_counter() - started) / len(ticks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=300_000)
    parser.add_argument("--naive-ticks", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    symbols = [f"SYM{i:02d}-USD" for i in range(args.symbols)]
    opening = opening_prices(rng, symbols)

    tracemalloc.start()
    specs = build_specs(rng, args.alerts, opening)
    spec_bytes = tracemalloc.get_traced_memory()[0]
    engine = build(specs)
    engine_bytes = tracemalloc.get_traced_memory()[0] - spec_bytes
    del engine
    gc.collect()
    # The fixed part, apart: each symbol's price history (one alert per symbol here).
    before = tracemalloc.get_traced_memory()[0]
    engine = build(specs[: args.symbols])
    fixed_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del engine
    gc.collect()
    ticks = build_ticks(rng, args.ticks, opening)

    started = time.perf_counter()
    engine = build(specs)
    build_s = time.perf_counter() - started
    print(
        f"{args.alerts:,} alerts over {args.symbols} symbols: build {build_s:.2f} s "
        f"({build_s / args.alerts * 1e6:.2f} µs per add); memory per alert: engine "
        f"{(engine_bytes - fixed_bytes) / (args.alerts - args.symbols):.0f} B, spec "
        f"{spec_bytes / args.alerts:.0f} B; per symbol (price history) "
        f"{fixed_bytes / args.symbols / 2**20:.2f} MiB"
    )

    on_tick = engine.on_tick
    rates = []
    fired = 0
    size = len(ticks) // args.runs
    for run in range(args.runs):
        chunk = ticks[run * size : (run + 1) * size]
        started = time.perf_counter()
        for symbol, price, ts in chunk:
            fired += len(on_tick(symbol, price, ts))
        rates.append(len(chunk) / (time.perf_counter() - started))
    rate = statistics.median(rates)
    print(
        f"engine: median {rate:>10,.0f} ticks/s ({1e6 / rate:.1f} µs/tick; runs: "
        f"{', '.join(f'{r:,.0f}' for r in rates)}); {fired:,} firings over "
        f"{size * args.runs:,} ticks ({fired / (size * args.runs):.3f} per tick), "
        f"{len(engine):,} alerts left"
    )
    per_tick = naive_cost(specs, ticks[: args.naive_ticks])
    print(
        f"naive scan: {per_tick * 1e3:.2f} ms/tick ({1 / per_tick:,.1f} ticks/s, "
        f"{args.naive_ticks} ticks); engine / naive: {rate * per_tick:,.0f}x"
    )


if __name__ == "__main__":
    main()
