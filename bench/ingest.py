"""Ticks per second through the ingest pipeline on one core, publishing included.

What the ingest leader's ``Ingest._process`` does, without the queue and the provider: the
ticks of a batch go through ``Pipeline.apply`` (validation, rolling 24 h ticker, candles
for every interval, the ``ingest_ticks_total`` counter), then ``Pipeline.take_messages``
renders what changed (closed candles, each touched symbol's ticker and current candles) and
one ``bus.publish_many`` sends it. Once a second of wall time the leader's periodic work is
done too: ``flush_quiet``, the ``tickers`` snapshot publish and the heartbeat. Closed
candles are counted, not written to the database (the leader writes them in batches of
500 or once a second: a few rows a minute per symbol).

Ticks come from ``SimulatorProvider.generate`` (10 symbols, deterministic, the same stream
in every run), generated before each run outside the timed section with timestamps ending
now. At the default 100 simulated ticks/s per symbol, 200,000 ticks span about 200 s, so
every run crosses a few minute boundaries and closes candles; the validator's maximum tick
age is therefore raised to the stream's span + 30 s (printed; the default is 60 s, which a
stream shorter than 30 s, e.g. ``--rate 1000``, keeps). Every other rule is the default.
Prometheus runs in multi-process mode as in ``coinlink serve`` (a temporary directory).
Runs alternate between a RedisBus (unique key prefix, deleted at the end) and the
in-process MemoryBus; the median of ``--runs`` runs is reported for each. Nobody subscribes
to the channels here: the cost of every worker's market view reading them is not included.

    .venv/bin/python -m bench.ingest [--ticks 200000] [--batch 2000] [--runs 3] [--rate 100]
        [--redis-url redis://127.0.0.1:6379/0 | --no-redis]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coinlink.bus import Bus
    from coinlink.market.types import Tick

SYMBOLS = [
    f"{base}-USD"
    for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "LTC")
]
SEED = 7
DEFAULT_MAX_AGE_MS = 60_000  # TickValidator's default, and COINLINK_INGEST_MAX_TICK_AGE_S's


def stream_span_ms(ticks: int, rate: float) -> int:
    """Simulated time from the first to the last tick (it does not depend on start_ms)."""
    from coinlink.market.providers.simulator import SimulatorProvider

    generated = SimulatorProvider(SYMBOLS, rate, SEED, start_ms=0).generate(ticks)
    return generated[-1].ts - generated[0].ts


def fresh_ticks(ticks: int, rate: float, span_ms: int) -> list[Tick]:
    """The benchmark's stream, its last tick stamped now."""
    from coinlink.market.providers.simulator import SimulatorProvider
    from coinlink.wire import now_ms

    first_gap = SimulatorProvider(SYMBOLS, rate, SEED, start_ms=0).generate(1)[0].ts
    start_ms = now_ms() - span_ms - first_gap
    return SimulatorProvider(SYMBOLS, rate, SEED, start_ms=start_ms).generate(ticks)


async def run_once(bus: Bus, ticks: list[Tick], batch: int, max_age_ms: int) -> dict[str, float]:
    """One pass over ``ticks``, as the leader would process them; timings in seconds."""
    import orjson

    from coinlink.channels import INGEST_HEARTBEAT_KEY
    from coinlink.market.ingest import DROPPED, FLUSH_GRACE_MS, TICKS
    from coinlink.market.pipeline import Pipeline
    from coinlink.market.tick_validator import TickValidator
    from coinlink.market.types import INTERVALS
    from coinlink.wire import now_ms

    pipeline = Pipeline(SYMBOLS, TickValidator(symbols=set(SYMBOLS), max_age_ms=max_age_ms))
    apply = pipeline.apply
    timers = {"apply": 0.0, "render": 0.0, "publish": 0.0, "every_second": 0.0}
    messages_sent = dropped = 0
    closed_by_interval = dict.fromkeys(INTERVALS, 0)
    perf = time.perf_counter
    started = perf()
    next_second = time.monotonic() + 1.0
    for offset in range(0, len(ticks), batch):
        t0 = perf()
        for tick in ticks[offset : offset + batch]:
            reason = apply(tick)
            if reason is None:
                TICKS.inc()
            else:
                DROPPED.labels(reason).inc()
                dropped += 1
        at = now_ms()
        t1 = perf()
        if time.monotonic() >= next_second:
            next_second = time.monotonic() + 1.0
            pipeline.flush_quiet(at - FLUSH_GRACE_MS)
            await bus.publish("tickers", orjson.dumps(pipeline.snapshots(at)))
            heartbeat = {"holder": "bench", "fencing_token": 1, "at": at, "newest_tick": at}
            await bus.set(INGEST_HEARTBEAT_KEY, orjson.dumps(heartbeat), ttl_s=15)
        t2 = perf()
        messages, closed = pipeline.take_messages(at)
        t3 = perf()
        await bus.publish_many(messages)
        t4 = perf()
        timers["apply"] += t1 - t0
        timers["every_second"] += t2 - t1
        timers["render"] += t3 - t2
        timers["publish"] += t4 - t3
        messages_sent += len(messages)
        for candle in closed:
            closed_by_interval[candle.interval] += 1
    elapsed = perf() - started
    if dropped:
        raise SystemExit(f"{dropped} ticks dropped by validation: the benchmark's stream is wrong")
    return {
        "ticks_s": len(ticks) / elapsed,
        "messages_s": messages_sent / elapsed,
        "messages": messages_sent,
        "closed": sum(closed_by_interval.values()),
        **{f"closed_{interval}": count for interval, count in closed_by_interval.items()},
        "elapsed": elapsed,
        **{f"{name}_share": spent / elapsed for name, spent in timers.items()},
        **{f"{name}_us": spent / len(ticks) * 1e6 for name, spent in timers.items()},
    }


