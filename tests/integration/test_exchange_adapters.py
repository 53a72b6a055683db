"""The Binance and Coinbase adapters against a local fake exchange (no internet needed).

The fake speaks the real formats: a ``websockets`` server on 127.0.0.1 whose every
connection plays the next scripted session (frames shaped like recorded ones, then hold,
drop or go silent), and a tiny ``http.server`` for the REST backfill endpoints. Backoff and
stall settings are shortened so each test takes well under five seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve

from coinlink.market.providers import ProviderError
from coinlink.market.providers.binance import BinanceProvider
from coinlink.market.providers.coinbase import CoinbaseProvider
from coinlink.market.providers.streaming import StreamingProvider
from coinlink.market.types import Tick
from tests.support.services import until

pytestmark = pytest.mark.timeout(60)

FAST: dict[str, Any] = {
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "open_timeout_s": 2.0,
    "close_timeout_s": 0.5,
    "stall_timeout_s": 3.0,
}


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """websockets and urllib honour proxy variables; the fake exchange is local."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


# -- the fake WebSocket exchange ------------------------------------------------------------

Frame = dict[str, Any] | str  # a dict is sent as JSON, a str as is (to send broken JSON)


@dataclass
class Session:
    """One scripted connection: optionally read a subscription, send frames, then ``end``."""

    frames: list[Frame] = field(default_factory=list)
    end: str = "hold"  # hold: keep the connection open and quiet; drop: abort the TCP connection
    read_subscription: bool = False


@dataclass
class FakeExchange:
    sessions: list[Session]
    url: str = ""
    paths: list[str] = field(default_factory=list)
    subscriptions: list[Any] = field(default_factory=list)
    connected_at: list[float] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        index = len(self.paths)
        self.paths.append(ws.request.path if ws.request else "")
        self.connected_at.append(time.monotonic())
        session = self.sessions[index] if index < len(self.sessions) else Session()
        if session.read_subscription:
            self.subscriptions.append(json.loads(await ws.recv()))
        for frame in session.frames:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        if session.end == "drop":
            ws.transport.abort()
            return
        await ws.wait_closed()  # quiet until the client leaves (or the server stops)


@contextlib.asynccontextmanager
async def fake_exchange(*sessions: Session) -> AsyncIterator[FakeExchange]:
    fake = FakeExchange(list(sessions))
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}"
        yield fake


async def take(provider: StreamingProvider, n: int, timeout: float = 15.0) -> list[Tick]:
    """The first ``n`` ticks; the provider's connection is closed on return. (The deadline
    is for a loaded machine: it returns as soon as the ticks are there.)"""
    out: list[Tick] = []
    async with asyncio.timeout(timeout), contextlib.aclosing(provider.ticks()) as stream:
        async for tick in stream:
            out.append(tick)
            if len(out) >= n:
                break
    return out


# -- the fake REST server ---------------------------------------------------------------------

Route = Callable[[str, dict[str, str]], tuple[int, Any]]


@contextlib.contextmanager
def fake_rest(route: Route) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """An HTTP server on 127.0.0.1 in a thread; yields its base URL and the requests seen."""
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            seen.append((parts.path, query))
            status, body = route(parts.path, query)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown() waits for the next poll.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- Binance ------------------------------------------------------------------------------------


def b_trade(symbol: str, trade_id: int, price: str, qty: str, ts: int) -> dict[str, Any]:
    return {
        "stream": f"{symbol.lower()}@trade",
        "data": {
            "e": "trade",
            "E": ts + 2,
            "s": symbol,
            "t": trade_id,
            "p": price,
            "q": qty,
            "T": ts,
            "m": True,
            "M": True,
        },
    }


def b_ticker(symbol: str, bid: str, ask: str, ts: int, last: str = "67000.00") -> dict[str, Any]:
    return {
        "stream": f"{symbol.lower()}@ticker",
        "data": {
            "e": "24hrTicker",
            "E": ts,
            "s": symbol,
            "p": "-120.50000000",
            "P": "-0.180",
            "w": "67210.11934510",
            "x": "67120.50000000",
            "c": last,
            "Q": "0.00150000",
            "b": bid,
            "B": "1.20431000",
            "a": ask,
            "A": "0.81000000",
            "o": "67120.50000000",
            "h": "67890.00000000",
            "l": "66500.01000000",
            "v": "18734.10911000",
            "q": "1259103981.31254710",
            "O": ts - 86_400_000,
            "C": ts,
            "F": 3600000000,
            "L": 3601234567,
            "n": 1234568,
        },
    }


