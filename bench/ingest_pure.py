"""Ticks per second through the pure ingest stages: validator, candles, rolling ticker.

Ten symbols, round robin, realistic ticks (small random-walk moves, a bid/ask on every
tick, about a third pure quotes with volume 0), timestamps spread over the last 20 s of
wall time so the validator's default wall clock accepts them. Ticks are built in chunks
outside the timed sections; a run stops after ``--ticks`` ticks or ``--seconds`` of timed
work, whichever comes first. Prints the median of ``--runs`` runs, without and with a
rendered ticker snapshot after every tick (what a per-tick WebSocket update costs).

    .venv/bin/python -m bench.ingest_pure [--ticks 1000000] [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from decimal import Decimal

from coinlink.market.candles import CandleBuilder
from coinlink.market.tick_validator import TickValidator
from coinlink.market.ticker import TickerState
from coinlink.market.types import Tick
from coinlink.wire import now_ms

SYMBOLS = [
    f"{base}-USD"
    for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "AVAX", "LINK")
]
CHUNK = 100_000
POOL = 5_000
SPAN_MS = 20_000  # the whole run's ticks fit in the last 20 s


def price_pools(rng: random.Random) -> dict[str, list[tuple[Decimal, Decimal, Decimal]]]:
    """Per symbol: (price, bid, ask) along a random walk, walked there and back (no jumps)."""
    pools = {}
    for symbol in SYMBOLS:
        p = rng.uniform(0.5, 60_000)
        walk = []
        for _ in range(POOL):
            p *= 1 + rng.uniform(-0.0005, 0.0005)
            price = Decimal(f"{p:.2f}") if p >= 1 else Decimal(f"{p:.6f}")
            spread = price.scaleb(-4)
            walk.append((price, price - spread, price + spread))
        pools[symbol] = walk + walk[::-1]
    return pools


def chunk(
    start: int,
    base_ts: int,
    pools: dict[str, list[tuple[Decimal, Decimal, Decimal]]],
    volumes: list[Decimal],
    total: int,
) -> list[Tick]:
    out = []
    for i in range(start, start + CHUNK):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        pool = pools[symbol]
        price, bid, ask = pool[(i // len(SYMBOLS)) % len(pool)]
        out.append(
            Tick(symbol, price, volumes[i % len(volumes)], base_ts + i * SPAN_MS // total, bid, ask)
        )
    return out


def run(total: int, seconds: float, snapshot: bool, seed: int) -> float:
    rng = random.Random(seed)
    pools = price_pools(rng)
    volumes = [
        Decimal(0) if rng.random() < 0.3 else Decimal(f"{rng.uniform(0, 5):.4f}")
        for _ in range(997)
    ]
    validator = TickValidator(symbols=SYMBOLS)
    builders = {s: CandleBuilder(s) for s in SYMBOLS}
    tickers = {s: TickerState(s) for s in SYMBOLS}
    base_ts = now_ms() - SPAN_MS
    done = 0
    spent = 0.0
    dropped = 0
    while done < total and spent < seconds:
        ticks = chunk(done, base_ts, pools, volumes, total)
        check = validator.check
        started = time.perf_counter()
        if snapshot:
            for t in ticks:
                if check(t) is None:
                    builders[t.symbol].add(t)
                    ticker = tickers[t.symbol]
                    ticker.add(t)
                    ticker.snapshot(t.ts)
                else:
                    dropped += 1
        else:
            for t in ticks:
                if check(t) is None:
                    builders[t.symbol].add(t)
                    tickers[t.symbol].add(t)
                else:
                    dropped += 1
        spent += time.perf_counter() - started
        done += len(ticks)
    if dropped:
        raise SystemExit(f"{dropped} ticks dropped: the benchmark's stream is wrong")
    return done / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for label, snapshot in (
        ("validate + candles + ticker", False),
        ("... + ticker snapshot per tick", True),
    ):
        rates = [run(args.ticks, args.seconds, snapshot, seed) for seed in range(args.runs)]
        print(
            f"{label:32s} median {statistics.median(rates):>10,.0f} ticks/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )


if __name__ == "__main__":
    main()
