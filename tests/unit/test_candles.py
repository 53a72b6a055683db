"""CandleBuilder: properties over random tick streams, and the edge cases."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinlink.market.candles import CandleBuilder
from coinlink.market.types import INTERVALS, Candle, Tick

D = Decimal
SYMBOL = "BTC-USD"
MINUTE = 60_000
DAY = 86_400_000
T0 = 1_710_028_800_000  # 2024-03-10 00:00:00 UTC


def tick(ts: int, price: str | Decimal = "100", volume: str | Decimal = "1") -> Tick:
    return Tick(symbol=SYMBOL, price=D(price), volume=D(volume), ts=ts)


# --- strategies ---------------------------------------------------------------------------

prices = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
volumes = st.one_of(st.just(D(0)), st.decimals(min_value=D(0), max_value=D("1000"), places=4))
# Gaps mix bursts (same ms, same minute), edges (exactly one period) and long silences.
gaps = st.one_of(
    st.integers(0, 2_000),
    st.sampled_from([0, 1, MINUTE - 1, MINUTE, MINUTE + 1, 5 * MINUTE, 3_600_000]),
    st.integers(0, 20 * MINUTE),
    st.integers(0, 30 * 3_600_000),
)


@st.composite
def tick_streams(draw: st.DrawFn, max_size: int = 60) -> list[Tick]:
    # Start on a day boundary now and then so every interval's edges get hit.
    base = draw(st.integers(T0 - 5 * DAY, T0 + 5 * DAY))
    if draw(st.booleans()):
        base -= base % DAY
    ts = base + draw(st.sampled_from([0, -1, 1]))
    out = []
    for gap, price, volume in draw(
        st.lists(st.tuples(gaps, prices, volumes), min_size=1, max_size=max_size)
    ):
        ts += gap
        out.append(tick(ts, price, volume))
    return out


# --- reference ----------------------------------------------------------------------------


def reference(ticks: list[Tick], interval: str) -> list[Candle]:
    """Brute force: group ticks by aligned period; every period with a tick has a candle."""
    length = INTERVALS[interval]
    groups: dict[int, list[Tick]] = defaultdict(list)
    for t in ticks:
        groups[t.ts - t.ts % length].append(t)
    out = []
    for open_time in sorted(groups):
        g = groups[open_time]
        out.append(
            Candle(
                symbol=SYMBOL,
                interval=interval,
                open_time=open_time,
                close_time=open_time + length - 1,
                open=g[0].price,
                high=max(t.price for t in g),
                low=min(t.price for t in g),
                close=g[-1].price,
                volume=sum((t.volume for t in g), D(0)),
                trades=sum(1 for t in g if t.volume > 0),
                closed=True,
            )
        )
    return out


def run(ticks: list[Tick]) -> tuple[CandleBuilder, list[list[Candle]]]:
    b = CandleBuilder(SYMBOL)
    batches = [b.add(t) for t in ticks]
    return b, batches


def all_candles(b: CandleBuilder, closed: list[Candle], interval: str) -> list[Candle]:
    cur = b.current(interval)
    return [c for c in closed if c.interval == interval] + ([cur] if cur else [])


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(ticks=tick_streams())
def test_builder_matches_the_brute_force_reference(ticks: list[Tick]) -> None:
    b, batches = run(ticks)
    closed = [c for batch in batches for c in batch]
    for interval in INTERVALS:
        expected = reference(ticks, interval)
        expected[-1].closed = False  # the last period is still open: no later tick
        assert all_candles(b, closed, interval) == expected


@settings(max_examples=150, deadline=None)
@given(ticks=tick_streams())
def test_ohlc_ordering_and_exact_bounds(ticks: list[Tick]) -> None:
    b, batches = run(ticks)
    closed = [c for batch in batches for c in batch]
    for interval, length in INTERVALS.items():
        for c in all_candles(b, closed, interval):
            assert c.high >= max(c.open, c.close) >= min(c.open, c.close) >= c.low
            assert c.open_time % length == 0
            assert c.close_time == c.open_time + length - 1
            assert c.volume >= 0 and c.trades >= 0


@settings(max_examples=150, deadline=None)
@given(ticks=tick_streams())
def test_volumes_and_trades_add_up(ticks: list[Tick]) -> None:
    b, batches = run(ticks)
    closed = [c for batch in batches for c in batch]
    total = sum((t.volume for t in ticks), D(0))
    trades = sum(1 for t in ticks if t.volume > 0)
    for interval in INTERVALS:
        candles = all_candles(b, closed, interval)
        assert sum((c.volume for c in candles), D(0)) == total
        assert sum(c.trades for c in candles) == trades


@settings(max_examples=150, deadline=None)
@given(ticks=tick_streams())
def test_closed_candles_come_once_in_order_from_the_tick_that_crossed(
    ticks: list[Tick],
) -> None:
    b = CandleBuilder(SYMBOL)
    order = list(INTERVALS)
    seen: dict[str, list[int]] = defaultdict(list)
    for t in ticks:
        before = {i: b.current(i) for i in INTERVALS}
        batch = b.add(t)
        assert [c.interval for c in batch] == sorted(
            {c.interval for c in batch}, key=order.index
        )  # interval order, at most one each
        for c in batch:
            assert c.closed
            assert c.close_time < t.ts  # this tick crossed its boundary...
            running = before[c.interval]  # ...of the candle that was running
            assert running is not None and c == replace(running, closed=True)
            seen[c.interval].append(c.open_time)
        for i, prev in before.items():
            cur = b.current(i)
            assert prev is None or cur is not None
            if prev is not None and cur is not None and prev.open_time == cur.open_time:
                assert all(c.interval != i for c in batch)
    for interval in INTERVALS:
        opens = seen[interval]
        assert opens == sorted(set(opens))  # strictly increasing: once each, in order
        cur = b.current(interval)
        assert cur is not None and not cur.closed
        assert all(o < cur.open_time for o in opens)
        # Every period but the current one was closed.
        assert len(opens) == len(reference(ticks, interval)) - 1


@settings(max_examples=150, deadline=None)
@given(
    ticks=tick_streams(),
    flush_points=st.lists(st.tuples(st.integers(0, 200), st.floats(0, 1)), max_size=10),
)
def test_flush_closes_quiet_candles_exactly_once(
    ticks: list[Tick], flush_points: list[tuple[int, float]]
) -> None:
    """Flushes at times between ticks: nothing lost, nothing closed twice, nothing early."""
    at = defaultdict(list)
    for index, frac in flush_points:
        at[index % len(ticks)].append(frac)
    b = CandleBuilder(SYMBOL)
    emitted: list[Candle] = []
    for i, t in enumerate(ticks):
        emitted += b.add(t)
        nxt = ticks[i + 1].ts if i + 1 < len(ticks) else t.ts + 2 * DAY
        for frac in sorted(at.get(i, [])):
            now = t.ts + int((nxt - t.ts) * frac)  # not past the next tick
            out = b.flush(now)
            assert all(c.closed and c.close_time < now for c in out)
            emitted += out
            for interval in INTERVALS:
                cur = b.current(interval)
                assert cur is None or cur.close_time >= now
    for interval in INTERVALS:
        mine = [c for c in emitted if c.interval == interval]
        assert [c.open_time for c in mine] == sorted({c.open_time for c in mine})
        cur = b.current(interval)
        expected = reference(ticks, interval)
        if cur is not None:
            expected[-1].closed = False
        assert mine + ([cur] if cur else []) == expected
    # A flush far in the future closes whatever is left, and only once.
    final = b.flush(ticks[-1].ts + 2 * DAY)
    assert all(b.current(i) is None for i in INTERVALS)
    assert b.flush(ticks[-1].ts + 3 * DAY) == []
    assert len({(c.interval, c.open_time) for c in emitted + final}) == len(emitted + final)


# --- explicit cases -----------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "length"), list(INTERVALS.items()))
def test_boundaries_are_exact_to_the_millisecond(interval: str, length: int) -> None:
    b = CandleBuilder(SYMBOL, intervals=(interval,))
    open_time = T0 + 7 * length if length < DAY else T0
    assert b.add(tick(open_time, "10")) == []
    assert b.add(tick(open_time + length - 1, "11")) == []  # last ms: same candle
    cur = b.current(interval)
    assert cur is not None
    assert (cur.open_time, cur.close_time) == (open_time, open_time + length - 1)
    assert (cur.open, cur.close, cur.trades) == (D(10), D(11), 2)

    closed = b.add(tick(open_time + length, "12"))  # first ms of the next candle
    assert [(c.open_time, c.close, c.closed) for c in closed] == [(open_time, D(11), True)]
    cur = b.current(interval)
    assert cur is not None
    assert (cur.open_time, cur.open, cur.trades) == (open_time + length, D(12), 1)


def test_a_tick_one_ms_before_a_boundary_belongs_to_the_earlier_candle() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1m",))
    b.add(tick(T0 - 1))
    cur = b.current("1m")
    assert cur is not None and cur.open_time == T0 - MINUTE


def test_daily_candles_start_at_midnight_utc() -> None:
    b = CandleBuilder(SYMBOL)
    ts = int(datetime(2024, 3, 10, 13, 45, 12, 345_000, tzinfo=UTC).timestamp() * 1000)
    b.add(tick(ts))
    day = b.current("1d")
    four = b.current("4h")
    assert day is not None and four is not None
    assert datetime.fromtimestamp(day.open_time / 1000, UTC) == datetime(2024, 3, 10, tzinfo=UTC)
    assert datetime.fromtimestamp((day.close_time + 1) / 1000, UTC) == datetime(
        2024, 3, 11, tzinfo=UTC
    )
    assert datetime.fromtimestamp(four.open_time / 1000, UTC) == datetime(
        2024, 3, 10, 12, tzinfo=UTC
    )


def test_gaps_are_not_filled() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1m", "5m"))
    b.add(tick(T0 + 10, "100"))
    closed = b.add(tick(T0 + 17 * MINUTE + 5, "101"))  # 17 minutes later
    # One candle closed per interval, no invented empty candles for the silent minutes.
    assert [(c.interval, c.open_time) for c in closed] == [("1m", T0), ("5m", T0)]
    cur = b.current("1m")
    assert cur is not None
    assert cur.open_time == T0 + 17 * MINUTE
    assert cur.open == D(101)  # the new candle opens at the tick, not at the last close


def test_a_quote_moves_prices_but_is_not_a_trade() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1m",))
    b.add(tick(T0, "100", "0.5"))
    b.add(tick(T0 + 1, "105", "0"))
    b.add(tick(T0 + 2, "95", "0"))
    b.add(tick(T0 + 3, "101", "0.25"))
    c = b.current("1m")
    assert c is not None
    assert (c.open, c.high, c.low, c.close) == (D(100), D(105), D(95), D(101))
    assert (c.volume, c.trades) == (D("0.75"), 2)

    q = CandleBuilder(SYMBOL, intervals=("1m",))
    q.add(tick(T0, "100", "0"))
    c = q.current("1m")
    assert c is not None and (c.volume, c.trades) == (D(0), 0)


def test_flush_spares_the_candle_that_is_still_running() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1m", "5m"))
    b.add(tick(T0 + 30_000))
    assert b.flush(T0 + MINUTE - 1) == []  # close_time == now: not yet over
    closed = b.flush(T0 + MINUTE)  # close_time T0 + 59_999 < now
    assert [(c.interval, c.closed) for c in closed] == [("1m", True)]
    assert b.current("1m") is None
    assert b.current("5m") is not None
    assert [c.interval for c in b.flush(T0 + 10 * MINUTE)] == ["5m"]
    assert b.flush(T0 + 20 * MINUTE) == []


def test_late_tick_after_a_flush_is_ignored_everywhere() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1m", "5m"))
    b.add(tick(T0 + 1_000, "100"))
    b.add(tick(T0 + 3 * MINUTE, "100"))
    assert [c.open_time for c in b.flush(T0 + 4 * MINUTE)] == [T0 + 3 * MINUTE]
    # Belongs to the 1m candle already published as closed: dropped, also from 5m.
    assert b.add(tick(T0 + 3 * MINUTE + 5, "200", "9")) == []
    five = b.current("5m")
    assert five is not None and (five.high, five.volume) == (D(100), D(2))
    # Older than the previous tick: dropped too.
    b.add(tick(T0 + 4 * MINUTE + 1, "100"))
    assert b.add(tick(T0 + 4 * MINUTE, "100")) == []
    # A later tick in a period nothing has closed yet is fine.
    assert b.add(tick(T0 + 4 * MINUTE + 2, "101")) == []
    one = b.current("1m")
    assert one is not None and one.trades == 2


def test_current_is_a_copy() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1m",))
    b.add(tick(T0, "100"))
    snap = b.current("1m")
    assert snap is not None
    snap.high = D(1_000_000)
    b.add(tick(T0 + 1, "101"))
    assert snap.close == D(100)
    now = b.current("1m")
    assert now is not None and (now.high, now.close) == (D(101), D(101))


def test_interval_selection_and_errors() -> None:
    b = CandleBuilder(SYMBOL, intervals=("1h", "1m"))
    assert b.intervals == ("1m", "1h")
    with pytest.raises(ValueError):
        b.current("5m")
    with pytest.raises(ValueError):
        CandleBuilder(SYMBOL, intervals=("2m",))
    with pytest.raises(ValueError):
        CandleBuilder(SYMBOL, intervals=())
    with pytest.raises(ValueError):
        CandleBuilder(SYMBOL, intervals=("1m", "1m"))
    with pytest.raises(ValueError):
        b.add(Tick(symbol="ETH-USD", price=D(1), volume=D(1), ts=T0))
    assert [c.interval for c in b.add(tick(T0)) + b.add(tick(T0 + DAY))] == ["1m", "1h"]


def test_restore_resumes_an_open_candle_and_respects_a_closed_one() -> None:
    """A new leader continues from the previous one's last published candles."""
    D = Decimal
    minute = 60_000
    builder = CandleBuilder("BTC-USD", intervals=("1m",))
    builder.restore(Candle("BTC-USD", "1m", 0, minute - 1, D(10), D(12), D(9), D(11), D(3), 3))
    builder.restore(
        Candle("BTC-USD", "1m", minute, 2 * minute - 1, D(20), D(21), D(19), D(20), D(1), 1)
    )
    # A tick of the closed minute is late; one inside the open minute extends it.
    assert builder.add(Tick("BTC-USD", D(5), D(1), minute - 10)) == []
    builder.add(Tick("BTC-USD", D(25), D(2), minute + 500))
    [closed] = builder.add(Tick("BTC-USD", D(22), D(1), 2 * minute))
    assert (closed.open, closed.high, closed.low, closed.close) == (D(20), D(25), D(19), D(25))
    assert (closed.volume, closed.trades) == (D(3), 2)
