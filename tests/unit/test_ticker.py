"""TickerState: rolling-window statistics against a brute-force reference, and decimal_str.

The reference uses the module's documented window definition on raw ticks: a tick counts at
``now`` when ``ts - ts % bucket_ms > now - window_ms``. So the comparison is exact, and the
bucket precision trade-off is pinned down by explicit tests rather than tolerated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinlink.market.ticker import TickerState, TickerStats
from coinlink.market.types import Tick
from coinlink.wire import decimal_str

D = Decimal
SYMBOL = "BTC-USD"
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_710_028_800_000  # 2024-03-10 00:00:00 UTC


def tick(
    ts: int,
    price: str | Decimal = "100",
    volume: str | Decimal = "1",
    bid: str | Decimal | None = None,
    ask: str | Decimal | None = None,
) -> Tick:
    return Tick(
        symbol=SYMBOL,
        price=D(price),
        volume=D(volume),
        ts=ts,
        bid=None if bid is None else D(bid),
        ask=None if ask is None else D(ask),
    )


def reference(ticks: list[Tick], now: int, window_ms: int, bucket_ms: int) -> TickerStats:
    """Brute force over raw ticks, with the documented window definition."""
    last = ticks[-1]
    inside = [t for t in ticks if t.ts - t.ts % bucket_ms > now - window_ms]
    if inside:
        open_ = inside[0].price
        high = max(t.price for t in inside)
        low = min(t.price for t in inside)
        volume = sum((t.volume for t in inside), D(0))
        quote = sum((t.price * t.volume for t in inside), D(0))
    else:
        open_ = high = low = last.price
        volume = quote = D(0)
    bids = [t.bid for t in ticks if t.bid is not None]
    asks = [t.ask for t in ticks if t.ask is not None]
    change = last.price - open_
    return TickerStats(
        symbol=SYMBOL,
        price=last.price,
        bid=bids[-1] if bids else None,
        ask=asks[-1] if asks else None,
        open_24h=open_,
        high_24h=high,
        low_24h=low,
        volume_24h=volume,
        quote_volume_24h=quote,
        change_24h=change,
        change_pct_24h=(change / open_ * 100).quantize(D("0.01"), ROUND_HALF_EVEN),
        ts=last.ts,
    )


# --- property: random streams against the reference ---------------------------------------

prices = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
volumes = st.one_of(st.just(D(0)), st.decimals(min_value=D(0), max_value=D(1000), places=4))
quotes = st.one_of(st.none(), prices)


@dataclass
class Scenario:
    window_ms: int
    bucket_ms: int
    steps: list[tuple[Tick, list[int]]]  # each tick, then the nows to snapshot at


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    window_ms, bucket_ms = draw(
        st.sampled_from([(DAY, MINUTE), (DAY, MINUTE), (10 * MINUTE, MINUTE), (5, 1)])
    )
    w, b = window_ms, bucket_ms
    gaps = st.one_of(
        st.integers(0, b),
        st.sampled_from([0, 1, b - 1, b, b + 1, w - b, w - 1, w, w + 1, w + b]),
        st.integers(0, w // 4),
        st.integers(0, w + 2 * b),
    )
    # Offsets of snapshot times from the last tick: a little behind it (exchange clock
    # ahead of ours, up to one bucket: the documented limit), around the window edge, later.
    offsets = st.one_of(
        st.integers(-b, b),
        st.integers(w - 2 * b, w + 2 * b),
        st.integers(0, 2 * w),
    )
    ts = draw(st.integers(T0 - DAY, T0 + DAY))
    if draw(st.booleans()):
        ts -= ts % b
    start = ts
    steps = []
    for gap, price, volume, bid, ask, nows in draw(
        st.lists(
            st.tuples(gaps, prices, volumes, quotes, quotes, st.lists(offsets, max_size=3)),
            min_size=1,
            max_size=60,
        )
    ):
        ts += gap
        steps.append((tick(ts, price, volume, bid, ask), [ts + o for o in nows]))
    if ts - start <= 2 * w:  # streams span more than two windows (> 48 h by default)
        ts = start + 2 * w + draw(st.integers(1, w))
        steps.append((tick(ts, draw(prices), draw(volumes)), [ts + draw(offsets)]))
    return Scenario(window_ms, bucket_ms, steps)


@settings(max_examples=250, deadline=None)
@given(scenario=scenarios())
def test_rolling_stats_match_the_brute_force_reference(scenario: Scenario) -> None:
    w, b = scenario.window_ms, scenario.bucket_ms
    state = TickerState(SYMBOL, window_ms=w, bucket_ms=b)
    seen: list[Tick] = []
    for t, nows in scenario.steps:
        state.add(t)
        seen.append(t)
        for now in nows:  # not monotonic: snapshots must not depend on earlier ones
            assert state.stats(now) == reference(seen, now, w, b), now - t.ts
        assert state.stats(t.ts) == reference(seen, t.ts, w, b)


def test_a_long_dense_stream_matches_the_reference() -> None:
    """Thousands of buckets: every sliding-window path (flips, evictions) many times over."""
    rng = random.Random(20_240_310)
    state = TickerState(SYMBOL)
    seen: list[Tick] = []
    ts = T0
    for i in range(2_500):
        ts += rng.choice([0, 1, 997, 30_000, MINUTE, 90_000, 7 * MINUTE, HOUR])
        price = D(rng.randint(9_000, 11_000)) / 100
        volume = D(rng.randint(0, 10_000)) / 1_000
        state.add(tick(ts, price, volume))
        seen.append(tick(ts, price, volume))
        if i % 7 == 0:
            now = ts + rng.choice([-MINUTE, -5_000, 0, 1, 59_999, HOUR, DAY - MINUTE, DAY, 2 * DAY])
            assert state.stats(now) == reference(seen, now, DAY, MINUTE)
    assert ts - T0 > 3 * DAY


# --- explicit cases -----------------------------------------------------------------------


def test_window_slides_past_the_open() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "100", "1"))
    s.add(tick(T0 + HOUR, "110", "2"))
    s.add(tick(T0 + 2 * HOUR, "90", "3"))
    st0 = s.stats(T0 + 2 * HOUR)
    assert (st0.open_24h, st0.high_24h, st0.low_24h) == (D(100), D(110), D(90))
    assert (st0.volume_24h, st0.quote_volume_24h) == (D(6), D(100 + 220 + 270))
    assert (st0.change_24h, st0.change_pct_24h) == (D(-10), D("-10.00"))

    st1 = s.stats(T0 + DAY + MINUTE)  # the 100 print left the window
    assert (st1.open_24h, st1.high_24h, st1.low_24h) == (D(110), D(110), D(90))
    assert (st1.volume_24h, st1.quote_volume_24h) == (D(5), D(490))
    assert (st1.change_24h, st1.change_pct_24h) == (D(-20), D("-18.18"))
    assert (st1.price, st1.ts) == (D(90), T0 + 2 * HOUR)


def test_high_and_low_drop_out_of_the_window() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "100"))
    s.add(tick(T0 + 10 * MINUTE, "150"))  # the high
    s.add(tick(T0 + 20 * MINUTE, "50"))  # the low
    s.add(tick(T0 + 12 * HOUR, "101"))
    s.add(tick(T0 + 23 * HOUR, "99"))
    assert (s.stats(T0 + 23 * HOUR).high_24h, s.stats(T0 + 23 * HOUR).low_24h) == (D(150), D(50))
    after_high = s.stats(T0 + DAY + 10 * MINUTE)
    assert (after_high.open_24h, after_high.high_24h, after_high.low_24h) == (D(50), D(101), D(50))
    after_low = s.stats(T0 + DAY + 20 * MINUTE)
    assert (after_low.open_24h, after_low.high_24h, after_low.low_24h) == (D(101), D(101), D(99))


def test_a_symbol_idle_for_more_than_a_day() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "100", "2", bid="99", ask="101"))
    s.add(tick(T0 + MINUTE, "120", "1"))
    idle = s.stats(T0 + MINUTE + 25 * HOUR)
    assert idle == TickerStats(
        symbol=SYMBOL,
        price=D(120),
        bid=D(99),
        ask=D(101),
        open_24h=D(120),
        high_24h=D(120),
        low_24h=D(120),
        volume_24h=D(0),
        quote_volume_24h=D(0),
        change_24h=D(0),
        change_pct_24h=D(0),
        ts=T0 + MINUTE,
    )
    # Trading resumes: the window holds only the new tick.
    s.add(tick(T0 + 2 * DAY, "130", "3"))
    back = s.stats(T0 + 2 * DAY)
    assert (back.open_24h, back.high_24h, back.low_24h, back.volume_24h) == (
        D(130),
        D(130),
        D(130),
        D(3),
    )


def test_the_window_edge_has_bucket_resolution() -> None:
    """A tick counts while its minute bucket starts after now - 24 h: exact at both ends."""
    s = TickerState(SYMBOL)
    s.add(tick(T0, "100", "1"))  # bucket [T0, T0 + 1 min)
    s.add(tick(T0 + MINUTE - 1, "100", "2"))  # same bucket, its last millisecond
    s.add(tick(T0 + 2 * HOUR, "100", "4"))
    assert s.stats(T0 + DAY - 1).volume_24h == D(7)  # bucket start T0 > now - 24 h
    # At now = T0 + 24 h the whole bucket leaves, including the tick only 23:59:00.001 old.
    assert s.stats(T0 + DAY).volume_24h == D(4)


def test_first_tick_is_the_open_until_a_day_has_passed() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0 + 5, "3", "1"))
    s.add(tick(T0 + HOUR, "4", "1"))
    got = s.stats(T0 + HOUR)
    assert (got.open_24h, got.change_24h, got.change_pct_24h) == (D(3), D(1), D("33.33"))


def test_ticks_slightly_in_the_future_count() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0 + 10 * MINUTE + 3_000, "100", "1.5"))
    got = s.stats(T0 + 10 * MINUTE)  # our clock 3 s behind the exchange
    assert (got.volume_24h, got.ts) == (D("1.5"), T0 + 10 * MINUTE + 3_000)


def test_bid_and_ask_are_the_last_seen_values() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "100"))
    assert (s.stats(T0).bid, s.stats(T0).ask) == (None, None)
    s.add(tick(T0 + 1, "100", bid="99.5", ask="100.5"))
    s.add(tick(T0 + 2, "100.2"))  # a trade without a quote keeps the quote
    s.add(tick(T0 + 3, "100.1", bid="99.9"))
    got = s.stats(T0 + 3)
    assert (got.bid, got.ask, got.price) == (D("99.9"), D("100.5"), D("100.1"))


def test_zero_volume_quotes_move_price_high_and_low_only() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "100", "1"))
    s.add(tick(T0 + 1, "130", "0"))
    got = s.stats(T0 + 1)
    assert (got.price, got.high_24h, got.volume_24h, got.quote_volume_24h) == (
        D(130),
        D(130),
        D(1),
        D(100),
    )


def test_late_ticks_are_ignored() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0 + 10, "100", "1"))
    s.add(tick(T0 + 5, "500", "9"))
    got = s.stats(T0 + 10)
    assert (got.price, got.high_24h, got.volume_24h) == (D(100), D(100), D(1))
    s.add(tick(T0 + 10, "101", "1"))  # an equal ts is in order
    assert s.stats(T0 + 10).price == D(101)


def test_memory_stays_bounded() -> None:
    s = TickerState(SYMBOL, window_ms=HOUR)
    for i in range(5_000):
        s.add(tick(T0 + i * MINUTE, "100", "1"))
        s.stats(T0 + i * MINUTE)
    kept = len(s._front_starts) - s._front_head + len(s._back_starts)
    assert kept <= 60 + 1
    assert len(s._front_starts) <= 2 * 60 + 2  # dropped entries are compacted
    assert s.stats(T0 + 4_999 * MINUTE).volume_24h == D(60)


def test_errors() -> None:
    s = TickerState(SYMBOL)
    with pytest.raises(LookupError):
        s.stats(T0)
    with pytest.raises(LookupError):
        s.snapshot(T0)
    with pytest.raises(ValueError):
        s.add(Tick(symbol="ETH-USD", price=D(1), volume=D(1), ts=T0))
    with pytest.raises(ValueError):
        TickerState(SYMBOL, window_ms=DAY, bucket_ms=7 * MINUTE)
    with pytest.raises(ValueError):
        TickerState(SYMBOL, bucket_ms=0)


# --- snapshot and rendering ---------------------------------------------------------------

# The ticker's wire shape (docs/api.md, the OpenAPI document).
CONTRACT_FIELDS = {
    *("symbol", "price", "bid", "ask", "open_24h", "high_24h", "low_24h", "volume_24h"),
    *("quote_volume_24h", "change_24h", "change_pct_24h", "ts", "seq", "stale"),
}


def test_snapshot_has_the_contract_fields_rendered() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "67000.00", "0.5", bid="66999.50", ask="67000.50"))
    s.add(tick(T0 + 1_000, "67012.3500", "0.25000000"))
    snap = s.snapshot(T0 + 1_000)
    assert set(snap) == CONTRACT_FIELDS - {"seq", "stale"}
    assert snap == {
        "symbol": "BTC-USD",
        "price": "67012.35",
        "bid": "66999.5",
        "ask": "67000.5",
        "open_24h": "67000",
        "high_24h": "67012.35",
        "low_24h": "67000",
        "volume_24h": "0.75",
        "quote_volume_24h": "50253.0875",
        "change_24h": "12.35",
        "change_pct_24h": "0.02",
        "ts": T0 + 1_000,
    }
    t = TickerState(SYMBOL)
    t.add(tick(T0, "1"))
    assert (t.snapshot(T0)["bid"], t.snapshot(T0)["change_pct_24h"]) == (None, "0")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("67012.3500", "67012.35"),
        ("0E-8", "0"),
        ("-0E-8", "0"),
        ("-0", "0"),
        ("1E+2", "100"),
        ("100", "100"),
        ("1.0", "1"),
        ("0.00000001", "0.00000001"),
        ("1E-12", "0.000000000001"),
        ("-12.50", "-12.5"),
        ("12345678901234567890123456789012.10", "12345678901234567890123456789012.1"),
    ],
)
def test_decimal_str(value: str, text: str) -> None:
    assert decimal_str(D(value)) == text


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_decimal_str_refuses_non_finite(value: str) -> None:
    with pytest.raises(ValueError):
        decimal_str(D(value))


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=-(10**30), max_value=10**30, allow_nan=False, allow_infinity=False))
def test_decimal_str_round_trips(d: Decimal) -> None:
    text = decimal_str(d)
    assert D(text) == d
    assert "E" not in text and "e" not in text
    assert text == "0" or not text.lstrip("-").startswith("0") or text.lstrip("-")[1] == "."
    if "." in text:
        assert not text.endswith("0") and not text.endswith(".")


def test_an_enormous_change_is_reported_not_raised() -> None:
    s = TickerState(SYMBOL)
    s.add(tick(T0, "1E-30"))
    s.add(tick(T0 + 1, "1E+30"))
    snap = s.snapshot(T0 + 1)
    assert snap["change_pct_24h"] == "1" + "0" * 62
