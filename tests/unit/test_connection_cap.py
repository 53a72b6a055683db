"""The per-address connection count of one worker (its behaviour on a real server:
tests/integration/test_slow_and_greedy_clients.py)."""

from __future__ import annotations

from typing import Any

from coinlink.http.client_address import TrustedProxies
from coinlink.serving.connection_cap import ConnectionCap


class Peer:
    """What the cap reads of a transport: its peer's address (as asyncio gives it)."""

    def __init__(self, peername: Any) -> None:
        self.peername = peername

    def get_extra_info(self, name: str) -> Any:
        return self.peername if name == "peername" else None


def test_an_address_is_admitted_up_to_the_limit_and_again_once_one_closes() -> None:
    cap = ConnectionCap(2, TrustedProxies())
    keys = [cap.admit(Peer(("192.0.2.1", port))) for port in (1000, 1001)]
    assert keys == ["192.0.2.1", "192.0.2.1"]
    assert cap.admit(Peer(("192.0.2.1", 1002))) is None
    assert cap.admit(Peer(("192.0.2.2", 1000))) == "192.0.2.2"  # another address
    cap.release("192.0.2.1")
    assert cap.admit(Peer(("192.0.2.1", 1003))) == "192.0.2.1"
    for key in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        cap.release(key)
    assert cap.open_connections("192.0.2.1") == cap.open_connections("192.0.2.2") == 0


def test_ipv6_addresses_count_by_their_64() -> None:
    cap = ConnectionCap(1, TrustedProxies())
    assert cap.admit(Peer(("2001:db8:1:2::1", 1000, 0, 0))) == "2001:db8:1:2::/64"
    assert cap.admit(Peer(("2001:db8:1:2::99", 1000, 0, 0))) is None


def test_trusted_proxies_and_unix_sockets_are_not_counted() -> None:
    cap = ConnectionCap(1, TrustedProxies(["10.0.0.0/8"]))
    for _ in range(3):
        assert cap.admit(Peer(("10.1.2.3", 1000))) == ""
        assert cap.admit(Peer("")) == ""  # a unix socket's peer
    cap.release("")  # a no-op
    assert cap.open_connections("10.1.2.3") == 0


def test_the_refusal_is_a_whole_429_envelope() -> None:
    head, _, body = ConnectionCap(5, TrustedProxies()).refusal().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"connection: close" in head and b"retry-after: 1" in head
    assert f"content-length: {len(body)}".encode() in head
    assert b'"code":"too_many_connections"' in body and b'"limit":5' in body
