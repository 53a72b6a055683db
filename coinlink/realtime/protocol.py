"""The ``/ws`` protocol: what clients may send, and the frames the server sends back.

Inbound messages are parsed strictly (a pydantic union on ``op``); every problem becomes a
:class:`ProtocolError` carrying the contract's error code and the message's ``id`` when it
had one. Outbound messages are built as bytes and framed once
(:func:`coinlink.realtime.transport.text_frame`): the same bytes serve every socket and the
hub hands one ``bytes`` object to all of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from coinlink import channels
from coinlink.channels import NOTIFICATIONS, TICKERS
from coinlink.market.types import INTERVALS, served_spelling
from coinlink.realtime.transport import text_frame
from coinlink.wire import now_ms

# The largest `id` a client may pick, and `seq` may reach: it must survive a round trip
# through JavaScript.
_MAX_ID = 2**53 - 1
_INTEGER = f"must be an integer from 0 to {_MAX_ID}"
# A number out of its field's range, or not an integer (1e30 parses as a float): named
# with the range, not pydantic's bare "valid integer".
_NUMBER_ERRORS = ("int_type", "int_from_float", "greater_than_equal", "less_than_equal")

ErrorCode = Literal[
    "invalid_message",
    "invalid_token",
    "unauthorized",
    "unknown_channel",
    "too_many_subscriptions",
    "rate_limited",
]
"""Every ``code`` an ``error`` frame may carry (the AsyncAPI document lists them)."""


class ProtocolError(Exception):
    """A client message the server refuses; ``code`` is the contract's error code."""

    def __init__(self, code: ErrorCode, message: str, msg_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id


# Descriptions below are the AsyncAPI document's (coinlink.realtime.asyncapi).
_CHANNEL = Annotated[
    str,
    Field(
        max_length=64,
        description="ticker:{SYMBOL}, tickers, candles:{SYMBOL}:{interval} or notifications",
    ),
]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: int = Field(
        ge=0, le=_MAX_ID, description="Any integer the client picks; the reply echoes it."
    )


class Auth(_Op):
    """Authenticate the socket with an access token (needed for ``notifications``)."""

    op: Literal["auth"]
    token: str = Field(min_length=1, max_length=4096, description="An access token (JWT).")


class Subscribe(_Op):
    """Follow channels; each gets a snapshot, or with ``since`` the updates it missed."""

    op: Literal["subscribe"]
    channels: list[_CHANNEL] = Field(min_length=1, max_length=1000)
    since: dict[_CHANNEL, Annotated[int, Field(ge=0, le=_MAX_ID)]] = Field(
        default_factory=dict,
        max_length=1000,
        description="The last seq seen of some of the channels (each must be in channels).",
    )


class Unsubscribe(_Op):
    """Stop following channels."""

    op: Literal["unsubscribe"]
    channels: list[_CHANNEL] = Field(min_length=1, max_length=1000)


class Ping(_Op):
    """Ask for a ``pong`` (an application-level liveness check with the server's time)."""

    op: Literal["ping"]


ClientMessage = Auth | Subscribe | Unsubscribe | Ping
_OPS = ("auth", "subscribe", "unsubscribe", "ping")
# What a client that speaks another exchange's protocol (Binance's "method", ...) reads.
_SHAPE = (
    f'each message is a JSON object with "op" (one of: {", ".join(_OPS)}) and an integer '
    '"id", e.g. {"op":"subscribe","id":1,"channels":["ticker:BTC-USD"]}'
)
_CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(
    Annotated[ClientMessage, Field(discriminator="op")]
)


def parse(raw: str | bytes) -> ClientMessage:
    """One client message, or :class:`ProtocolError` (``invalid_message``) saying why not."""
    if isinstance(raw, bytes):
        raise ProtocolError("invalid_message", f"binary frame: send text frames; {_SHAPE}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Its reason too: valid-looking JSON is refused for a lone surrogate escape
        # ("\ud800"), a number beyond a double or nesting deeper than 1024.
        raise ProtocolError("invalid_message", f"not JSON ({exc.msg}); {_SHAPE}") from None
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", f"not a JSON object; {_SHAPE}")
    msg_id = value.get("id")
    if not isinstance(msg_id, int) or isinstance(msg_id, bool) or not 0 <= msg_id <= _MAX_ID:
        msg_id = None
    if value.get("op") not in _OPS:
        raise ProtocolError("invalid_message", f'no valid "op"; {_SHAPE}', msg_id)
    try:
        return _CLIENT_MESSAGE.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        what = first["msg"]
        if first["type"] in _NUMBER_ERRORS and first["loc"][1:2] in (("id",), ("since",)):
            what = _INTEGER + (" (the last seq seen)" if first["loc"][1] == "since" else "")
        raise ProtocolError("invalid_message", f"{where}: {what}", msg_id) from None


def canonical_channel(name: str, symbols: frozenset[str]) -> str | None:
    """The channel ``name`` means, as the server spells it, or None if there is none.

    ``ticker:SYM``, ``candles:SYM:INTERVAL``, ``tickers`` or ``notifications``; the kind and
    the symbol are case-insensitive like REST symbols (``Ticker:btc-usd`` is
    ``ticker:BTC-USD``), the interval is not (``1m`` and ``1M`` could be different ones).
    """
    kind, colon, rest = name.partition(":")
    kind = kind.lower()
    if not colon:
        return kind if kind in (TICKERS, NOTIFICATIONS) else None
    symbol, _, interval = rest.partition(":")
    symbol = served_spelling(symbol)
    if symbol not in symbols:
        return None
    if kind == "ticker" and not interval:
        return channels.ticker(symbol)
    if kind == "candles" and interval in INTERVALS:
        return channels.candles(symbol, interval)
    return None


def conflatable(channel: str) -> bool:
    """Ticker channels carry state, so a lagging socket needs only the newest message."""
    return channel == TICKERS or channel.startswith("ticker:")


# -- outbound -----------------------------------------------------------------------------


def update(channel: str, seq: int, data: bytes, kind: str = "update") -> bytes:
    """An ``update`` (or ``snapshot``) frame around already-encoded ``data``."""
    return text_frame(
        b'{"type":"%s","channel":"%s","seq":%d,"data":%s}'
        % (kind.encode(), channel.encode(), seq, data)
    )


def message(value: dict[str, Any]) -> bytes:
    return text_frame(orjson.dumps(value))


def ack(msg_id: int, op: str, **extra: Any) -> bytes:
    return message({"type": "ack", "id": msg_id, "op": op, **extra})


def error(code: ErrorCode, text: str, msg_id: int | None = None) -> bytes:
    return message({"type": "error", "id": msg_id, "code": code, "message": text})


def pong(msg_id: int) -> bytes:
    return message({"type": "pong", "id": msg_id, "ts": now_ms()})


def heartbeat() -> bytes:
    return message({"type": "heartbeat", "ts": now_ms()})
