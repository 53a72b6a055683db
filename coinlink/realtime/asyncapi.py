"""The AsyncAPI 3.0 document of ``/ws``, served at ``/docs/asyncapi.json``.

Built from the models the server parses client messages with
(:mod:`coinlink.realtime.protocol`) and the models of the frames it sends
(:mod:`coinlink.realtime.frames`), so the schemas cannot drift from the code; the limits
are this server's settings. The document describes the server: ``receive`` operations are
what a client may send, ``send`` operations what it gets.
"""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from coinlink import __version__
from coinlink.realtime import frames, protocol
from coinlink.realtime.hub import RESTART_REASON
from config import Settings

_SCHEMAS = "#/components/schemas/{model}"
_CHANNEL = "socket"


class Close(NamedTuple):
    """A close the server initiates: its code, its reason (None: the WebSocket library's
    own text), and when."""

    code: int
    reason: str | None
    when: str


CLOSES = (
    Close(1001, RESTART_REASON, "The server is stopping (a restart, a deployment)."),
    Close(
        1002,
        None,
        "A frame that breaks RFC 6455: unmasked, reserved bits or opcode, a continuation "
        "out of place, a control frame fragmented or over 125 bytes, a bad close code.",
    ),
    Close(1007, None, "A close frame whose reason is not UTF-8."),
    Close(
        1007,
        "text messages must be UTF-8",
        "A text frame whose bytes are not UTF-8; nothing of it is processed.",
    ),
    Close(
        1008,
        "too many messages",
        "More frames (text, binary, fragments, pings, pongs) than the inbound rate allows; "
        "the messages before are answered.",
    ),
    Close(
        1008,
        "session revoked",
        "Logout, password change, refresh-token reuse, account "
        "deletion, or the periodic check found the session gone.",
    ),
    Close(1008, "access token expired", "The token given to `auth` expired (within a second)."),
    Close(1009, None, "A frame over 64 KiB."),
    Close(
        1011,
        "temporarily unavailable; reconnect",
        "The message bus failed while answering a subscribe.",
    ),
    Close(1011, None, "No pong came back within the ping timeout (WebSocket-level ping)."),
    Close(
        1013,
        "too slow to keep up",
        "The client reads too slowly: its queue outgrew the buffer, or it stayed behind too long.",
    ),
)
"""Every close the server initiates (a client's own close is answered with its code)."""

ERROR_CODES: dict[protocol.ErrorCode, str] = {
    "invalid_message": "Not one JSON object of a known op with valid fields (the message "
    "then shows the expected shape); a binary frame; a since key that is not among the "
    "channels; an auth with another user's token.",
    "invalid_token": "The access token is invalid, expired or revoked. An earlier successful "
    "auth stays in place, and the message says as whom.",
    "unauthorized": "notifications before a successful auth.",
    "unknown_channel": "A channel name that does not exist (the message names them); "
    "nothing of the message happened.",
    "too_many_subscriptions": "The subscribe would pass the subscription cap; nothing of "
    "it happened.",
    "rate_limited": "Too many frames; the socket closes (1008) right after.",
}