T0 = 1_717_200_000_000


async def test_binance_stream_url_and_ticks() -> None:
    frames: list[Frame] = [
        b_ticker("BTCUSDT", "67012.10000000", "67012.11000000", T0),
        b_trade("BTCUSDT", 3600000001, "67012.11000000", "0.01500000", T0 + 5),
        b_trade("ETHUSDT", 1500000001, "3501.25000000", "1.20000000", T0 + 6),
        b_trade("XRPUSDT", 900, "0.52000000", "100.00000000", T0 + 7),  # not configured
        {"result": None, "id": 1},  # a request's answer: ignored, not malformed
        b_ticker("BTCUSDT", "67013.00000000", "67013.01000000", T0 + 1000),
        b_trade("BTCUSDT", 3600000002, "67013.01000000", "0.20000000", T0 + 1001),
        b_trade("BTCUSDT", 3600000003, "67013.02000000", "0.30000000", T0 + 9000),  # quote too old
    ]
    async with fake_exchange(Session(frames)) as fake:
        provider = BinanceProvider(["BTC-USDT", "eth-usdt"], ws_url=fake.url, **FAST)
        ticks = await take(provider, 4)
    assert fake.paths == [
        "/stream?streams=btcusdt@ticker/btcusdt@trade/ethusdt@ticker/ethusdt@trade"
    ]
    assert ticks == [
        Tick(
            "BTC-USDT",
            Decimal("67012.11"),
            Decimal("0.015"),
            T0 + 5,
            Decimal("67012.10"),
            Decimal("67012.11"),
            "binance",
        ),
        Tick("ETH-USDT", Decimal("3501.25"), Decimal("1.2"), T0 + 6, None, None, "binance"),
        Tick(
            "BTC-USDT",
            Decimal("67013.01"),
            Decimal("0.2"),
            T0 + 1001,
            Decimal("67013.00"),
            Decimal("67013.01"),
            "binance",
        ),
        Tick("BTC-USDT", Decimal("67013.02"), Decimal("0.3"), T0 + 9000, None, None, "binance"),
    ]
    assert provider.stats == {"malformed": 0, "dropped": 1, "gaps": 0, "reconnects": 0, "stalls": 0}


async def test_binance_quote_aliases_map_usd_to_usdt() -> None:
    async with fake_exchange(Session([b_trade("BTCUSDT", 1, "67000.5", "1", T0)])) as fake:
        provider = BinanceProvider(
            ["BTC-USD"], ws_url=fake.url, quote_aliases={"USD": "USDT"}, **FAST
        )
        (tick,) = await take(provider, 1)
    assert fake.paths == ["/stream?streams=btcusdt@ticker/btcusdt@trade"]
    assert tick.symbol == "BTC-USD"


async def test_binance_malformed_frames_are_counted_and_skipped() -> None:
    good = b_trade("BTCUSDT", 1, "67000.00", "0.5", T0)
    bad: list[Frame] = [
        "{not json",
        "[1, 2, 3]",
        {"stream": "btcusdt@trade"},  # no data
        {"stream": "btcusdt@trade", "data": {"s": "BTCUSDT", "p": "1"}},  # no event type
        b_trade("BTCUSDT", 2, "NaN", "0.5", T0 + 1),
        b_trade("BTCUSDT", 2, "Infinity", "0.5", T0 + 1),
        b_trade("BTCUSDT", 2, "-5", "0.5", T0 + 1),
        b_trade("BTCUSDT", 2, "67000.00", "lots", T0 + 1),
        {**good, "data": {**good["data"], "t": "abc"}},
        {**good, "data": {**good["data"], "p": ["67000"]}},
        {**good, "data": {**good["data"], "p": True}},
        {**good, "data": {**good["data"], "s": 5}},
        {**good, "data": {k: v for k, v in good["data"].items() if k != "T"}},
        {
            **b_ticker("BTCUSDT", "1", "2", T0),
            "data": {"e": "24hrTicker", "s": "BTCUSDT", "b": "x"},
        },
    ]
    frames = [good, *bad, b_trade("BTCUSDT", 2, "67001.00", "0.25", T0 + 2)]
    async with fake_exchange(Session(frames)) as fake:
        provider = BinanceProvider(["BTC-USDT"], ws_url=fake.url, **FAST)
        ticks = await take(provider, 2)
    assert [t.price for t in ticks] == [Decimal("67000.00"), Decimal("67001.00")]
    assert provider.stats["malformed"] == len(bad)
    assert provider.stats["gaps"] == 0  # the bad frames with t=2 did not move the trade id


