"""What the exchange adapters share: the WebSocket session loop and REST GETs.

:class:`StreamingProvider` owns the connection; an adapter only says which URL to open,
what to send once connected, and how one decoded frame becomes a tick (``handle``). The
loop in :meth:`StreamingProvider.ticks`:

* **Connect** with ``websockets.asyncio.client.connect`` and an ``open_timeout``; the
  library's own ping/pong keepalive stays on (it catches a dead TCP peer that the exchange
  would otherwise only reveal through silence).
* **Stall watchdog.** Every ``recv`` is bounded by ``stall_timeout_s``: no frame at all for
  that long (not even a heartbeat) counts a stall, closes the socket and reconnects. The
  timeout wraps only the wait for the next frame, never the consumer's time between ticks,
  so a slow consumer cannot trigger it.
* **Reconnect** after any failure (refused, handshake error, reset, close, stall, an
  exchange ``error`` message) with :mod:`coinlink.backoff`: ``backoff_initial_s`` doubling
  to ``backoff_max_s``, each wait drawn from the upper half. The failure count resets once a
  connection has stayed up ``healthy_after_s``: a connection that dies right after the
  handshake (a rejected subscription, a rate limit) keeps backing off instead of hammering
  the exchange every half second.
* **Malformed frames** (invalid JSON, a missing or non-numeric field, NaN/Infinity, a wrong
  type) raise :class:`~coinlink.market.providers.base.MalformedError` in ``handle``: they
  are counted and skipped, and the connection carries on. Any other exception inside a
  handler is counted the same way and logged with its traceback, so a parser bug costs a
  frame, not the feed.
* **Logging.** Connects, disconnects, stalls, gaps and (rate-limited) malformed frames are
  logged; a tick never is. Frames hold only public market data, and no URL here has
  credentials.

``get_json`` performs the REST backfill requests with httpx (the webhooks' client library),
reading at most ``_MAX_REST_BYTES`` of an answer.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import Any, Final, TypedDict
from urllib.parse import urlsplit

import httpx
import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from coinlink.backoff import Backoff
from coinlink.market.providers.base import (
    MalformedError,
    Provider,
    ProviderError,
    log_worthy,
    normalize_symbols,
)
from coinlink.market.types import Tick

USER_AGENT: Final = "coinlink-market/0.1"
_MAX_REST_BYTES: Final = 8 * 1024 * 1024
# Failures that are the network's or the exchange's, logged without a traceback.
_EXPECTED_ERRORS: Final = (OSError, TimeoutError, WebSocketException, EOFError)


class ExchangeError(Exception):
    """The exchange said something is wrong (an ``error`` message): reconnect."""


class StreamOptions(TypedDict, total=False):
    """Connection tuning an adapter passes through to :class:`StreamingProvider`."""

    stall_timeout_s: float | None
    open_timeout_s: float
    close_timeout_s: float
    backoff_initial_s: float
    backoff_max_s: float
    healthy_after_s: float
    rest_timeout_s: float


class StreamingProvider(Provider):
    """A WebSocket market-data feed with reconnects and a stall watchdog (module docstring)."""

    default_stall_timeout_s: float = 15.0

    def __init__(
        self,
        symbols: list[str],
        *,
        ws_url: str,
        rest_url: str,
        stall_timeout_s: float | None = None,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        healthy_after_s: float = 30.0,
        rest_timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self.symbols = normalize_symbols(symbols)
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        if urlsplit(ws_url).scheme not in ("ws", "wss"):
            raise ValueError(f"ws_url must be a ws:// or wss:// URL, not {ws_url!r}")
        if urlsplit(rest_url).scheme not in ("http", "https"):
            raise ValueError(f"rest_url must be an http:// or https:// URL, not {rest_url!r}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.stall_timeout_s = stall_timeout_s or self.default_stall_timeout_s
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.rest_timeout_s = rest_timeout_s
        self.log = structlog.get_logger(logger_name=f"coinlink.market.{self.name}")

    # -- what an adapter provides -------------------------------------------------------

    @abc.abstractmethod
    def stream_url(self) -> str:
        """The URL to open (with the stream names, for exchanges that put them there)."""

    async def on_open(self, ws: ClientConnection) -> None:
        """Called after every (re)connect, before the first frame is read: subscribe here."""
        del ws

    def on_connected(self) -> None:
        """Reset per-connection state (called after every successful handshake)."""

    @abc.abstractmethod
    def handle(self, message: Any) -> Tick | None:
        """One decoded frame → a tick, or ``None`` for a frame that carries none.

        Raise ``MalformedError`` for a bad frame, ``ExchangeError`` to force a reconnect.
        """

    # -- the shared machinery -------------------------------------------------------------

    def count_malformed(self, reason: str) -> None:
        self.stats["malformed"] += 1
        if log_worthy(self.stats["malformed"]):
            self.log.warning("market.malformed_frame", reason=reason, total=self.stats["malformed"])

    def count_dropped(self, reason: str, symbol: str) -> None:
        self.stats["dropped"] += 1
        if log_worthy(self.stats["dropped"]):
            self.log.info(
                "market.dropped_frame", reason=reason, symbol=symbol, total=self.stats["dropped"]
            )

    def count_gap(self, symbol: str, expected: int, got: int) -> None:
        self.stats["gaps"] += 1
        if log_worthy(self.stats["gaps"]):
            self.log.warning(
                "market.sequence_gap",
                symbol=symbol,
                expected=expected,
                got=got,
                total=self.stats["gaps"],
            )

    def _decode(self, raw: str | bytes) -> Tick | None:
        try:
            return self.handle(orjson.loads(raw))
        except orjson.JSONDecodeError:
            self.count_malformed("invalid JSON")
        except MalformedError as exc:
            self.count_malformed(str(exc))
        except ExchangeError:
            raise
        except Exception:
            # A parser bug must cost one frame, not the feed; the traceback says where.
            self.stats["malformed"] += 1
            self.log.exception("market.handler_failed")
        return None

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        retry = Backoff(self.backoff_initial_s, self.backoff_max_s)
        first = True
        while True:
            if not first:
                self.stats["reconnects"] += 1
            first = False
            connected_at: float | None = None
            reason = "closed"
            try:
                async with connect(
                    self.stream_url(),
                    open_timeout=self.open_timeout_s,
                    close_timeout=self.close_timeout_s,
                    user_agent_header=USER_AGENT,
                ) as ws:
                    connected_at = time.monotonic()
                    self.on_connected()
                    self.log.info("market.connected", url=self.stream_url())
                    async with asyncio.timeout(self.open_timeout_s):
                        await self.on_open(ws)  # the subscription is part of opening
                    while True:
                        try:
                            async with asyncio.timeout(self.stall_timeout_s):
                                raw = await ws.recv()
                        except TimeoutError:
                            self.stats["stalls"] += 1
                            reason = "stall"
                            self.log.warning(
                                "market.stall",
                                silent_for_s=self.stall_timeout_s,
                                total=self.stats["stalls"],
                            )
                            break
                        tick = self._decode(raw)
                        if tick is not None:
                            yield tick  # outside the timeout: consumer time is not silence
            except ExchangeError as exc:
                reason = f"exchange error: {exc}"
            except _EXPECTED_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                reason = f"unexpected {type(exc).__name__}"
                self.log.exception("market.session_failed")
            if connected_at is not None and time.monotonic() - connected_at >= self.healthy_after_s:
                retry.reset()
            delay = retry.next()
            self.log.warning(
                "market.disconnected",
                reason=reason,
                retry_in_s=round(delay, 3),
                attempt=retry.failures,
            )
            await asyncio.sleep(delay)

    async def get_json(self, path: str, query: dict[str, str | int]) -> Any:
        """GET ``rest_url + path`` with ``query``; raise ``ProviderError`` on any failure."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        body = bytearray()
        try:
            async with (
                httpx.AsyncClient(timeout=self.rest_timeout_s, headers=headers) as client,
                client.stream("GET", f"{self.rest_url}{path}", params=query) as response,
            ):
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_REST_BYTES:
                        raise ValueError("response too large")
            # parse_float=Decimal keeps JSON numbers (Coinbase candles) exact.
            return json.loads(body, parse_float=Decimal)
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"GET {path} failed: {type(exc).__name__}: {exc}") from None
