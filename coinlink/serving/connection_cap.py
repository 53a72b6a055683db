"""A cap on the connections one address holds open with a worker.

One client opening thousands of connections (slow ones, or idle keep-alives) would use up
a worker's file descriptors and memory for everyone. Each worker counts its open
connections per address (IPv6 by its /64, like the rate limits) and answers one more than
``COINLINK_HTTP_MAX_CONNECTIONS_PER_IP`` with a 429 envelope and ``Connection: close``,
without reading its request. Connections from ``COINLINK_TRUSTED_PROXIES`` are not counted:
every client behind a proxy shares its address, and the proxy caps its own clients
(docs/operations.md). The count is per worker: across N workers an address may hold up to
N times the cap, as the kernel spreads its connections over them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from coinlink.http.client_address import TrustedProxies, parse_address
from coinlink.http.errors import error_body
from coinlink.http.ratelimit import ip_key
from coinlink.http.trace_ids import new_trace_id

CONNECTIONS_REFUSED = Counter(
    "http_connections_refused_total",
    "Connections answered 429 because their address held too many (per worker).",
)
RETRY_AFTER_S = 1


class ConnectionCap:
    """Open connections per address in this worker."""

    __slots__ = ("_open", "_trusted", "limit")

    def __init__(self, limit: int, trusted: TrustedProxies) -> None:
        self.limit = limit
        self._trusted = trusted
        self._open: dict[str, int] = {}

    def admit(self, transport: Any) -> str | None:
        """The key to :meth:`release` when the connection closes; None when it is refused.
        Unix sockets, unknown peers and trusted proxies are admitted uncounted (key "")."""
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or not peer:
            return ""
        host = str(peer[0])
        address = parse_address(host)
        if address is None or self._trusted.contains(address):
            return ""
        key = ip_key(host)
        count = self._open.get(key, 0)
        if count >= self.limit:
            CONNECTIONS_REFUSED.inc()
            return None
        self._open[key] = count + 1
        return key

    def release(self, key: str) -> None:
        if not key:
            return
        count = self._open.pop(key, 0) - 1
        if count > 0:
            self._open[key] = count

    def open_connections(self, key: str) -> int:
        return self._open.get(key, 0)

    def refusal(self) -> bytes:
        """The whole HTTP/1.1 response for a connection over the cap."""
        body = error_body(
            "too_many_connections",
            f"too many open connections from your address (at most {self.limit}); close "
            "idle ones and retry",
            {"limit": self.limit},
            new_trace_id(),
        )
        head = (
            "HTTP/1.1 429 Too Many Requests\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"retry-after: {RETRY_AFTER_S}\r\n"
            "connection: close\r\n\r\n"
        )
        return head.encode() + body
