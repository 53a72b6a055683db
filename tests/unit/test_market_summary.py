"""The summary ranks live tickers (gainers up, losers down) and /assets' price precision."""

from __future__ import annotations

import orjson

from coinlink.bus.memory import MemoryBus
from coinlink.market.service import MarketService
from coinlink.market.view import MarketView
from coinlink.wire import now_ms

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD", "DOT-USD", "XRP-USD"]


def market(changes: dict[str, tuple[str, str]]) -> MarketService:
    """A service whose view holds a ticker per ``symbol: (price, change_pct_24h)``."""
    view = MarketView(SYMBOLS, staleness_s=30)
    for seq, (symbol, (price, pct)) in enumerate(changes.items(), start=1):
        ticker = {
            "symbol": symbol,
            "price": price,
            "change_pct_24h": pct,
            "quote_volume_24h": str(seq * 1000),
            "ts": now_ms(),
        }
        view.apply(f"ticker:{symbol}", seq, orjson.dumps(ticker))
    return MarketService(SYMBOLS, view, MemoryBus(), admin_ticks_enabled=False)


def ranked(service: MarketService, key: str) -> list[tuple[str, str]]:
    summary = orjson.loads(service.summary_json())
    return [(t["symbol"], t["change_pct_24h"]) for t in summary[key]]


def test_gainers_are_up_and_losers_down_most_first() -> None:
    service = market(
        {
            "BTC-USD": ("67000", "1.5"),
            "ETH-USD": ("3500", "-2.25"),
            "SOL-USD": ("150", "0"),
            "DOGE-USD": ("0.15", "12"),
            "DOT-USD": ("7.1", "-0.01"),
        }
    )
    assert ranked(service, "gainers") == [("DOGE-USD", "12"), ("BTC-USD", "1.5")]
    assert ranked(service, "losers") == [("ETH-USD", "-2.25"), ("DOT-USD", "-0.01")]
    leaders = [symbol for symbol, _ in ranked(service, "volume_leaders")]
    assert leaders == ["DOT-USD", "DOGE-USD", "SOL-USD", "ETH-USD", "BTC-USD"]


def test_a_market_that_only_rose_has_no_losers() -> None:
    service = market({"BTC-USD": ("67000", "1"), "ETH-USD": ("3500", "2")})
    assert ranked(service, "losers") == []
    assert [s for s, _ in ranked(service, "gainers")] == ["ETH-USD", "BTC-USD"]


def test_price_precision_gives_about_five_significant_digits() -> None:
    service = market(
        {
            "BTC-USD": ("67012.34", "0"),
            "ETH-USD": ("3501.27", "0"),
            "DOGE-USD": ("0.15234", "0"),
            "DOT-USD": ("7.1234", "0"),
            "XRP-USD": ("0.00001234", "0"),
        }
    )
    precision = {a["symbol"]: a["price_precision"] for a in service.assets()}
    assert precision == {
        "BTC-USD": 2,
        "ETH-USD": 2,
        "SOL-USD": 8,  # no tick yet: the finest
        "DOGE-USD": 5,
        "DOT-USD": 4,
        "XRP-USD": 8,
    }
