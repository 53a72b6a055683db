"""SimulatorProvider: determinism, plausible values, per-symbol time order and pacing.

Also the provider factory, which picks every provider by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from coinlink.market.providers import PROVIDER_NAMES, create_provider
from coinlink.market.providers.binance import BinanceProvider
from coinlink.market.providers.coinbase import CoinbaseProvider
from coinlink.market.providers.replay import SAMPLE_PATH, ReplayProvider
from coinlink.market.providers.simulator import SimulatorProvider
from coinlink.market.types import Tick

pytestmark = pytest.mark.timeout(60)

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD", "ETH-BTC", "ZZTOP-USD"]
START = 1_717_200_000_000


def make(seed: int = 42, symbols: list[str] | None = None, rate: float = 5.0) -> SimulatorProvider:
    return SimulatorProvider(symbols or SYMBOLS, ticks_per_second=rate, seed=seed, start_ms=START)


def test_same_seed_gives_identical_ticks() -> None:
    assert make().generate(2000) == make().generate(2000)


def test_different_seed_gives_different_ticks() -> None:
    a, b = make(seed=1).generate(200), make(seed=2).generate(200)
    assert [t.price for t in a] != [t.price for t in b]
    assert [t.ts for t in a] != [t.ts for t in b]


def test_start_ms_fixes_the_timestamps() -> None:
    a = SimulatorProvider(["BTC-USD"], seed=1, start_ms=0).generate(50)
    b = SimulatorProvider(["BTC-USD"], seed=1, start_ms=1000).generate(50)
    assert [t.ts + 1000 for t in a] == [t.ts for t in b]
    assert [t.price for t in a] == [t.price for t in b]


def test_a_symbols_path_does_not_depend_on_the_other_symbols() -> None:
    alone = make(symbols=["BTC-USD"]).generate(100)
    mixed = [t for t in make(symbols=["ETH-USD", "BTC-USD"]).generate(400) if t.symbol == "BTC-USD"]
    assert mixed[:50] == alone[:50]


def test_generate_and_ticks_give_the_same_sequence() -> None:
    async def paced() -> list[Tick]:
        sim = make(rate=1000.0)
        out: list[Tick] = []
        async with contextlib.aclosing(sim.ticks()) as stream:
            async for tick in stream:
                out.append(tick)
                if len(out) == 60:
                    break
        return out

    assert asyncio.run(paced()) == make(rate=1000.0).generate(60)


def test_prices_volumes_and_quotes_are_plausible() -> None:
    ticks = make().generate(6000)
    assert {t.symbol for t in ticks} == set(SYMBOLS)
    for t in ticks:
        assert t.price.is_finite() and t.price > 0
        assert t.volume.is_finite() and t.volume > 0
        assert t.bid is not None and t.ask is not None
        assert t.bid < t.price < t.ask
        spread_bps = (t.ask - t.bid) / t.price * 10_000
        assert spread_bps < 40, t
        assert t.source == "simulator"


def test_starting_prices_are_realistic_and_deterministic() -> None:
    first: dict[str, Decimal] = {}
    for t in make().generate(200):
        first.setdefault(t.symbol, t.price)
    assert abs(first["BTC-USD"] / 67_000 - 1) < Decimal("0.01")
    assert abs(first["ETH-USD"] / 3_500 - 1) < Decimal("0.01")
    assert abs(first["SOL-USD"] / 150 - 1) < Decimal("0.01")
    assert abs(first["ETH-BTC"] / (Decimal(3_500) / 67_000) - 1) < Decimal("0.01")
    # An unknown asset: a deterministic start, whatever the seed.
    other = {t.symbol: t.price for t in reversed(make(seed=7).generate(200))}
    assert abs(other["ZZTOP-USD"] / first["ZZTOP-USD"] - 1) < Decimal("0.01")


def test_prices_are_quantized_per_price_level() -> None:
    decimals: dict[str, set[int]] = defaultdict(set)
    for t in make().generate(3000):
        exponent = t.price.as_tuple().exponent
        assert isinstance(exponent, int)
        decimals[t.symbol].add(-exponent)
    assert decimals["BTC-USD"] == {2}  # cents
    assert decimals["SOL-USD"] == {2}
    assert decimals["DOGE-USD"] == {5}  # 0.15234


def test_timestamps_strictly_increase_per_symbol_and_never_go_back() -> None:
    ticks = make(rate=200.0).generate(20_000)
    last: dict[str, int] = {}
    previous = START
    for t in ticks:
        assert t.ts > last.get(t.symbol, START - 1)
        assert t.ts >= previous
        last[t.symbol] = previous = t.ts


def test_simulated_rate_matches_ticks_per_second() -> None:
    ticks = make(symbols=["BTC-USD", "ETH-USD"], rate=5.0).generate(10_000)
    span_s = (ticks[-1].ts - START) / 1000
    assert 10_000 / span_s == pytest.approx(10.0, rel=0.05)


async def test_ticks_are_paced_by_the_wall_clock() -> None:
    # 2 symbols x 100/s: about 100 ticks in half a second; never ahead of their time.
    sim = SimulatorProvider(["BTC-USD", "ETH-USD"], ticks_per_second=100, seed=3, start_ms=0)
    window = 0.5
    arrivals: list[tuple[float, Tick]] = []
    async with contextlib.aclosing(sim.ticks()) as stream:
        started = time.monotonic()
        async for tick in stream:
            elapsed = time.monotonic() - started
            arrivals.append((elapsed, tick))
            if elapsed >= window:
                break
    for elapsed, tick in arrivals:
        assert tick.ts / 1000 <= elapsed + 0.02  # not early (a little timer slack allowed)
    due = sum(1 for t in make_twin().generate(400) if t.ts <= window * 1000)
    assert due * 0.5 <= len(arrivals) <= due + 10


def make_twin() -> SimulatorProvider:
    return SimulatorProvider(["BTC-USD", "ETH-USD"], ticks_per_second=100, seed=3, start_ms=0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="ticks_per_second"):
        SimulatorProvider(["BTC-USD"], ticks_per_second=0)
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        SimulatorProvider(["BTCUSD"])
    with pytest.raises(ValueError, match="at least one"):
        SimulatorProvider([])


def test_create_provider_by_name(tmp_path: Path) -> None:
    assert set(PROVIDER_NAMES) == {"simulator", "replay", "binance", "coinbase", "none"}
    assert create_provider("none", ["BTC-USD"]) is None
    sim = create_provider("Simulator", ["btc-usd"], seed=1, start_ms=0)
    assert isinstance(sim, SimulatorProvider) and sim.symbols == ["BTC-USD"]
    replay = create_provider("replay", ["BTC-USD"], path=SAMPLE_PATH, speed=0)
    assert isinstance(replay, ReplayProvider) and replay.symbols == {"BTC-USD"}
    binance = create_provider("binance", ["BTC-USDT"], ws_url="ws://127.0.0.1:1")
    assert isinstance(binance, BinanceProvider)
    coinbase = create_provider("coinbase", ["BTC-USD"], stall_timeout_s=2.0)
    assert isinstance(coinbase, CoinbaseProvider) and coinbase.stall_timeout_s == 2.0
    for provider in (sim, replay, binance, coinbase):
        assert provider.stats == {
            "malformed": 0,
            "dropped": 0,
            "gaps": 0,
            "reconnects": 0,
            "stalls": 0,
        }
    with pytest.raises(ValueError, match="unknown market provider"):
        create_provider("kraken", ["BTC-USD"])
    with pytest.raises(ValueError, match="no replay file"):
        create_provider("replay", [], path=tmp_path / "missing.csv")


def test_a_resumed_simulator_continues_from_the_given_prices_deterministically() -> None:
    """A new ingest leader resumes from the last published prices: no jump back to the
    table's start; the same seed and prices give the same path."""

    def resumed() -> list[Tick]:
        sim = make(symbols=["BTC-USD", "ETH-USD"])
        sim.resume({"BTC-USD": Decimal("12345.67"), "OTHER-USD": Decimal(1)})
        return sim.generate(400)

    ticks = resumed()
    assert ticks == resumed()
    btc = [t.price for t in ticks if t.symbol == "BTC-USD"]
    assert abs(btc[0] / Decimal("12345.67") - 1) < Decimal("0.001")
    assert all(abs(price / Decimal("12345.67") - 1) < Decimal("0.05") for price in btc)
    # A symbol without a published price starts from the table, as before.
    eth = next(t.price for t in ticks if t.symbol == "ETH-USD")
    assert eth == next(t.price for t in make(symbols=["ETH-USD"]).generate(10))
