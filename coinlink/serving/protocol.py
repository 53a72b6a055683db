"""The HTTP protocol of ``coinlink serve``: a stopping server finishes requests on their way.

Sanic, once a stopping worker has closed its listener, closes every connection that is not
handling a request. That cuts two kinds of connection whose request the client has already
sent or is sending: one the worker accepted but has not read from yet (a fresh connection
from a proxy always carries a request), and one whose request bytes are read but not yet
parsed. Those get :data:`FIRST_REQUEST_GRACE_S` for their request to arrive, are served
(with ``Connection: close``: see :mod:`coinlink.serving.drain`), and close after it. An idle
keep-alive connection is closed at once, as before.

Sanic internals (``WebSocketProtocol`` and its ``close_if_idle``, ``recv_buffer``): checked
against ``CHECKED_VERSIONS`` by ``tests/unit/test_serving_adapters.py``.
"""

from __future__ import annotations

from typing import Any

from sanic.server.protocols.websocket_protocol import WebSocketProtocol

CHECKED_VERSIONS = {"sanic": ">=25.12,<26"}
FIRST_REQUEST_GRACE_S = 2.0


class FinishingProtocol(WebSocketProtocol):
    """Sanic's HTTP/1.1 + WebSocket protocol; at shutdown it keeps a connection whose
    request is on its way."""

    __slots__ = ("heard",)

    def connection_made(self, transport: Any) -> None:
        self.heard = False
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        super().data_received(data)

    def close_if_idle(self) -> bool:
        if self.websocket is None and (not self.heard or self.recv_buffer):
            self.loop.call_later(FIRST_REQUEST_GRACE_S, self._close_unless_busy)
            return False
        return bool(super().close_if_idle())

    def _close_unless_busy(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            super().close_if_idle()
