"""A typed client for CoinLink: REST (:class:`AsyncClient`, :class:`Client`) and a
WebSocket :class:`Stream` that yields every update once and in order, or says it could not."""

from coinlink_client.errors import (
    AuthenticationError,
    BadRequest,
    CoinLinkError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    StreamError,
    UnexpectedResponse,
    ValidationError,
)
from coinlink_client.events import Data, Event, Recovered, Resynced, Snapshot, Update
from coinlink_client.models import Alert, Candle, Notification, Page, Ticker, Tokens, User
from coinlink_client.rest import AsyncClient
from coinlink_client.stream import Stream
from coinlink_client.sync import Client

__all__ = [
    "Alert",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Candle",
    "Client",
    "CoinLinkError",
    "Conflict",
    "Data",
    "Event",
    "Forbidden",
    "NotFound",
    "Notification",
    "Page",
    "RateLimited",
    "Recovered",
    "Resynced",
    "ServerError",
    "Snapshot",
    "Stream",
    "StreamError",
    "Ticker",
    "Tokens",
    "UnexpectedResponse",
    "Update",
    "User",
    "ValidationError",
]