async def delete_prefix(bus: Any, prefix: str) -> int:
    deleted = 0
    keys = [key async for key in bus.redis.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 500):
        deleted += await bus.redis.unlink(*keys[start : start + 500])
    return deleted


def describe(f: dict[str, float]) -> str:
    by_interval = ", ".join(
        f"{key[7:]} {value:.0f}" for key, value in f.items() if key.startswith("closed_") and value
    )
    return (
        f"{f['ticks_s']:>9,.0f} ticks/s  {f['messages_s']:>7,.0f} msg/s  "
        f"apply {f['apply_share']:4.0%} ({f['apply_us']:.2f} us/tick)  "
        f"render {f['render_share']:4.0%}  publish {f['publish_share']:4.0%} "
        f"({f['publish_us']:.2f} us/tick)  per-second {f['every_second_share']:4.0%}  "
        f"closed candles {f['closed']:.0f}" + (f" ({by_interval})" if by_interval else "")
    )


async def bench(args: argparse.Namespace) -> None:
    from coinlink.bus import MemoryBus, RedisBus

    span_ms = stream_span_ms(args.ticks, args.rate)
    # Oldest tick at the end of a run: span + generation (~2 s) + the run itself (~1 s);
    # only a stream longer than about 30 s needs more than the default.
    max_age_ms = max(DEFAULT_MAX_AGE_MS, span_ms + 30_000)
    print(
        f"{args.ticks:,} simulator ticks over {len(SYMBOLS)} symbols, {args.rate:g} ticks/s "
        f"per symbol simulated (a {span_ms / 1000:.1f} s stream ending now), batches of "
        f"{args.batch}, validator max age {max_age_ms / 1000:.0f} s"
        + ("" if max_age_ms == DEFAULT_MAX_AGE_MS else " (raised from the default 60 s)")
    )
    buses: dict[str, Bus] = {"memory": MemoryBus()}
    prefix = f"bench-ingest-{secrets.token_hex(4)}:"
    if args.redis_url:
        buses["redis"] = RedisBus(args.redis_url, prefix=prefix)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in buses}
    try:
        for bus in buses.values():
            await bus.start()
            await bus.ping()
        for run_no in range(1, args.runs + 1):
            for name, bus in buses.items():
                ticks = fresh_ticks(args.ticks, args.rate, span_ms)
                figures = await run_once(bus, ticks, args.batch, max_age_ms)
                results[name].append(figures)
                print(f"run {run_no} {name:6s} {describe(figures)}")
    finally:
        if "redis" in buses:
            deleted = await delete_prefix(buses["redis"], prefix)
            print(f"redis: deleted {deleted} keys under {prefix!r}")
        for bus in buses.values():
            await bus.close()
    print("\nmedians")
    for name, rows in results.items():
        median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"  {name:6s} {describe(median)}")
        runs = ", ".join(f"{r['ticks_s']:,.0f}" for r in rows)
        print(
            f"         runs: {runs} ticks/s; "
            f"{median['messages'] / args.ticks * args.batch:.0f} messages per batch of "
            f"{args.batch}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000, help="ticks per publish (leader max)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="simulated ticks/s per symbol")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", dest="redis_url", action="store_const", const=None)
    args = parser.parse_args()
    # As in `coinlink serve`: metrics in multi-process mode (set before prometheus_client
    # is first imported; every coinlink import above is deferred for that reason).
    made = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-ingest-")
    try:
        import uvloop  # the event loop Sanic runs the leader on

        uvloop.run(bench(args))
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()
