"""A deterministic market simulator: geometric Brownian motion per symbol.

Design:

* **Determinism.** Every value comes from seeded ``random.Random`` instances and every
  timestamp from ``start_ms`` plus simulated time, never from the wall clock: the same
  ``seed``, ``symbols`` and ``start_ms`` give exactly the same ticks, whether they are read
  with :meth:`SimulatorProvider.generate` (no sleeping) or paced by ``ticks()``. Each symbol
  has its own generator (seeded from ``seed`` and the symbol), so a symbol's path does not
  change when another symbol is added to the list; only the interleaving does.
* **Arrivals.** Each symbol's ticks form a Poisson process of ``ticks_per_second``
  (exponential gaps), merged in time order; timestamps are integer milliseconds, strictly
  increasing per symbol (two ticks of one symbol never share a millisecond) and never
  decreasing across symbols.
* **Prices.** The mid follows GBM with zero drift and a per-asset annualised volatility
  (``dt`` is the simulated time since that symbol's previous tick). Starting prices are
  realistic for well-known assets (BTC ~67,000, ETH ~3,500, SOL ~150, ...) and quoted in
  the pair's quote currency (ETH-BTC ~0.052); an unknown asset gets a deterministic
  pseudo-random price, volatility and spread from a CRC of its name (``hash()`` is salted
  per process, so it would break determinism). A new ingest leader :meth:`resumes
  <SimulatorProvider.resume>` from the last published prices instead: the market does
  not jump back at a hand-over, and the same seed and start prices give the same path.
* **Precision.** Prices are quantized to a tick size of about five significant digits,
  never coarser than 0.01 (67,012.34; 3,501.27; 150.12; 0.15234: :mod:`~coinlink.market.
  precision`, which ``/assets`` reports too) and sizes to a step that
  is about a hundredth of a dollar of the base asset (BTC 8 decimals, DOGE 3).
* **Quotes.** bid < price < ask with a spread of a few basis points around the mid (the
  trade prints at the mid), at least one tick on each side.
* **Volumes.** Log-normal trade notionals around a per-asset typical size: mostly small
  trades with an occasional large one.
* **Pacing.** ``ticks()`` sleeps until the wall-clock time that corresponds to each tick's
  simulated time. If the consumer falls more than a second behind, the schedule is moved
  rather than replayed in a burst; that changes when ticks are delivered, never their values.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
import zlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Final

from coinlink.market.precision import price_step
from coinlink.market.providers.base import Provider, normalize_symbols
from coinlink.market.types import Tick
from coinlink.wire import now_ms

# Rough USD prices; stablecoins and fiat make quote currencies work (ETH-BTC, BTC-EUR).
_USD_PRICE: Final[dict[str, float]] = {
    "BTC": 67_000.0,
    "ETH": 3_500.0,
    "SOL": 150.0,
    "BNB": 580.0,
    "XRP": 0.52,
    "ADA": 0.45,
    "DOGE": 0.15,
    "AVAX": 35.0,
    "DOT": 7.0,
    "LINK": 15.0,
    "LTC": 80.0,
    "MATIC": 0.7,
    "TRX": 0.12,
    "USD": 1.0,
    "USDT": 1.0,
    "USDC": 1.0,
    "DAI": 1.0,
    "FDUSD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
}
# Annualised volatility (fiat and stablecoins barely move).
_VOLATILITY: Final[dict[str, float]] = {
    "BTC": 0.55,
    "ETH": 0.70,
    "SOL": 0.95,
    "BNB": 0.60,
    "XRP": 0.85,
    "ADA": 0.85,
    "DOGE": 1.00,
    "AVAX": 0.95,
    "DOT": 0.85,
    "LINK": 0.85,
    "LTC": 0.75,
    "USD": 0.0,
    "USDT": 0.005,
    "USDC": 0.005,
    "DAI": 0.01,
    "FDUSD": 0.01,
    "EUR": 0.07,
    "GBP": 0.08,
}
# Typical quoted spread in basis points of the mid.
_SPREAD_BPS: Final[dict[str, float]] = {"BTC": 1.0, "ETH": 1.5, "SOL": 3.0, "BNB": 2.0}
# Typical trade notional in USD (the median of the log-normal).
_TYPICAL_NOTIONAL_USD: Final[dict[str, float]] = {"BTC": 2_500.0, "ETH": 1_500.0, "SOL": 800.0}
_DEFAULT_SPREAD_BPS: Final = 4.0
_DEFAULT_NOTIONAL_USD: Final = 400.0
_NOTIONAL_SIGMA: Final = 1.1
_MS_PER_YEAR: Final = 365.25 * 24 * 3600 * 1000
_MAX_TICKS_PER_SECOND: Final = 1000.0  # one tick per symbol per millisecond at most
_MAX_LAG_S: Final = 1.0


def _unit(name: str, salt: str) -> float:
    """A deterministic number in [0, 1) for ``name`` (stable across processes)."""
    return zlib.crc32(f"{salt}:{name}".encode()) / 2**32


def _usd_price(asset: str) -> float:
    if asset in _USD_PRICE:
        return _USD_PRICE[asset]
    return float(10 ** (-2 + 4.7 * _unit(asset, "price")))  # 0.01 ... 500


def _volatility(asset: str) -> float:
    if asset in _VOLATILITY:
        return _VOLATILITY[asset]
    return 0.5 + 0.7 * _unit(asset, "vol")


def _size_step(base_usd: float) -> Decimal:
    """A size step worth roughly a hundredth of a dollar (BTC 1e-8, ETH 1e-7, DOGE 1e-3)."""
    decimals = min(8, max(0, math.floor(math.log10(base_usd)) + 4))
    return Decimal(1).scaleb(-decimals)


@dataclass(slots=True)
class _Walk:
    """The state of one symbol's random walk."""

    symbol: str
    rng: random.Random
    mid: float
    volatility: float  # annualised
    spread_bps: float
    notional_quote: float  # median trade notional in quote currency
    quote_usd: float
    next_ms: float  # simulated time of the next tick (fractional ms)
    last_ts: int