async def test_binance_duplicates_and_old_trades_are_dropped_and_jumps_count_gaps() -> None:
    ids = [10, 11, 11, 9, 14, 15, 13, 20]
    frames: list[Frame] = [
        b_trade("BTCUSDT", i, f"{67000 + i}", "1", T0 + n) for n, i in enumerate(ids)
    ]
    async with fake_exchange(Session(frames)) as fake:
        provider = BinanceProvider(["BTC-USDT"], ws_url=fake.url, **FAST)
        ticks = await take(provider, 5)
    assert [t.price for t in ticks] == [Decimal(67000 + i) for i in (10, 11, 14, 15, 20)]
    assert provider.stats["dropped"] == 3
    assert provider.stats["gaps"] == 2  # 11 -> 14 and 15 -> 20


async def test_binance_reconnects_after_a_dropped_connection() -> None:
    first = Session(
        [b_trade("BTCUSDT", 1, "1", "1", T0), b_trade("BTCUSDT", 2, "2", "1", T0 + 1)], end="drop"
    )
    second = Session(
        [b_trade("BTCUSDT", 3, "3", "1", T0 + 2), b_trade("BTCUSDT", 5, "5", "1", T0 + 3)]
    )
    async with fake_exchange(first, second) as fake:
        provider = BinanceProvider(["BTC-USDT"], ws_url=fake.url, **FAST)
        ticks = await take(provider, 4)
    assert [t.price for t in ticks] == [Decimal(i) for i in (1, 2, 3, 5)]
    assert len(fake.paths) == 2
    assert provider.stats["reconnects"] >= 1
    assert provider.stats["gaps"] == 1  # 3 -> 5; 2 -> 3 across the reconnect is no gap


async def test_binance_stall_watchdog_reconnects() -> None:
    first = Session([b_trade("BTCUSDT", 1, "1", "1", T0)])  # then silence
    second = Session([b_trade("BTCUSDT", 2, "2", "1", T0 + 1)])
    async with fake_exchange(first, second) as fake:
        provider = BinanceProvider(
            ["BTC-USDT"], ws_url=fake.url, **{**FAST, "stall_timeout_s": 0.3}
        )
        ticks = await take(provider, 2)
    assert [t.price for t in ticks] == [Decimal(1), Decimal(2)]
    assert provider.stats["stalls"] == 1 and provider.stats["reconnects"] == 1
    silent_for = fake.connected_at[1] - fake.connected_at[0]
    assert 0.3 <= silent_for < 2.5  # the 0.3 s watchdog, not FAST's 3 s (margin for load)


async def test_binance_keeps_retrying_while_nothing_listens() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = BinanceProvider(["BTC-USDT"], ws_url=f"ws://127.0.0.1:{port}", **FAST)
    reading = asyncio.create_task(take(provider, 1))
    try:
        await until(lambda: provider.stats["reconnects"] >= 2, 10, "two reconnects")
        assert not reading.done()  # no tick, no error: still trying
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


def test_binance_configuration_errors() -> None:
    with pytest.raises(ValueError, match="ws_url"):
        BinanceProvider(["BTC-USDT"], ws_url="https://example.invalid")
    with pytest.raises(ValueError, match="both map to BTCUSDT"):
        BinanceProvider(["BTC-USD", "BTC-USDT"], quote_aliases={"USD": "USDT"})


def kline(open_time: int, i: int) -> list[Any]:
    return [
        open_time,
        f"{67000 + i}.10000000",
        f"{67010 + i}.00000000",
        f"{66990 + i}.00000000",
        f"{67005 + i}.50000000",
        "12.34500000",
        open_time + 59_999,
        "827000.12",
        100 + i,
        "6.1",
        "409000.1",
        "0",
    ]


