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

from coinlink.channels import NOTIFICATIONS, TICKERS
from coinlink.market.types import INTERVALS
from coinlink.realtime.transport import text_frame
from coinlink.wire import now_ms

# The largest `id` a client may pick: it must survive a round trip through JavaScript.
_MAX_ID = 2**53 - 1

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
    since: dict[_CHANNEL, Annotated[int, Field(ge=0)]] = Field(
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
_CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(
    Annotated[ClientMessage, Field(discriminator="op")]
)


def parse(raw: str | bytes) -> ClientMessage:
    """One client message, or :class:`ProtocolError` (``invalid_message``) saying why not."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_message", "a message is one JSON object") from None
    msg_id = value.get("id") if isinstance(value, dict) else None
    if not isinstance(msg_id, int) or isinstance(msg_id, bool) or not 0 <= msg_id <= _MAX_ID:
        msg_id = None
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", "a message is one JSON object")
    try:
        return _CLIENT_MESSAGE.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise ProtocolError("invalid_message", f"{where}: {first['msg']}", msg_id) from None


def channel_is_known(channel: str, symbols: frozenset[str]) -> bool:
    """``ticker:SYM``, ``candles:SYM:INTERVAL``, ``tickers`` or ``notifications``."""
    if channel in (TICKERS, NOTIFICATIONS):
        return True
    kind, _, rest = channel.partition(":")
    if kind == "ticker":
        return rest in symbols
    if kind == "candles":
        symbol, _, interval = rest.partition(":")
        return symbol in symbols and interval in INTERVALS
    return False


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
