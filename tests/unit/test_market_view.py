"""The view's cached ticker bodies are exactly the JSON of its ticker dict."""

from __future__ import annotations

import orjson

from coinlink.market.view import MarketView

TS = 1_795_992_655_172
TICKER = {
    "symbol": "BTC-USD",
    "price": "67035.91",
    "bid": "67033.33",
    "ask": "67038.5",
    "open_24h": "66970.61",
    "high_24h": "68302.74",
    "low_24h": "66259.95",
    "volume_24h": "1034.51503094",
    "quote_volume_24h": "69470833.2917179536",
    "change_24h": "65.3",
    "change_pct_24h": "0.1",
    "ts": TS,
}


def view() -> MarketView:
    return MarketView(["BTC-USD", "ETH-USD"], staleness_s=30)


def test_ticker_json_is_the_ticker_dict_rendered_fresh_and_stale() -> None:
    market = view()
    market.apply("ticker:BTC-USD", 41, orjson.dumps(TICKER))
    for now in (TS, TS + 30_000, TS + 30_001, TS + 10**9):
        body = market.ticker_json("BTC-USD", now)
        assert body == orjson.dumps(market.ticker("BTC-USD", now))
    fresh = orjson.loads(market.ticker_json("BTC-USD", TS + 30_000))
    assert fresh["seq"] == 41 and fresh["stale"] is False
    assert list(fresh)[-2:] == ["seq", "stale"]
    assert orjson.loads(market.ticker_json("BTC-USD", TS + 30_001))["stale"] is True


def test_an_update_replaces_the_cached_body() -> None:
    market = view()
    market.apply("ticker:BTC-USD", 1, orjson.dumps(TICKER))
    assert orjson.loads(market.ticker_json("BTC-USD", TS))["price"] == "67035.91"
    market.apply("ticker:BTC-USD", 2, orjson.dumps({**TICKER, "price": "1", "ts": TS + 5}))
    body = orjson.loads(market.ticker_json("BTC-USD", TS + 5))
    assert body["price"] == "1" and body["seq"] == 2 and body["ts"] == TS + 5


def test_a_symbol_without_ticks_answers_nulls() -> None:
    market = view()
    body = market.ticker_json("ETH-USD", TS)
    assert body == orjson.dumps(market.ticker("ETH-USD", TS))
    assert orjson.loads(body)["price"] is None and orjson.loads(body)["stale"] is True