async def test_binance_backfill_pages_through_klines() -> None:
    start = T0
    data = [kline(start + i * 60_000, i) for i in range(1500)]
    data[700][1] = "NaN"  # one broken row is skipped and counted

    def route(path: str, query: dict[str, str]) -> tuple[int, Any]:
        lo, hi, limit = int(query["startTime"]), int(query["endTime"]), int(query["limit"])
        return 200, [row for row in data if lo <= row[0] <= hi][:limit]

    with fake_rest(route) as (url, seen):
        provider = BinanceProvider(["BTC-USDT"], rest_url=url)
        rows = await provider.backfill("BTC-USDT", "1m", start, start + 1499 * 60_000)
    assert len(rows) == 1499
    assert rows[0] == (
        start,
        Decimal("67000.1"),
        Decimal("67010"),
        Decimal("66990"),
        Decimal("67005.5"),
        Decimal("12.345"),
        100,
    )
    assert rows[-1][0] == start + 1499 * 60_000
    assert all(a[0] < b[0] for a, b in itertools.pairwise(rows))
    assert provider.stats["malformed"] == 1
    assert [p for p, _ in seen] == ["/api/v3/klines", "/api/v3/klines"]
    assert seen[0][1] == {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "startTime": str(start),
        "endTime": str(start + 1499 * 60_000),
        "limit": "1000",
    }
    assert seen[1][1]["startTime"] == str(start + 1000 * 60_000)


async def test_backfill_failures_raise_provider_error() -> None:
    with fake_rest(lambda path, query: (500, {"code": -1000})) as (url, _):
        with pytest.raises(ProviderError, match="klines"):
            await BinanceProvider(["BTC-USDT"], rest_url=url).backfill("BTC-USDT", "1m", T0, T0)
        with pytest.raises(ProviderError, match="candles"):
            await CoinbaseProvider(["BTC-USD"], rest_url=url).backfill("BTC-USD", "1m", T0, T0)
    with pytest.raises(ValueError, match="interval"):
        await BinanceProvider(["BTC-USDT"]).backfill("BTC-USDT", "2m", T0, T0)


# -- Coinbase ----------------------------------------------------------------------------------


def c_ticker(
    product: str,
    sequence: int,
    trade_id: int,
    price: str,
    size: str = "0.01000000",
    time_: str = "2024-06-01T00:00:00.123456Z",
    bid: str = "66999.99",
    ask: str = "67000.01",
) -> dict[str, Any]:
    return {
        "type": "ticker",
        "sequence": sequence,
        "product_id": product,
        "price": price,
        "open_24h": "66120.5",
        "volume_24h": "12345.67891011",
        "low_24h": "65800",
        "high_24h": "67500",
        "volume_30d": "401234.5",
        "best_bid": bid,
        "best_bid_size": "0.50000000",
        "best_ask": ask,
        "best_ask_size": "0.40000000",
        "side": "buy",
        "time": time_,
        "trade_id": trade_id,
        "last_size": size,
    }


def c_heartbeat(product: str, sequence: int, last_trade_id: int) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "sequence": sequence,
        "last_trade_id": last_trade_id,
        "product_id": product,
        "time": "2024-06-01T00:00:01.000000Z",
    }


def c_subscriptions(products: list[str]) -> dict[str, Any]:
    return {
        "type": "subscriptions",
        "channels": [
            {"name": "ticker", "product_ids": products},
            {"name": "heartbeat", "product_ids": products},
        ],
    }


def coinbase(url: str, **options: Any) -> CoinbaseProvider:
    return CoinbaseProvider(["BTC-USD", "eth-usd"], ws_url=url, **{**FAST, **options})


async def test_coinbase_subscribes_and_turns_tickers_into_ticks() -> None:
    frames: list[Frame] = [
        c_subscriptions(["BTC-USD", "ETH-USD"]),
        c_heartbeat("BTC-USD", 90_000, 500),
        c_ticker("BTC-USD", 90_010, 501, "67000.00", "0.01500000", "2024-06-01T00:00:00.123456Z"),
        c_ticker("SOL-USD", 5, 7, "150.00"),  # not subscribed
        c_ticker(
            "ETH-USD", 40_000, 77, "3500.10", "1.25", "2024-06-01T00:00:01.9Z", "3500.09", "3500.11"
        ),
        {"type": "status", "products": []},  # unknown types are ignored
    ]
    async with fake_exchange(Session(frames, read_subscription=True)) as fake:
        provider = coinbase(fake.url)
        ticks = await take(provider, 2)
    assert fake.subscriptions == [
        {
            "type": "subscribe",
            "product_ids": ["BTC-USD", "ETH-USD"],
            "channels": ["ticker", "heartbeat"],
        }
    ]
    assert ticks == [
        Tick(
            "BTC-USD",
            Decimal("67000.00"),
            Decimal("0.015"),
            1717200000123,
            Decimal("66999.99"),
            Decimal("67000.01"),
            "coinbase",
        ),
        Tick(
            "ETH-USD",
            Decimal("3500.10"),
            Decimal("1.25"),
            1717200001900,
            Decimal("3500.09"),
            Decimal("3500.11"),
            "coinbase",
        ),
    ]
    assert provider.stats == {"malformed": 0, "dropped": 1, "gaps": 0, "reconnects": 0, "stalls": 0}


