"""Every frame the server sends on ``/ws``, as models: the schemas of the AsyncAPI document
(:mod:`coinlink.realtime.asyncapi`), which the integration tests hold every received frame
to. The frames themselves are written as bytes by :mod:`coinlink.realtime.protocol` (for
speed); these models only describe them.

Frames are closed (no other fields); the ``data`` objects of channels are open: clients
ignore fields they do not know, so the server may add some.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from coinlink.alerts.engine import Condition
from coinlink.market.types import INTERVALS
from coinlink.realtime.protocol import ErrorCode
from config.settings import SYMBOL_PATTERN

DecimalStr = Annotated[
    str,
    Field(
        pattern=r"^-?\d+(\.\d+)?$",
        description="An exact decimal as a string: no exponent, no trailing zeros.",
        examples=["67012.35"],
    ),
]
EpochMs = Annotated[
    int,
    Field(
        ge=0,
        description="Milliseconds since the Unix epoch.",
        json_schema_extra={"format": "int64"},
    ),
]
Symbol = Annotated[str, Field(pattern=f"^{SYMBOL_PATTERN}$", examples=["BTC-USD"])]
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
_INTERVALS = "|".join(INTERVALS)

# Channel names, as patterns (also in the AsyncAPI channel's description).
TICKER_CHANNEL = f"^ticker:{SYMBOL_PATTERN}$"
CANDLES_CHANNEL = f"^candles:{SYMBOL_PATTERN}:({_INTERVALS})$"


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- what channels carry -----------------------------------------------------------------


class Ticker(BaseModel):
    """One symbol's ticker, rolling 24 h statistics. The decimals and ``ts`` are null only
    in a snapshot of a symbol that has had no tick yet."""

    symbol: Symbol
    price: DecimalStr | None = Field(description="The last price.")
    bid: DecimalStr | None = Field(description="The last bid seen; null until one came.")
    ask: DecimalStr | None = Field(description="The last ask seen; null until one came.")
    open_24h: DecimalStr | None
    high_24h: DecimalStr | None
    low_24h: DecimalStr | None
    volume_24h: DecimalStr | None = Field(description="Base-currency volume.")
    quote_volume_24h: DecimalStr | None = Field(description="Sum of price * volume.")
    change_24h: DecimalStr | None = Field(description="price - open_24h.")
    change_pct_24h: DecimalStr | None = Field(description="A percentage, rounded to 0.01.")
    ts: EpochMs | None = Field(description="Exchange time of the last tick.")


class Candle(BaseModel):
    """One candle; the current one is updated as ticks come, then once with ``closed``."""

    symbol: Symbol
    interval: Interval
    open_time: EpochMs = Field(description="Inclusive, aligned to the interval.")
    close_time: EpochMs = Field(description="Inclusive: open_time + the interval - 1 ms.")
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    close: DecimalStr
    volume: DecimalStr
    trades: int = Field(ge=0)
    closed: bool


class PriceAlertData(BaseModel):
    """What fired: the alert and the tick that crossed its threshold."""

    alert_id: str = Field(json_schema_extra={"format": "uuid"})
    symbol: Symbol
    condition: Condition
    threshold: DecimalStr
    price: DecimalStr
    ts: EpochMs


class Notification(BaseModel):
    """A notification as ``GET /api/v2/notifications`` lists it."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    kind: Literal["price_alert"]
    title: str
    body: str
    data: PriceAlertData
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    read_at: str | None = Field(json_schema_extra={"format": "date-time"})


# -- channel frames ----------------------------------------------------------------------

TickerChannel = Annotated[str, Field(pattern=TICKER_CHANNEL, examples=["ticker:BTC-USD"])]
CandlesChannel = Annotated[str, Field(pattern=CANDLES_CHANNEL, examples=["candles:BTC-USD:1m"])]


class _Update(_Frame):
    type: Literal["update"]
    seq: int = Field(
        ge=1, description="The channel's sequence number: one more than the previous update's."
    )


class _Snapshot(_Frame):
    type: Literal["snapshot"]
    seq: int = Field(
        ge=0, description="The seq of the state shown; the next update has seq + 1 (0: none yet)."
    )


class TickerUpdate(_Update):
    channel: TickerChannel
    data: Ticker


class TickerSnapshot(_Snapshot):
    channel: TickerChannel
    data: Ticker


class TickersUpdate(_Update):
    channel: Literal["tickers"]
    data: list[Ticker] = Field(description="Every symbol's ticker that has had a tick.")


class TickersSnapshot(_Snapshot):
    channel: Literal["tickers"]
    data: list[Ticker]


class CandleUpdate(_Update):
    channel: CandlesChannel
    data: Candle


class CandleSnapshot(_Snapshot):
    channel: CandlesChannel
    data: Candle | None = Field(description="null before the channel's first candle.")


class NotificationUpdate(_Update):
    channel: Literal["notifications"]
    data: Notification


class NotificationSnapshot(_Snapshot):
    channel: Literal["notifications"]
    data: None = Field(description="Always null: read notifications from the REST API.")


# -- replies and the rest ----------------------------------------------------------------

_REPLY_ID = "The id of the message this answers."


class AuthAck(_Frame):
    """The socket is authenticated as ``user_id``."""

    type: Literal["ack"]
    id: int = Field(description=_REPLY_ID)
    op: Literal["auth"]
    user_id: str = Field(json_schema_extra={"format": "uuid"})


class Subscribed(_Frame):
    channel: str = Field(description="A channel name as the client wrote it.")
    recovered: bool = Field(
        description="true: the updates after since follow (none when nothing was missed); "
        "false: a snapshot follows."
    )


class SubscribeAck(_Frame):
    """Every channel is followed; its snapshot or missed updates come next."""

    type: Literal["ack"]
    id: int = Field(description=_REPLY_ID)
    op: Literal["subscribe"]
    channels: list[Subscribed]


class UnsubscribeAck(_Frame):
    """No update of these channels follows."""

    type: Literal["ack"]
    id: int = Field(description=_REPLY_ID)
    op: Literal["unsubscribe"]
    channels: list[str]


class Error(_Frame):
    """A message was refused (nothing of it happened); the socket stays open, except after
    ``rate_limited``, which a close 1008 follows."""

    type: Literal["error"]
    id: int | None = Field(description="The refused message's id; null when it had no usable one.")
    code: ErrorCode
    message: str = Field(description="What was wrong, for people.")


class Pong(_Frame):
    type: Literal["pong"]
    id: int = Field(description=_REPLY_ID)
    ts: EpochMs = Field(description="The server's clock.")


class Heartbeat(_Frame):
    """Sent to a socket that got nothing else for ``COINLINK_WS_HEARTBEAT_S``."""

    type: Literal["heartbeat"]
    ts: EpochMs = Field(description="The server's clock.")


CHANNEL_FRAMES: tuple[type[_Frame], ...] = (
    TickerSnapshot,
    TickerUpdate,
    TickersSnapshot,
    TickersUpdate,
    CandleSnapshot,
    CandleUpdate,
    NotificationSnapshot,
    NotificationUpdate,
)
REPLIES: tuple[type[_Frame], ...] = (AuthAck, SubscribeAck, UnsubscribeAck, Pong, Error)
SERVER_FRAMES: tuple[type[_Frame], ...] = (*CHANNEL_FRAMES, *REPLIES, Heartbeat)