_EXAMPLES: dict[type[BaseModel], dict[str, Any]] = {
    protocol.Auth: {"op": "auth", "id": 1, "token": "eyJhbGciOiJIUzI1NiIs..."},
    protocol.Subscribe: {
        "op": "subscribe",
        "id": 2,
        "channels": ["ticker:BTC-USD", "candles:BTC-USD:1m", "notifications"],
        "since": {"ticker:BTC-USD": 1041},
    },
    protocol.Unsubscribe: {"op": "unsubscribe", "id": 3, "channels": ["candles:BTC-USD:1m"]},
    protocol.Ping: {"op": "ping", "id": 4},
    frames.AuthAck: {
        "type": "ack",
        "id": 1,
        "op": "auth",
        "user_id": "0b6f9a52-3f1e-4f7a-9a57-2c1d1c1e5e10",
    },
    frames.SubscribeAck: {
        "type": "ack",
        "id": 2,
        "op": "subscribe",
        "channels": [
            {"channel": "ticker:BTC-USD", "recovered": True},
            {"channel": "candles:BTC-USD:1m", "recovered": False},
            {"channel": "notifications", "recovered": False},
        ],
    },
    frames.UnsubscribeAck: {
        "type": "ack",
        "id": 3,
        "op": "unsubscribe",
        "channels": ["candles:BTC-USD:1m"],
    },
    frames.Pong: {"type": "pong", "id": 4, "ts": 1765000000123},
    frames.Error: {
        "type": "error",
        "id": 2,
        "code": "unknown_channel",
        "message": "unknown channel: ticker:PEPE-USD",
    },
    frames.Heartbeat: {"type": "heartbeat", "ts": 1765000010000},
}
_TICKER = {
    "symbol": "BTC-USD",
    "price": "67012.35",
    "bid": "67012.3",
    "ask": "67012.4",
    "open_24h": "66100",
    "high_24h": "67500",
    "low_24h": "65800.5",
    "volume_24h": "1234.5678",
    "quote_volume_24h": "82000000.25",
    "change_24h": "912.35",
    "change_pct_24h": "1.38",
    "ts": 1765000000000,
}
_CANDLE = {
    "symbol": "BTC-USD",
    "interval": "1m",
    "open_time": 1764999960000,
    "close_time": 1765000019999,
    "open": "67000",
    "high": "67020",
    "low": "66990.5",
    "close": "67012.35",
    "volume": "3.25",
    "trades": 41,
    "closed": False,
}
_NOTIFICATION = {
    "id": "5d0c8e1e-8f5e-4a53-9b1c-3f0d7a8e2b44",
    "kind": "price_alert",
    "title": "BTC-USD above 67000",
    "body": "BTC-USD is at 67012.35, above 67000.",
    "data": {
        "alert_id": "9a1f0c3e-1b7d-4c55-8e2a-6d4b3c2a1f00",
        "symbol": "BTC-USD",
        "condition": "above",
        "threshold": "67000",
        "price": "67012.35",
        "ts": 1765000000000,
    },
    "created_at": "2026-12-06T05:46:40.012Z",
    "read_at": None,
}
_EXAMPLES.update(
    {
        frames.TickerSnapshot: {
            "type": "snapshot",
            "channel": "ticker:BTC-USD",
            "seq": 1041,
            "data": _TICKER,
        },
        frames.TickerUpdate: {
            "type": "update",
            "channel": "ticker:BTC-USD",
            "seq": 1042,
            "data": _TICKER,
        },
        frames.TickersSnapshot: {
            "type": "snapshot",
            "channel": "tickers",
            "seq": 77,
            "data": [_TICKER],
        },
        frames.TickersUpdate: {
            "type": "update",
            "channel": "tickers",
            "seq": 78,
            "data": [_TICKER],
        },
        frames.CandleSnapshot: {
            "type": "snapshot",
            "channel": "candles:BTC-USD:1m",
            "seq": 310,
            "data": _CANDLE,
        },
        frames.CandleUpdate: {
            "type": "update",
            "channel": "candles:BTC-USD:1m",
            "seq": 311,
            "data": {**_CANDLE, "closed": True},
        },
        frames.NotificationSnapshot: {
            "type": "snapshot",
            "channel": "notifications",
            "seq": 12,
            "data": None,
        },
        frames.NotificationUpdate: {
            "type": "update",
            "channel": "notifications",
            "seq": 13,
            "data": _NOTIFICATION,
        },
    }
)

_CLIENT_MESSAGES: tuple[type[BaseModel], ...] = (
    protocol.Auth,
    protocol.Subscribe,
    protocol.Unsubscribe,
    protocol.Ping,
)

# (operation, summary, the client's message, the replies)
_REQUESTS = (
    ("auth", "Authenticate the socket", protocol.Auth, frames.AuthAck),
    ("subscribe", "Follow channels", protocol.Subscribe, frames.SubscribeAck),
    ("unsubscribe", "Stop following channels", protocol.Unsubscribe, frames.UnsubscribeAck),
    ("ping", "Check the socket, read the server's clock", protocol.Ping, frames.Pong),
)
# (operation, summary, the frames)
_STREAMS = (
    (
        "ticker",
        "`ticker:{SYMBOL}`: one symbol's ticker",
        frames.TickerSnapshot,
        frames.TickerUpdate,
    ),
    (
        "tickers",
        "`tickers`: every ticker, once a second while any changes",
        frames.TickersSnapshot,
        frames.TickersUpdate,
    ),
    (
        "candles",
        "`candles:{SYMBOL}:{interval}`: the current candle, then each close",
        frames.CandleSnapshot,
        frames.CandleUpdate,
    ),
    (
        "notifications",
        "`notifications`: the caller's own notifications (needs auth)",
        frames.NotificationSnapshot,
        frames.NotificationUpdate,
    ),
)