async def test_coinbase_malformed_messages_are_counted_and_skipped() -> None:
    good = c_ticker("BTC-USD", 100, 1, "67000.00")
    bad: list[Frame] = [
        "not json at all",
        '{"type": "ticker", "price": NaN}',  # NaN is not JSON
        "42",
        {"product_id": "BTC-USD"},  # no type
        {k: v for k, v in good.items() if k != "price"},
        {**good, "price": "NaN"},
        {**good, "price": 67000},  # a number is accepted ...
        {**good, "price": {"value": "1"}},  # ... a dict is not
        {**good, "sequence": "abc"},
        {**good, "time": "yesterday"},
        {**good, "last_size": [1]},
        {**good, "best_bid": "-1"},
        {**good, "product_id": None},
        {k: v for k, v in c_heartbeat("BTC-USD", 1, 1).items() if k != "last_trade_id"},
    ]
    frames = [*bad, c_ticker("BTC-USD", 101, 2, "67001.00")]
    async with fake_exchange(Session(frames, read_subscription=True)) as fake:
        provider = coinbase(fake.url)
        ticks = await take(provider, 2)
    assert [t.price for t in ticks] == [Decimal(67000), Decimal("67001.00")]
    assert provider.stats["malformed"] == len(bad) - 1


async def test_coinbase_sequence_order_and_gaps() -> None:
    frames: list[Frame] = [
        c_ticker("BTC-USD", 1_000, 10, "1"),
        c_ticker("BTC-USD", 1_250, 11, "2"),  # sequence jumps are normal (book events)
        c_ticker("BTC-USD", 1_250, 11, "2"),  # duplicate
        c_ticker("BTC-USD", 1_200, 11, "3"),  # out of order
        c_ticker("BTC-USD", 1_400, 14, "4"),  # batched matches: trade ids jump, no gap
        c_heartbeat("BTC-USD", 1_500, 16),  # announces trades 15-16 ...
        c_heartbeat("BTC-USD", 1_600, 16),  # ... that never arrived: one gap
        c_heartbeat("BTC-USD", 1_700, 16),  # counted once
        c_ticker("BTC-USD", 1_800, 17, "5"),
        c_heartbeat("BTC-USD", 1_900, 17),
        c_heartbeat("BTC-USD", 2_000, 17),
        c_ticker("BTC-USD", 2_100, 18, "6"),
    ]
    async with fake_exchange(Session(frames, read_subscription=True)) as fake:
        provider = coinbase(fake.url)
        ticks = await take(provider, 5)
    assert [t.price for t in ticks] == [Decimal(i) for i in (1, 2, 4, 5, 6)]
    assert provider.stats["dropped"] == 2
    assert provider.stats["gaps"] == 1


async def test_coinbase_reconnects_after_a_drop_without_repeating_a_trade() -> None:
    first = Session(
        [c_ticker("BTC-USD", 100, 10, "1"), c_ticker("BTC-USD", 110, 11, "2")],
        end="drop",
        read_subscription=True,
    )
    # The new subscription starts with a snapshot of the last trade, already delivered.
    second = Session(
        [c_ticker("BTC-USD", 110, 11, "2"), c_ticker("BTC-USD", 120, 12, "3")],
        read_subscription=True,
    )
    async with fake_exchange(first, second) as fake:
        provider = coinbase(fake.url)
        ticks = await take(provider, 3)
    assert [t.price for t in ticks] == [Decimal(1), Decimal(2), Decimal(3)]
    assert len(fake.subscriptions) == 2
    assert provider.stats["reconnects"] >= 1
    assert provider.stats["dropped"] == 1 and provider.stats["gaps"] == 0


async def test_coinbase_trades_missed_while_disconnected_count_a_gap() -> None:
    first = Session([c_ticker("BTC-USD", 100, 10, "1")], end="drop", read_subscription=True)
    second = Session([c_ticker("BTC-USD", 900, 25, "2")], read_subscription=True)
    async with fake_exchange(first, second) as fake:
        provider = coinbase(fake.url)
        await take(provider, 2)
    assert provider.stats["gaps"] == 1


