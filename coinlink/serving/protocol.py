"""The HTTP protocol of ``coinlink serve``: bounds on slow and greedy clients, a head that is
not HTTP/1.1 refused at once (:mod:`.request_heads`), and a stopping server finishes
requests on their way.

**A bounded read.** Sanic's ``REQUEST_TIMEOUT`` counts from the last byte received, not the
first, and a body is read under ``RESPONSE_TIMEOUT`` (a 503): a client sending one byte
every few seconds holds a connection and a task for as long as it likes. Here a request's
headers and body must arrive within ``COINLINK_HTTP_READ_TIMEOUT_S`` of its first byte (one
timer per connection, re-armed while it is busy); a late one is answered 408
``request_timeout`` through the error envelope and the connection closes.

**A cap per address.** A connection over ``COINLINK_HTTP_MAX_CONNECTIONS_PER_IP`` for its
address (:mod:`.connection_cap`) is answered 429 at once, never parsed, and closed once the
client has read the answer (its request is read and dropped meanwhile, at most
:data:`REFUSED_LINGER_S`: closing with unread bytes would reset the connection and lose the
answer).

**Finishing at shutdown.** Sanic, once a stopping worker has closed its listener, closes
every connection that is not handling a request. That cuts two kinds of connection whose
request the client has already sent or is sending: one the worker accepted but has not read
from yet (a fresh connection from a proxy always carries a request), and one whose request
bytes are read but not yet parsed. Those get :data:`FIRST_REQUEST_GRACE_S` for their request
to arrive, are served (with ``Connection: close``: see :mod:`coinlink.serving.drain`), and
close after it. An idle keep-alive connection is closed at once, as before.

**No HTTP timers on a WebSocket.** Once upgraded, a connection has no request to time:
Sanic's timeout check and the read bound are cancelled with the handshake instead of each
waking once more per socket to find that out (two callbacks per connection, inside a
fan-out benchmark's window).

Sanic internals (``WebSocketProtocol`` and its ``close_if_idle``, ``websocket_handshake``,
``recv_buffer``, ``_callback_check_timeouts``, ``http`` and its ``stage``, ``exception``,
``request_body`` and ``upgrade_websocket``; ``_task``):
checked against ``CHECKED_VERSIONS`` by ``tests/unit/test_serving_adapters.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from coinlink.serving.connection_cap import ConnectionCap
from coinlink.serving.request_heads import HeadCheckingHttp

CHECKED_VERSIONS = {"sanic": ">=25.12,<26"}
FIRST_REQUEST_GRACE_S = 2.0
REFUSED_LINGER_S = 1.0
_RECHECK_MIN_S = 0.05


class FinishingProtocol(WebSocketProtocol):
    """Sanic's HTTP/1.1 + WebSocket protocol with a bounded read and a cap per address; at
    shutdown it keeps a connection whose request is on its way."""

    HTTP_CLASS = HeadCheckingHttp
    __slots__ = ("heard", "peer_key", "read_began", "read_timer")

    def connection_made(self, transport: Any) -> None:
        self.heard = False
        self.read_began = 0.0
        self.read_timer: asyncio.TimerHandle | None = None
        cap: ConnectionCap = self.app.ctx.connection_cap
        self.peer_key = cap.admit(transport)
        if self.peer_key is None:
            self._refuse(transport, cap)
            return
        super().connection_made(transport)

    def _refuse(self, transport: Any, cap: ConnectionCap) -> None:
        self.transport = transport
        transport.write(cap.refusal())
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the answer and closes; so do we
        self.loop.call_later(REFUSED_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.peer_key is None:
            return  # refused: the request is dropped unread
        self.heard = True
        http = self.http
        if http is None or http.stage is Stage.IDLE:
            # The first byte of a request: its headers and body are due within the bound.
            self.read_began = self.loop.time()
            if self.read_timer is None:
                self.read_timer = self.loop.call_later(self.read_timeout_s, self._check_read)
        super().data_received(data)

    async def websocket_handshake(
        self, request: Any, subprotocols: Sequence[str] | None = None
    ) -> Any:
        ws = await super().websocket_handshake(request, subprotocols)
        for timer in (self.read_timer, self._callback_check_timeouts):
            if timer is not None:
                timer.cancel()
        self.read_timer = self._callback_check_timeouts = None
        return ws

    def eof_received(self) -> bool | None:
        if self.peer_key is None:
            return False  # close our side too
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        if self.peer_key is None:
            self.transport = None
            return
        self.app.ctx.connection_cap.release(self.peer_key)
        super().connection_lost(exc)

    @property
    def read_timeout_s(self) -> float:
        return float(self.app.config.REQUEST_TIMEOUT)

    def _check_read(self) -> None:
        self.read_timer = None
        http = self.http
        if http is None or self._task is None or http.upgrade_websocket:
            return
        stage = http.stage
        if stage is Stage.IDLE:
            return  # the next request's first byte arms the timer again
        reading = stage is Stage.REQUEST or (stage is Stage.HANDLER and bool(http.request_body))
        left = self.read_began + self.read_timeout_s - self.loop.time()
        if reading and left <= 0:
            http.exception = RequestTimeout(
                f"the request's headers and body must arrive within {self.read_timeout_s:g} s"
                " of its first byte"
            )
            self._task.cancel()  # Sanic answers http.exception: the 408 envelope
            return
        # Still within the bound, or a handler is running: look again later.
        delay = max(left, _RECHECK_MIN_S) if reading else self.read_timeout_s
        self.read_timer = self.loop.call_later(delay, self._check_read)

    def close_if_idle(self) -> bool:
        if self.websocket is None and (not self.heard or self.recv_buffer):
            self.loop.call_later(FIRST_REQUEST_GRACE_S, self._close_unless_busy)
            return False
        return bool(super().close_if_idle())

    def _close_unless_busy(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            super().close_if_idle()
