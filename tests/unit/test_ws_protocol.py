"""The /ws wire format: update frames the websockets library reads back, strict parsing."""

from __future__ import annotations

import pytest

from coinlink.realtime import protocol
from coinlink.realtime.protocol import Auth, Ping, ProtocolError, Subscribe, Unsubscribe
from tests.support.ws import parse_frame

SYMBOLS = frozenset({"BTC-USD", "ETH-USD"})


def test_an_update_wraps_the_data_bytes_untouched() -> None:
    frame = parse_frame(protocol.update("ticker:BTC-USD", 42, b'{"price":"1.50"}'))
    assert frame.data == (
        b'{"type":"update","channel":"ticker:BTC-USD","seq":42,"data":{"price":"1.50"}}'
    )


def test_client_messages_parse_into_their_ops() -> None:
    assert protocol.parse('{"op":"ping","id":7}') == Ping(op="ping", id=7)
    assert protocol.parse('{"op":"auth","id":1,"token":"t"}') == Auth(op="auth", id=1, token="t")
    sub = protocol.parse('{"op":"subscribe","id":2,"channels":["tickers"],"since":{"tickers":5}}')
    assert sub == Subscribe(op="subscribe", id=2, channels=["tickers"], since={"tickers": 5})
    assert isinstance(protocol.parse('{"op":"unsubscribe","id":3,"channels":["x"]}'), Unsubscribe)


@pytest.mark.parametrize(
    ("raw", "msg_id"),
    [
        ("", None),
        ("null", None),
        ('"ping"', None),
        ('{"op":"ping","id":true}', None),
        ('{"op":"ping","id":1.0}', None),
        ('{"op":"ping","id":-1}', None),
        ('{"op":"ping","id":9007199254740992}', None),
        ('{"op":"auth","id":4,"token":""}', 4),
        ('{"op":"subscribe","id":5,"channels":"tickers"}', 5),
        ('{"op":"subscribe","id":6,"channels":["tickers"],"since":{"tickers":"3"}}', 6),
    ],
)
def test_malformed_messages_are_invalid_and_keep_a_usable_id(raw: str, msg_id: int | None) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse(raw)
    assert refused.value.code == "invalid_message"
    assert refused.value.msg_id == msg_id


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (
            '{"op":"subscribe","id":1,"channels":["tickers"],"since":{"tickers":1%s}}' % ("0" * 30),
            "subscribe.since.tickers",
        ),
        (
            '{"op":"subscribe","id":1,"channels":["tickers"],"since":{"tickers":9007199254740992}}',
            "subscribe.since.tickers",
        ),
        (
            '{"op":"subscribe","id":1,"channels":["tickers"],"since":{"tickers":-1}}',
            "subscribe.since.tickers",
        ),
        (
            '{"op":"subscribe","id":1,"channels":["tickers"],"since":{"tickers":2.5}}',
            "subscribe.since.tickers",
        ),
        ('{"op":"ping","id":1e30}', "ping.id"),
    ],
)
def test_a_number_out_of_range_is_told_the_range(raw: str, where: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse(raw)
    assert refused.value.message.startswith(
        f"{where}: must be an integer from 0 to 9007199254740991"
    )


@pytest.mark.parametrize(
    "raw",
    [
        '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}',  # Binance
        '{"type":"subscribe","product_ids":["BTC-USD"],"channels":["ticker"]}',  # Coinbase
        '{"op":"dance","id":1}',
        '{"op":7,"id":1}',
        "not json",
        "[1, 2]",
        b'{"op":"ping","id":1}',  # right, but in a binary frame
    ],
)
def test_a_message_in_another_shape_is_told_the_ops_and_an_example(raw: str | bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse(raw)
    message = refused.value.message
    assert refused.value.code == "invalid_message"
    assert "auth, subscribe, unsubscribe, ping" in message
    assert '{"op":"subscribe","id":1,"channels":["ticker:BTC-USD"]}' in message
    assert "discriminator" not in message
    assert ("binary" in message) is isinstance(raw, bytes)


@pytest.mark.parametrize(
    ("name", "channel"),
    [
        ("ticker:BTC-USD", "ticker:BTC-USD"),
        ("ticker:btc-usd", "ticker:BTC-USD"),
        ("Ticker:Btc-Usd", "ticker:BTC-USD"),
        ("ticker:DOGE-USD", None),
        ("ticker:BTC-USD:1m", None),
        ("tickers", "tickers"),
        ("TICKERS", "tickers"),
        ("tickers:BTC-USD", None),
        ("notifications", "notifications"),
        ("candles:ETH-USD:4h", "candles:ETH-USD:4h"),
        ("CANDLES:eth-usd:4h", "candles:ETH-USD:4h"),
        ("candles:ETH-USD:4H", None),  # intervals keep their case: 1M is not 1m
        ("candles:ETH-USD:2h", None),
        ("candles:ETH-USD", None),
        ("revocations", None),
        ("notifications:someone-else", None),
        ("ticker:btc-u\u017fd", None),  # a long s: str.upper() would make it BTC-USD
    ],
)
def test_channel_names_are_case_insensitive_except_intervals(
    name: str, channel: str | None
) -> None:
    assert protocol.canonical_channel(name, SYMBOLS) == channel


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"op":"ping","id":1,"x":"\\ud800"}', "surrogate"),
        ('{"op":"ping","id":1e400}', "infinity"),
    ],
)
def test_json_refused_for_what_looks_valid_says_why(raw: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse(raw)
    assert refused.value.message.startswith("not JSON (")
    assert reason in refused.value.message.split(";")[0]