async def test_coinbase_error_message_forces_a_reconnect() -> None:
    error = {
        "type": "error",
        "message": "Failed to subscribe",
        "reason": "BTC-XYZ is not a valid product",
    }
    first = Session([error], read_subscription=True)  # the error, then the connection stays open
    second = Session([c_ticker("BTC-USD", 1, 1, "67000")], read_subscription=True)
    async with fake_exchange(first, second) as fake:
        provider = coinbase(fake.url)
        ticks = await take(provider, 1)
    assert len(ticks) == 1
    assert len(fake.subscriptions) == 2
    assert provider.stats["reconnects"] == 1 and provider.stats["malformed"] == 0


async def test_coinbase_stall_watchdog_reconnects() -> None:
    first = Session([c_ticker("BTC-USD", 1, 1, "1")], read_subscription=True)  # then silence
    second = Session([c_ticker("BTC-USD", 2, 2, "2")], read_subscription=True)
    async with fake_exchange(first, second) as fake:
        provider = coinbase(fake.url, stall_timeout_s=0.3)
        ticks = await take(provider, 2)
    assert [t.price for t in ticks] == [Decimal(1), Decimal(2)]
    assert provider.stats["stalls"] == 1
    # The 0.3 s watchdog, not FAST's 3 s (the margin is for a loaded machine).
    assert 0.3 <= fake.connected_at[1] - fake.connected_at[0] < 2.5


async def test_coinbase_heartbeats_keep_the_watchdog_quiet() -> None:
    # Beats 0.1 s apart for 0.8 s: longer than the 0.5 s watchdog, which only they reset.
    beats: list[Frame] = []
    for i in range(8):
        beats += [c_heartbeat("BTC-USD", 10 + i, 0)]

    async def session_with_spaced_beats(ws: ServerConnection) -> None:
        await ws.recv()
        for beat in beats:
            await ws.send(json.dumps(beat))
            await asyncio.sleep(0.1)
        await ws.send(json.dumps(c_ticker("BTC-USD", 100, 1, "1")))
        await ws.wait_closed()

    async with serve(session_with_spaced_beats, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        provider = coinbase(f"ws://127.0.0.1:{port}", stall_timeout_s=0.5)
        ticks = await take(provider, 1)
    assert len(ticks) == 1
    assert provider.stats["stalls"] == 0 and provider.stats["reconnects"] == 0


async def test_coinbase_backfill_pages_and_sorts_candles() -> None:
    start = T0  # 2024-06-01T00:00:00Z
    minutes = 700

    def route(path: str, query: dict[str, str]) -> tuple[int, Any]:
        assert path == "/products/BTC-USD/candles"
        granularity = int(query["granularity"])
        lo = _parse_iso(query["start"])
        hi = _parse_iso(query["end"])
        rows = []
        for t in range(lo, hi + 1, granularity):
            i = (t * 1000 - start) // (granularity * 1000)
            # JSON numbers, as Coinbase sends them: [time, low, high, open, close, volume]
            rows.append([t, 66990.5 + i, 67010.25 + i, 67000.1 + i, 67005.75 + i, 1.5])
        return 200, rows[::-1][:300]  # newest first

    with fake_rest(route) as (url, seen):
        provider = CoinbaseProvider(["BTC-USD"], rest_url=url)
        rows = await provider.backfill("BTC-USD", "1m", start, start + (minutes - 1) * 60_000)
        assert len(seen) == 3  # 300 + 300 + 100
        assert seen[0][1] == {
            "granularity": "60",
            "start": "2024-06-01T00:00:00Z",
            "end": "2024-06-01T04:59:00Z",
        }
        hours = await provider.backfill("BTC-USD", "4h", start, start + 23 * 3_600_000)
        assert seen[-1][1]["granularity"] == "3600"
    assert len(rows) == minutes
    assert rows[0] == (
        start,
        Decimal("67000.1"),
        Decimal("67010.25"),
        Decimal("66990.5"),
        Decimal("67005.75"),
        Decimal("1.5"),
        0,
    )
    assert [r[0] for r in rows] == [start + i * 60_000 for i in range(minutes)]
    # 4h from hourly candles: six intervals of four hours each.
    assert [r[0] for r in hours] == [start + i * 4 * 3_600_000 for i in range(6)]
    assert hours[1] == (
        start + 4 * 3_600_000,
        Decimal("67004.1"),  # open of hour 4
        Decimal("67017.25"),  # high of hour 7
        Decimal("66994.5"),  # low of hour 4
        Decimal("67012.75"),  # close of hour 7
        Decimal("6.0"),
        0,
    )


def _parse_iso(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp())
