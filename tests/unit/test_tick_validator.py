"""TickValidator: each drop rule on both sides of its edge, and the per-symbol reference.

The reference (last accepted price and time) is private; tests see it as a caller does,
through what ``check`` answers next.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinlink.market.tick_validator import REASONS, TickValidator
from coinlink.market.types import Tick

NOW = 1_700_000_000_000
D = Decimal


class FakeClock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def tick(
    price: str | Decimal = "100",
    *,
    symbol: str = "BTC-USD",
    volume: str | Decimal = "1",
    ts: int = NOW,
    bid: str | None = None,
    ask: str | None = None,
) -> Tick:
    return Tick(
        symbol=symbol,
        price=D(price),
        volume=D(volume),
        ts=ts,
        bid=None if bid is None else D(bid),
        ask=None if ask is None else D(ask),
    )


def assert_reference(v: TickValidator, price: str, ts: int, symbol: str = "BTC-USD") -> None:
    """The reference of ``symbol`` is exactly (``price``, ``ts``). Moves it: call it last.

    A tick 1 ms older is out of order, so the reference is at least ``ts`` old; a jump of
    just over 20 % at ``ts`` is refused as a jump (not as out of order), so it is no newer;
    exactly +20 % is accepted and a hair more is not, so its price is ``price``.
    """
    p = Decimal(price)
    assert v.check(tick(p, symbol=symbol, ts=ts - 1)) == "out_of_order"
    assert v.check(tick(p * Decimal("1.2") + Decimal("1e-8"), symbol=symbol, ts=ts)) == (
        "absurd_jump"
    )
    assert v.check(tick(p * Decimal("1.2"), symbol=symbol, ts=ts)) is None


def assert_no_reference(v: TickValidator, symbol: str = "BTC-USD") -> None:
    """Nothing accepted yet: any price at the oldest allowed time is taken. Moves it."""
    assert v.check(tick("1000000", symbol=symbol, ts=NOW - 60_000)) is None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def v(clock: FakeClock) -> TickValidator:
    return TickValidator(clock=clock)


def test_a_plain_tick_is_accepted_and_becomes_the_reference(v: TickValidator) -> None:
    assert v.check(tick("100", ts=NOW - 10)) is None
    assert_reference(v, "100", NOW - 10)


def test_before_its_first_tick_a_symbol_has_no_reference(v: TickValidator) -> None:
    assert v.check(tick("100", symbol="ETH-USD")) is None
    assert_no_reference(v, "BTC-USD")


@pytest.mark.parametrize("field", ["price", "volume", "bid", "ask"], ids=lambda f: f"{f}")
@pytest.mark.parametrize("bad", ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_dropped_without_raising(
    v: TickValidator, field: str, bad: str
) -> None:
    values = {"price": "100", "volume": "1", "bid": "99", "ask": "101"}
    values[field] = bad
    t = Tick(
        symbol="BTC-USD",
        price=D(values["price"]),
        volume=D(values["volume"]),
        ts=NOW,
        bid=D(values["bid"]),
        ask=D(values["ask"]),
    )
    assert v.check(t) == "non_finite"
    assert_no_reference(v)


@pytest.mark.parametrize("price", ["0", "-0", "0E-8", "-1", "-0.00000001"])
def test_zero_and_negative_prices_are_dropped(v: TickValidator, price: str) -> None:
    assert v.check(tick(price)) == "non_positive_price"


def test_the_smallest_positive_price_is_accepted(v: TickValidator) -> None:
    assert v.check(tick("0.00000001")) is None


def test_negative_volume_is_dropped_zero_volume_is_a_quote(v: TickValidator) -> None:
    assert v.check(tick(volume="-0.0001")) == "negative_volume"
    assert v.check(tick(volume="0")) is None


def test_crossed_quote_is_dropped_locked_and_partial_quotes_are_kept(v: TickValidator) -> None:
    assert v.check(tick(bid="101", ask="100.99")) == "crossed_quote"
    assert v.check(tick(bid="100", ask="100")) is None
    assert v.check(tick(bid="99.5", ask="100.5")) is None
    assert v.check(tick(bid="1000")) is None  # only one side present: nothing to cross
    assert v.check(tick(ask="1")) is None


def test_future_edge(v: TickValidator) -> None:
    assert v.check(tick(ts=NOW + 5_000)) is None
    w = TickValidator(clock=FakeClock())
    assert w.check(tick(ts=NOW + 5_001)) == "future"
    assert w.check(tick(ts=NOW)) is None  # the refused future time is no reference


def test_stale_edge(v: TickValidator) -> None:
    assert v.check(tick(ts=NOW - 60_001)) == "stale"
    assert v.check(tick(ts=NOW - 60_000)) is None


def test_custom_time_limits(clock: FakeClock) -> None:
    v = TickValidator(max_future_ms=0, max_age_ms=1_000, clock=clock)
    assert v.check(tick(ts=NOW + 1)) == "future"
    assert v.check(tick(ts=NOW - 1_001)) == "stale"
    assert v.check(tick(ts=NOW)) is None


def test_out_of_order_is_dropped_equal_ts_is_kept(v: TickValidator) -> None:
    assert v.check(tick(ts=NOW - 100)) is None
    assert v.check(tick(ts=NOW - 100)) is None
    assert v.check(tick(ts=NOW - 101)) == "out_of_order"
    assert v.check(tick(ts=NOW - 99)) is None


def test_first_tick_of_a_symbol_has_no_jump_limit(v: TickValidator) -> None:
    assert v.check(tick("100")) is None
    assert v.check(tick("1000000", symbol="ETH-USD")) is None


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("120", None),  # exactly +20 %: accepted
        ("80", None),  # exactly -20 %
        ("120.0000001", "absurd_jump"),
        ("79.9999999", "absurd_jump"),
        ("1000", "absurd_jump"),
        ("0.5", "absurd_jump"),
    ],
)
def test_absurd_jump_edge(v: TickValidator, price: str, reason: str | None) -> None:
    assert v.check(tick("100")) is None
    assert v.check(tick(price)) == reason


def test_custom_jump_limit(clock: FakeClock) -> None:
    v = TickValidator(max_jump_pct=D("0.5"), clock=clock)
    assert v.check(tick("100")) is None
    assert v.check(tick("100.5")) is None
    assert v.check(tick("101.01")) == "absurd_jump"  # 0.5075 % from 100.5


def test_a_rejected_jump_does_not_poison_the_reference(v: TickValidator) -> None:
    assert v.check(tick("100", ts=NOW - 3)) is None
    assert v.check(tick("100000", ts=NOW - 2)) == "absurd_jump"
    # Had the bad print become the reference, this good tick would be a -99.9 % "jump".
    assert v.check(tick("101", ts=NOW - 1)) is None
    assert_reference(v, "101", NOW - 1)


@pytest.mark.parametrize(
    "bad",
    [
        tick("NaN", ts=NOW),
        tick("-5", ts=NOW),
        tick("100", volume="-1", ts=NOW),
        tick("100", bid="102", ask="101", ts=NOW),
        tick("100", ts=NOW + 60_000),
    ],
    ids=["nan", "negative", "negative_volume", "crossed", "future"],
)
def test_no_rejected_tick_moves_the_reference(v: TickValidator, bad: Tick) -> None:
    assert v.check(tick("100", ts=NOW - 5)) is None
    assert v.check(bad) is not None
    assert_reference(v, "100", NOW - 5)  # a far-future ts did not become "last" either


def test_symbols_are_independent(v: TickValidator) -> None:
    assert v.check(tick("100", symbol="BTC-USD", ts=NOW)) is None
    assert v.check(tick("2000", symbol="ETH-USD", ts=NOW - 50_000)) is None
    # An older ts is in order for ETH (its own last ts), and a price far from BTC's is fine.
    assert v.check(tick("2010", symbol="ETH-USD", ts=NOW - 40_000)) is None
    assert v.check(tick("100", symbol="BTC-USD", ts=NOW - 1)) == "out_of_order"
    assert v.check(tick("5000", symbol="ETH-USD", ts=NOW)) == "absurd_jump"
    assert v.check(tick("110", symbol="BTC-USD", ts=NOW)) is None
    assert_reference(v, "2010", NOW - 40_000, symbol="ETH-USD")


def test_unknown_symbol(clock: FakeClock) -> None:
    v = TickValidator(clock=clock, symbols={"BTC-USD"})
    assert v.check(tick(symbol="DOGE-USD")) == "unknown_symbol"
    assert v.check(tick("NaN", symbol="DOGE-USD")) == "unknown_symbol"  # no per-symbol work
    assert v.check(tick(symbol="BTC-USD")) is None
    # Without a symbol set, any symbol is allowed.
    assert TickValidator(clock=clock).check(tick(symbol="DOGE-USD")) is None


def test_the_clock_moves(clock: FakeClock) -> None:
    v = TickValidator(clock=clock)
    assert v.check(tick(ts=NOW + 10_000)) == "future"
    clock.now += 5_000
    assert v.check(tick(ts=NOW + 10_000)) is None
    clock.now += 65_000  # now = ts + 60 s: still fresh
    assert v.check(tick(ts=NOW + 10_000)) is None
    clock.now += 1
    assert v.check(tick(ts=NOW + 10_000)) == "stale"


def test_reanchor_after_a_quiet_reference(clock: FakeClock) -> None:
    w = TickValidator(clock=clock, reanchor_after_ms=30_000)
    assert w.check(tick("100", ts=NOW - 50_000)) is None
    assert w.check(tick("200", ts=NOW - 20_000)) == "absurd_jump"  # reference exactly 30 s old
    assert w.check(tick("200", ts=NOW - 19_999)) is None  # older than 30 s: re-anchor
    assert w.check(tick("400", ts=NOW - 19_998)) == "absurd_jump"  # fresh reference: rule holds


def test_the_default_clock_is_wall_time() -> None:
    import time

    v = TickValidator()
    now = time.time_ns() // 1_000_000
    assert v.check(tick(ts=now)) is None
    assert v.check(tick(ts=now - 3_600_000, symbol="ETH-USD")) == "stale"


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        TickValidator(max_jump_pct=D(0))
    with pytest.raises(ValueError):
        TickValidator(max_jump_pct=D("NaN"))
    with pytest.raises(ValueError):
        TickValidator(max_age_ms=-1)


prices = st.decimals(min_value=D("0.00000001"), max_value=D("1000000"), places=8)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["BTC-USD", "ETH-USD"]),
            st.one_of(prices, st.sampled_from([D("NaN"), D("Infinity"), D(0), D(-1)])),
            st.integers(min_value=-70_000, max_value=7_000),
        ),
        max_size=40,
    )
)
def test_matches_a_straightforward_model(steps: list[tuple[str, Decimal, int]]) -> None:
    """Any stream: the reason is always in REASONS, and acceptance matches a plain model
    (whose reference each answer depends on, so a wrong reference shows as a wrong answer)."""
    v = TickValidator(clock=FakeClock())
    model: dict[str, tuple[Decimal, int]] = {}
    for symbol, price, offset in steps:
        ts = NOW + offset
        reason = v.check(tick(price, symbol=symbol, ts=ts))
        assert reason is None or reason in REASONS
        ref = model.get(symbol)
        if not price.is_finite():
            expected: str | None = "non_finite"
        elif price <= 0:
            expected = "non_positive_price"
        elif ts > NOW + 5_000:
            expected = "future"
        elif ts < NOW - 60_000:
            expected = "stale"
        elif ref is not None and ts < ref[1]:
            expected = "out_of_order"
        elif ref is not None and abs(price / ref[0] - 1) * 100 > 20:
            expected = "absurd_jump"
        else:
            expected = None
            model[symbol] = (price, ts)
        assert reason == expected


def test_values_beyond_what_the_candles_table_stores_are_out_of_range() -> None:
    from coinlink.market.tick_validator import MAX_PRICE, MAX_VOLUME

    validator = TickValidator(clock=lambda: 1_000_000)
    huge_price = Tick("BTC-USD", MAX_PRICE, Decimal(1), 1_000_000)
    huge_volume = Tick("BTC-USD", Decimal(1), MAX_VOLUME, 1_000_000)
    assert validator.check(huge_price) == "out_of_range"
    assert validator.check(huge_volume) == "out_of_range"
    assert validator.check(Tick("BTC-USD", MAX_PRICE - 1, Decimal(1), 1_000_000)) is None
