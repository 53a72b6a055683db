"""The AsyncAPI document's frame schemas against what the producers really make: the
ingest pipeline's tickers and candles, the hub's snapshots, the protocol's replies.

Channel data objects are open in the document (clients ignore unknown fields); here each
real producer must make exactly the documented fields, so a field added to a producer
without the document fails."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

import orjson
import pytest

from coinlink.alerts.notifications import notification_dict
from coinlink.market.pipeline import Pipeline
from coinlink.market.tick_validator import TickValidator
from coinlink.market.types import INTERVALS, Tick
from coinlink.market.view import MarketView
from coinlink.realtime import frames, protocol
from coinlink.realtime.hub import _as_published
from models.alerts import Notification
from tests.support.asyncapi import check_frame, served_document
from tests.support.ws import parse_frame

SYMBOLS = ["BTC-USD", "ETH-USD"]


def framed(frame: bytes) -> Any:
    return orjson.loads(parse_frame(frame).data)


def documented_fields(schema: str) -> set[str]:
    return set(served_document()["components"]["schemas"][schema]["properties"])


def test_what_the_pipeline_publishes_is_documented_exactly() -> None:
    now = time.time_ns() // 1_000_000
    start = now // 60_000 * 60_000 - 120_000
    pipeline = Pipeline(SYMBOLS, TickValidator(max_age_ms=600_000))
    pipeline.apply(Tick("BTC-USD", Decimal("67000.5"), Decimal("0.25"), start, source="t"))
    pipeline.apply(
        Tick(
            "BTC-USD",
            Decimal("67010"),
            Decimal("0"),
            start + 61_000,
            Decimal("67009"),
            Decimal("67011"),
            "t",
        )
    )
    messages, closed = pipeline.take_messages(start + 61_000)
    assert closed and {channel.split(":")[0] for channel, _ in messages} == {"ticker", "candles"}
    for seq, (channel, data) in enumerate(messages, start=1):
        check_frame(framed(protocol.update(channel, seq, data)))
        schema = "Ticker" if channel.startswith("ticker:") else "Candle"
        assert set(orjson.loads(data)) == documented_fields(schema), channel
    batch = orjson.dumps(pipeline.snapshots(start + 61_000))
    check_frame(framed(protocol.update("tickers", 9, batch)))


def test_snapshots_before_the_first_tick_are_documented() -> None:
    """A ticker with null fields, a list of the tickers known, a candle channel's null."""
    view = MarketView(SYMBOLS, 60)
    pending = orjson.dumps(_as_published(view.ticker("ETH-USD", 0)))
    assert set(orjson.loads(pending)) == documented_fields("Ticker")
    check_frame(framed(protocol.update("ticker:ETH-USD", 0, pending, "snapshot")))
    check_frame(framed(protocol.update("tickers", 0, b"[]", "snapshot")))
    for interval in INTERVALS:
        check_frame(framed(protocol.update(f"candles:BTC-USD:{interval}", 0, b"null", "snapshot")))
    check_frame(framed(protocol.update("notifications", 4, b"null", "snapshot")))


def test_a_notification_is_documented_exactly() -> None:
    notification = Notification(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        kind="price_alert",
        title="BTC-USD above 1",
        body="BTC-USD is at 2",
        data={
            "alert_id": str(uuid.uuid4()),
            "symbol": "BTC-USD",
            "condition": "above",
            "threshold": "1",
            "price": "2",
            "ts": 1,
        },
        created_at=datetime.now(UTC),
    )
    data = orjson.dumps(notification_dict(notification))
    assert set(orjson.loads(data)) == documented_fields("Notification")
    check_frame(framed(protocol.update("notifications", 5, data)))


def test_replies_and_heartbeats_are_documented() -> None:
    for frame in (
        protocol.ack(1, "auth", user_id=str(uuid.uuid4())),
        protocol.ack(2, "subscribe", channels=[{"channel": "tickers", "recovered": False}]),
        protocol.ack(3, "unsubscribe", channels=["tickers"]),
        protocol.pong(4),
        protocol.heartbeat(),
        protocol.error("invalid_message", "a message is one JSON object"),
        *(protocol.error(code, "why", 5) for code in get_args(protocol.ErrorCode)),
    ):
        check_frame(framed(frame))


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "update", "channel": "ticker:BTC-USD", "seq": 0, "data": {}},
        {"type": "update", "channel": "candles:BTC-USD:2m", "seq": 1, "data": None},
        {"type": "snapshot", "channel": "notifications", "seq": 1, "data": {}},
        {"type": "error", "id": 1, "code": "teapot", "message": "x"},
        {"type": "pong", "id": 1, "ts": 1, "extra": True},
        {"type": "welcome"},
    ],
)
def test_frames_the_document_does_not_describe_fail_the_check(frame: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="not a frame of the AsyncAPI document"):
        check_frame(frame)


def test_candle_intervals_are_the_markets() -> None:
    assert get_args(frames.Interval) == tuple(INTERVALS)