def document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of this server's ``/ws``."""
    server_frames = frames.SERVER_FRAMES
    _, defs = models_json_schema(
        [(model, "validation") for model in _CLIENT_MESSAGES]
        + [(model, "serialization") for model in server_frames],
        ref_template=_SCHEMAS,
    )
    messages = {model.__name__: _message(model) for model in (*_CLIENT_MESSAGES, *server_frames)}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/channels/{_CHANNEL}/messages/{model.__name__}"}

    channel_ref = {"$ref": f"#/channels/{_CHANNEL}"}
    operations: dict[str, Any] = {}
    for name, summary, request, reply in _REQUESTS:
        operations[name] = {
            "action": "receive",
            "channel": channel_ref,
            "summary": summary,
            "description": request.__doc__,
            "messages": [ref(request)],
            "reply": {"channel": channel_ref, "messages": [ref(reply), ref(frames.Error)]},
        }
    for name, summary, snapshot, update in _STREAMS:
        operations[f"{name}Stream"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": summary,
            "messages": [ref(snapshot), ref(update)],
        }
    operations["heartbeat"] = {
        "action": "send",
        "channel": channel_ref,
        "summary": "Heartbeats to a silent socket",
        "messages": [ref(frames.Heartbeat)],
    }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:coinlink:ws",
        "info": {
            "title": "CoinLink WebSocket API",
            "version": __version__,
            "description": _overview(settings),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "{host}",
                "protocol": "wss",
                "description": "A deployment behind TLS.",
                "variables": {"host": {"default": "coinlink.example.com"}},
            },
            "development": {
                "host": "localhost:8000",
                "protocol": "ws",
                "description": "`coinlink serve` on a developer's machine.",
            },
        },
        "channels": {
            _CHANNEL: {
                "address": "/ws",
                "title": "The socket",
                "description": _channels_text(settings),
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Origin": {
                                    "type": "string",
                                    "description": "When present, one of "
                                    "COINLINK_CORS_ORIGINS (else 403, no upgrade). A "
                                    "request without Upgrade: websocket gets 426 "
                                    "upgrade_required.",
                                }
                            },
                        },
                        "bindingVersion": "0.1.0",
                    }
                },
                "x-close-codes": [close._asdict() for close in CLOSES],
            }
        },
        "operations": operations,
        "components": {"schemas": defs["$defs"], "messages": messages},
    }


def _message(model: type[BaseModel]) -> dict[str, Any]:
    name = model.__name__
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "payload": {"$ref": _SCHEMAS.format(model=name)},
        "examples": [{"name": name, "payload": _EXAMPLES[model]}],
    }
    if model.__doc__:
        message["summary"] = " ".join(model.__doc__.split("\n\n")[0].split())
    if model is frames.Error:
        message["description"] = "Codes:\n\n" + "\n".join(
            f"- `{code}`: {text}" for code, text in ERROR_CODES.items()
        )
    return message


def _channels_text(settings: Settings) -> str:
    closes = "\n".join(
        f"| {c.code} | {'`' + c.reason + '`' if c.reason else '(library text)'} | {c.when} |"
        for c in CLOSES
    )
    _intervals = ", ".join(f"`{i}`" for i in get_args(frames.Interval))
    symbols = ", ".join(f"`{symbol}`" for symbol in settings.symbols)
    return f"""One WebSocket carries every channel. Text frames, one JSON object each.

Channel names (in `subscribe`, `unsubscribe`, and each frame's `channel`):

- `ticker:{{SYMBOL}}`, e.g. `ticker:BTC-USD`: one symbol's ticker.
- `tickers`: every symbol's ticker in one list, about once a second while any of them
  changes, every 15 s while none does (the subscription's snapshot is the current list).
- `candles:{{SYMBOL}}:{{interval}}`, interval one of {_intervals}: the current
  candle as it changes, and once more with `closed: true`.
- `notifications`: the authenticated user's own notifications.

Symbols are this server's configured ones: {symbols}. The kind and the symbol are
case-insensitive (`Ticker:btc-usd` is `ticker:BTC-USD`; acks and frames use that
canonical name), the interval is not.

Closes the server initiates (`x-close-codes`):

| code | reason | when |
|---|---|---|
{closes}
"""


def _overview(settings: Settings) -> str:
    ws = settings.ws
    return f"""Real-time market data and the user's notifications over one WebSocket, `GET /ws`.

**Requests.** Every client message has an `op` and an integer `id` (0 to 2^53 - 1) the
reply echoes: an `ack` (or a `pong`), or an `error` with a `code`. Messages are answered
in order. An error changes nothing and the socket stays open (but see `rate_limited`).

**Channel frames.** `snapshot` carries a channel's current state, `update` each new
message. `seq` grows by exactly one per message of a channel, on every server instance: a
gap means something was missed. Subscribe again with `since` (below) to recover.

**Recovery.** `subscribe` with `since: {{channel: last seq seen}}`. When the server still
has every message after it (the last {settings.bus_history_size}), they are replayed in
order and the ack says `recovered: true`; otherwise the channel gets a `snapshot`
(`recovered: false`). Live updates follow either way without a gap. After a close 1001 (a
restart), reconnect and resubscribe with `since`.

**Auth.** Market channels are public. `auth` with an access token from
`POST /api/v2/auth/login` (or `/refresh`) is needed for `notifications`; send it again with
a fresh token of the same user to keep the socket past the first one's expiry. An `auth`
refused (`invalid_token`, or another user's token) leaves the socket's earlier auth in place,
and its error message says so. The socket closes (1008) when the token in place expires or
its session is revoked.

**Limits** (this server): {ws.max_subscriptions} channels per socket; {ws.inbound_burst}
frames at once, {ws.inbound_rate:g} per second sustained; frames up to 64 KiB; a
heartbeat after {ws.heartbeat_s:g} s of silence; WebSocket pings every
{ws.ping_interval_s:g} s, answered within {ws.ping_timeout_s:g} s;
{ws.max_connections_per_ip} sockets per address and worker process (429 at the
handshake).
"""
