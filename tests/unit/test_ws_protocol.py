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
    assert protocol.parse(b'{"op":"auth","id":1,"token":"t"}') == Auth(op="auth", id=1, token="t")
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
    ("channel", "known"),
    [
        ("ticker:BTC-USD", True),
        ("ticker:btc-usd", False),
        ("ticker:DOGE-USD", False),
        ("tickers", True),
        ("notifications", True),
        ("candles:ETH-USD:4h", True),
        ("candles:ETH-USD:2h", False),
        ("candles:ETH-USD", False),
        ("revocations", False),
        ("notifications:someone-else", False),
    ],
)
def test_only_the_contracts_channels_are_known(channel: str, known: bool) -> None:
    assert protocol.channel_is_known(channel, SYMBOLS) is known