class SimulatorProvider(Provider):
    """Deterministic GBM ticks for ``symbols``; see the module docstring."""

    name = "simulator"

    def __init__(
        self,
        symbols: list[str],
        ticks_per_second: float = 5.0,
        seed: int = 42,
        start_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ticks_per_second`` is per symbol; ``clock`` (seconds) only paces ``ticks()``;
        ``start_ms`` defaults to the wall-clock time at construction."""
        super().__init__()
        if not 0 < ticks_per_second <= _MAX_TICKS_PER_SECOND:
            raise ValueError(f"ticks_per_second must be in (0, {_MAX_TICKS_PER_SECOND:g}]")
        self.symbols = normalize_symbols(symbols)
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        self.ticks_per_second = ticks_per_second
        self.seed = seed
        self.start_ms = now_ms() if start_ms is None else start_ms
        self._clock = clock
        self._now_ms = self.start_ms  # simulated time of the last tick handed out
        self._walks = [self._new_walk(symbol) for symbol in self.symbols]
        # (time of next tick, index): the index breaks ties deterministically.
        self._queue = [(walk.next_ms, i) for i, walk in enumerate(self._walks)]
        heapq.heapify(self._queue)

    def _new_walk(self, symbol: str) -> _Walk:
        base, quote = symbol.split("-")
        # A string seed is hashed with SHA-512 by random.Random: stable across processes.
        rng = random.Random(f"{self.seed}:{symbol}")  # noqa: S311 - simulation, not security
        base_usd, quote_usd = _usd_price(base), _usd_price(quote)
        volatility = math.hypot(_volatility(base), _volatility(quote))
        spread = _SPREAD_BPS.get(base, _DEFAULT_SPREAD_BPS + 4 * _unit(base, "spread"))
        notional_usd = _TYPICAL_NOTIONAL_USD.get(base, _DEFAULT_NOTIONAL_USD)
        first = self.start_ms + rng.expovariate(self.ticks_per_second) * 1000
        return _Walk(
            symbol=symbol,
            rng=rng,
            mid=base_usd / quote_usd,
            volatility=max(volatility, 0.001),
            spread_bps=spread,
            notional_quote=notional_usd / quote_usd,
            quote_usd=quote_usd,
            next_ms=first,
            last_ts=self.start_ms - 1,
        )

    def resume(self, prices: dict[str, Decimal]) -> None:
        """Start each symbol in ``prices`` from its price instead of the table's."""
        for walk in self._walks:
            price = prices.get(walk.symbol)
            if price is not None and price.is_finite() and price > 0:
                walk.mid = float(price)

    def _step(self) -> Tick:
        _, index = heapq.heappop(self._queue)
        walk = self._walks[index]
        rng = walk.rng
        ts = int(walk.next_ms)  # > last_ts: the queued time was kept a whole ms ahead
        dt_years = (ts - max(walk.last_ts, self.start_ms)) / _MS_PER_YEAR
        sigma = walk.volatility
        walk.mid *= math.exp(
            -0.5 * sigma * sigma * dt_years + sigma * math.sqrt(dt_years) * rng.gauss(0.0, 1.0)
        )
        walk.last_ts = ts

        step = price_step(walk.mid)
        # Never let a price round to zero (a sub-step mid after an extreme walk).
        price = max(Decimal(walk.mid).quantize(step, ROUND_HALF_EVEN), 2 * step)
        half = walk.mid * walk.spread_bps / 20_000 * (0.6 + 0.8 * rng.random())
        bid = min(Decimal(walk.mid - half).quantize(step, ROUND_FLOOR), price - step)
        ask = max(Decimal(walk.mid + half).quantize(step, ROUND_CEILING), price + step)

        size_step = _size_step(walk.mid * walk.quote_usd)
        notional = walk.notional_quote * rng.lognormvariate(0.0, _NOTIONAL_SIGMA)
        volume = max(Decimal(notional / walk.mid).quantize(size_step, ROUND_HALF_EVEN), size_step)

        # At least a millisecond later, decided *before* queueing, so the heap order is the
        # order of the integer timestamps and they never go back across symbols either.
        walk.next_ms = max(walk.next_ms + rng.expovariate(self.ticks_per_second) * 1000, ts + 1)
        heapq.heappush(self._queue, (walk.next_ms, index))
        self._now_ms = ts
        return Tick(
            symbol=walk.symbol,
            price=price,
            volume=volume,
            ts=ts,
            bid=bid if bid > 0 else None,
            ask=ask,
            source=self.name,
        )

    def generate(self, n: int) -> list[Tick]:
        """The next ``n`` ticks at once, without sleeping (continues where ``ticks()`` is)."""
        return [self._step() for _ in range(n)]

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        """The same sequence as ``generate``, delivered at the simulated rate."""
        anchor_ms = self._now_ms
        anchor_s = self._clock()
        while True:
            tick = self._step()
            delay = anchor_s + (tick.ts - anchor_ms) / 1000 - self._clock()
            if delay < -_MAX_LAG_S:
                # Far behind (a slow consumer, a paused process): move the schedule instead
                # of delivering the backlog in a burst.
                anchor_s -= delay
                delay = 0.0
            # sleep(0) still yields to the loop when ticks are due back to back.
            await asyncio.sleep(max(delay, 0.0))
            yield tick
