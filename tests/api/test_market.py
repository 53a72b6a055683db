"""The market REST API, driven through admin tick injection (the providers' path)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from models.accounts import User
from tests.support.accounts import bearer, register
from tests.support.apps import build_app, serve_until
from tests.support.services import free_port

MINUTE = 60_000


@pytest.fixture(scope="module")
def app(module_pg_url: str, redis_url: str) -> Sanic:
    # A database of its own: other modules' servers run the simulator and store candles.
    return build_app(
        module_pg_url,
        redis_url,
        provider="none",
        admin_ticks=True,
        ingest_max_tick_age_s=3600,
        symbols="BTC-USD,ETH-USD,SOL-USD",
    )


@pytest.fixture(scope="module")
def client(app: Sanic) -> Iterator[ReusableClient]:
    with ReusableClient(app, port=free_port()) as client:
        yield client


@pytest.fixture(scope="module")
def admin(client: ReusableClient) -> dict[str, str]:
    account = register(client)
    client._run(User.filter(id=account["user"]["id"]).update(is_admin=True))
    headers = bearer(account["tokens"])
    # Before a leader runs, injection is refused (503): the tick would reach nobody.
    serve_until(
        client,
        lambda: inject(client, headers, symbol="BTC-USD", price="67000").status != 503,
        30,
        "an ingest leader",
    )
    return headers


def inject(client: ReusableClient, admin: dict[str, str], **tick: Any) -> Any:
    _, response = client.post("/api/v2/admin/ticks", headers=admin, json=tick)
    return response


def wait_for_ticker(client: ReusableClient, symbol: str, predicate: Any) -> dict[str, Any]:
    def ticker() -> dict[str, Any] | None:
        _, response = client.get(f"/api/v2/market/tickers/{symbol}")
        return dict(response.json) if predicate(response.json) else None

    return serve_until(client, ticker, 30, f"the {symbol} ticker")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_assets_list_the_configured_symbols(client: ReusableClient, admin: dict[str, str]) -> None:
    # Every BTC-USD tick of this module is near 67,000: shown with 2 decimals.
    wait_for_ticker(client, "BTC-USD", lambda t: t["price"] is not None)
    _, response = client.get("/api/v2/market/assets")
    assert response.status == 200
    items = response.json["items"]
    assert [i["symbol"] for i in items] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    assert items[0] == {
        "symbol": "BTC-USD",
        "base": "BTC",
        "quote": "USD",
        "name": "Bitcoin",
        "price_precision": 2,
        "status": "trading",
    }


def test_injected_ticks_reach_the_ticker_and_candles(
    client: ReusableClient, admin: dict[str, str]
) -> None:
    start = (now_ms() // MINUTE - 3) * MINUTE  # three closed minutes ago
    prices = ["100", "104.5", "99.25", "101"]
    for n, price in enumerate(prices):
        assert (
            inject(
                client, admin, symbol="sol-usd", price=price, volume="2", ts=start + n * MINUTE + 5
            ).status
            == 202
        )
    ticker = wait_for_ticker(client, "SOL-USD", lambda t: t["price"] == "101")
    assert ticker["price"] == "101"
    assert ticker["high_24h"] == "104.5" and ticker["low_24h"] == "99.25"
    assert ticker["open_24h"] == "100" and ticker["change_24h"] == "1"
    assert ticker["volume_24h"] == "8"
    assert ticker["seq"] >= 1
    assert ticker["stale"] is (now_ms() - ticker["ts"] > 30_000)

    def candles() -> list[dict[str, Any]]:
        _, response = client.get("/api/v2/market/candles/SOL-USD?interval=1m&limit=10")
        items: list[dict[str, Any]] = response.json["items"]
        return items if len(items) >= 4 else []

    # Closed candles reach the database in batches, once a second.
    items = serve_until(client, candles, 30, "four SOL-USD candles")
    assert [c["open_time"] for c in items] == [start + n * MINUTE for n in range(4)]
    assert [c["closed"] for c in items] == [True, True, True, False]
    assert [c["open"] for c in items] == prices
    assert items[0] == {
        "symbol": "SOL-USD",
        "interval": "1m",
        "open_time": start,
        "close_time": start + MINUTE - 1,
        "open": "100",
        "high": "100",
        "low": "100",
        "close": "100",
        "volume": "2",
        "trades": 1,
        "closed": True,
    }
    span = f"start={start + MINUTE}&end={start + 2 * MINUTE}"
    _, window = client.get(f"/api/v2/market/candles/SOL-USD?interval=1m&{span}")
    assert [c["open_time"] for c in window.json["items"]] == [start + MINUTE, start + 2 * MINUTE]
    _, latest = client.get("/api/v2/market/candles/SOL-USD?interval=1m&limit=2")
    assert [c["open_time"] for c in latest.json["items"]] == [
        start + 2 * MINUTE,
        start + 3 * MINUTE,
    ]


def dropped(client: ReusableClient, reason: str) -> float:
    for line in client.get("/metrics")[1].text.splitlines():
        if line.startswith(f'ingest_ticks_dropped_total{{reason="{reason}"}}'):
            return float(line.split()[1])
    return 0.0


def test_absurd_jumps_are_dropped_and_counted(
    client: ReusableClient, admin: dict[str, str]
) -> None:
    inject(client, admin, symbol="ETH-USD", price="3500", volume="1")
    wait_for_ticker(client, "ETH-USD", lambda t: t["price"] == "3500")
    before = dropped(client, "absurd_jump")
    assert inject(client, admin, symbol="ETH-USD", price="35000", volume="1").status == 202
    inject(client, admin, symbol="ETH-USD", price="3501", volume="1")
    ticker = wait_for_ticker(client, "ETH-USD", lambda t: t["price"] == "3501")
    assert ticker["price"] == "3501"
    assert ticker["high_24h"] == "3501"  # the 10x price never counted
    assert dropped(client, "absurd_jump") == before + 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"symbol": "BTC-USD", "price": "NaN"}, 422),
        ({"symbol": "BTC-USD", "price": "Infinity"}, 422),
        ({"symbol": "BTC-USD", "price": "-1"}, 422),
        ({"symbol": "BTC-USD", "price": "0"}, 422),
        ({"symbol": "BTC-USD", "price": "1", "volume": "-1"}, 422),
        ({"symbol": "BTC-USD", "price": "1", "ts": 1_700_000_000}, 422),  # seconds
        ({"symbol": "BTC-USD"}, 422),
        ({"symbol": "DOGE-USD", "price": "1"}, 404),
    ],
)
def test_bad_injected_ticks(
    client: ReusableClient, admin: dict[str, str], body: dict[str, Any], status: int
) -> None:
    response = inject(client, admin, **body)
    assert response.status == status, response.text


def test_tick_injection_is_for_admins_only(client: ReusableClient) -> None:
    user = register(client)
    _, response = client.post(
        "/api/v2/admin/ticks",
        headers=bearer(user["tokens"]),
        json={"symbol": "BTC-USD", "price": "1"},
    )
    assert response.status == 403
    assert response.json["error"]["code"] == "forbidden"
    _, anonymous = client.post("/api/v2/admin/ticks", json={"symbol": "BTC-USD", "price": "1"})
    assert anonymous.status == 401


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v2/market/tickers/NOPE-USD", 404, None),
        ("/api/v2/market/tickers?symbols=BTC-USD,nope-usd", 404, None),
        ("/api/v2/market/candles/NOPE-USD", 404, None),
        ("/api/v2/market/candles/BTC-USD?interval=2m", 422, "interval"),
        ("/api/v2/market/candles/BTC-USD?start=1700000060000&end=1700000000000", 422, "end"),
        ("/api/v2/market/candles/BTC-USD?start=1700000000", 422, "start"),  # seconds
        ("/api/v2/market/candles/BTC-USD?end=1700000000", 422, "end"),
        ("/api/v2/market/candles/BTC-USD?limit=0", 422, "limit"),
        ("/api/v2/market/candles/BTC-USD?limit=1001", 422, "limit"),
        ("/api/v2/market/candles/BTC-USD?limit=ten", 422, "limit"),
        ("/api/v2/market/candles/BTC-USD?limit=", 422, "limit"),  # blank is not absent
        ("/api/v2/market/candles/BTC-USD?start=-5", 422, "start"),
        ("/api/v2/market/candles/BTC-USD?colour=red", 422, "colour"),
        ("/api/v2/market/candles/BTC-USD?limit=5&limit=9", 422, "limit"),  # which one?
        ("/api/v2/market/candles/BTC-USD?limit=5&limit=5", 422, "limit"),
        ("/api/v2/market/candles/BTC-USD?limit=1_0", 422, "limit"),  # int() would take these
        ("/api/v2/market/candles/BTC-USD?limit=%D9%A1%D9%A0", 422, "limit"),  # Arabic-Indic 10
        ("/api/v2/market/candles/BTC-USD?limit=10.0", 422, "limit"),
        ("/api/v2/market/candles/BTC-USD?start=1700000000000.0", 422, "start"),
    ],
)
def test_bad_market_requests(
    client: ReusableClient, path: str, status: int, field: str | None
) -> None:
    _, response = client.get(path)
    assert response.status == status, response.text
    error = response.json["error"]
    if status == 404:
        assert error["code"] == "unknown_symbol"
        assert error["details"]["symbol"] == "NOPE-USD"
    else:
        assert error["code"] == "validation_error"
        assert field in error["details"]["fields"]


@pytest.mark.parametrize("route", ["tickers", "candles"])
def test_a_percent_encoded_symbol_is_read_decoded(client: ReusableClient, route: str) -> None:
    _, response = client.get(f"/api/v2/market/{route}/BTC%2DUSD")
    assert response.status == 200, response.text
    _, response = client.get(f"/api/v2/market/{route}/%E2%82%BF%2DUSD")
    assert response.status == 404
    assert response.json["error"]["details"] == {"symbol": "\u20bf-USD"}
    assert response.json["error"]["message"] == "unknown symbol \u20bf-USD"
    _, response = client.get(f"/api/v2/market/{route}/btc-u%C5%BFd")  # a long s is no S
    assert response.status == 404


def test_a_cache_buster_is_ignored_and_other_unknown_parameters_refused(
    client: ReusableClient,
) -> None:
    for path in ("/api/v2/market/tickers?_=1733480000000", "/api/v2/market/candles/BTC-USD?_="):
        _, response = client.get(path)
        assert response.status == 200, response.text
    _, response = client.get("/api/v2/market/candles/BTC-USD?_=1&colour=red")
    assert response.status == 422
    assert list(response.json["error"]["details"]["fields"]) == ["colour"]


def test_times_in_seconds_are_refused_saying_milliseconds(client: ReusableClient) -> None:
    _, response = client.get("/api/v2/market/candles/BTC-USD?start=1700000000")
    assert response.status == 422
    why = response.json["error"]["details"]["fields"]["start"]
    assert "milliseconds" in why and "1700000000000" in why


def test_tickers_list_and_summary(client: ReusableClient, admin: dict[str, str]) -> None:
    inject(client, admin, symbol="BTC-USD", price="67000", volume="1")
    wait_for_ticker(client, "BTC-USD", lambda t: t["price"] == "67000")
    _, response = client.get("/api/v2/market/tickers?symbols=btc-usd,ETH-USD")
    assert [t["symbol"] for t in response.json["items"]] == ["BTC-USD", "ETH-USD"]
    ticker = response.json["items"][0]
    assert set(ticker) == {
        "symbol",
        "price",
        "bid",
        "ask",
        "open_24h",
        "high_24h",
        "low_24h",
        "volume_24h",
        "quote_volume_24h",
        "change_24h",
        "change_pct_24h",
        "ts",
        "seq",
        "stale",
    }
    _, all_tickers = client.get("/api/v2/market/tickers")
    assert len(all_tickers.json["items"]) == 3
    _, summary = client.get("/api/v2/market/summary")
    assert summary.status == 200
    assert set(summary.json) == {"gainers", "losers", "volume_leaders", "generated_at"}
    assert summary.json["volume_leaders"][0]["symbol"] == "BTC-USD"


def test_readyz_reports_the_ingest_leader(client: ReusableClient) -> None:
    def ready() -> Any:
        _, response = client.get("/readyz")
        return response if response.json["checks"]["ingest"]["status"] == "ok" else None

    response = serve_until(client, ready, 30, "the ingest check")
    assert response.json["checks"]["ingest"]["leader"]
    assert response.status == 200
