"""The client's address, believing ``X-Forwarded-For`` only from configured proxies.

The peer of the TCP connection is the client unless that peer is one of our own load
balancers (``COINLINK_TRUSTED_PROXIES``). Then the header is read from the right: each
trusted proxy appends the address it received the request from, so the rightmost entry
that is *not* a trusted proxy is the first hop nobody of ours vouches for -- the client.
Everything to its left was written by that client and is never believed; a client cannot
buy itself a fresh rate-limit budget by sending ``X-Forwarded-For: 1.2.3.4``.

* A malformed entry met during the walk (not an address, an empty item) means the header
  cannot be trusted at all: the peer address is used.
* When every entry is a trusted proxy, the leftmost one is the client (an internal host
  that happens to sit inside a trusted range).
* Entries may carry a port (``1.2.3.4:5678``, ``[2001:db8::1]:443``), as some balancers
  write them; the port is dropped. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, what a
  dual-stack socket reports) are compared and returned as IPv4.

With no trusted proxies (the default) this is ``request.ip`` and nothing more.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from sanic import Request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_XFF: Final = "x-forwarded-for"


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def parse_address(text: str) -> IPAddress | None:
    """An address from an ``X-Forwarded-For`` item or a peer, or None when malformed."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):  # "[v6]" or "[v6]:port"
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # "v4:port"; a bare IPv6 address has at least two colons
        text, port = text.split(":")
        if not _is_port(port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed; built once from the settings."""

    __slots__ = ("_networks",)

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        for entry in entries:
            network = ipaddress.ip_network(entry.strip(), strict=False)
            if isinstance(network, ipaddress.IPv6Network):
                mapped = network.network_address.ipv4_mapped
                if mapped is not None and network.prefixlen >= 96:
                    # "::ffff:10.0.0.0/104" means the IPv4 network; addresses are compared
                    # as IPv4 (see parse_address).
                    network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
            networks.append(network)
        self._networks: tuple[IPNetwork, ...] = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def contains(self, address: IPAddress) -> bool:
        # A handful of networks at most: a linear scan beats any clever structure here.
        # (An IPv4 address is never "in" an IPv6 network, and vice versa: plain False.)
        return any(address in network for network in self._networks)


def client_ip(request: Request, trusted: TrustedProxies) -> str:
    """The client's address as text (see the module docstring for the rules)."""
    peer = request.ip
    if not trusted:  # the fast path: nothing to believe, nothing to parse
        return peer
    peer_address = parse_address(peer)
    if peer_address is None or not trusted.contains(peer_address):
        return peer
    headers = request.headers.getall(_XFF, None)
    if not headers:
        return peer
    # Several X-Forwarded-For headers are one list, in order (RFC 9110 field combination).
    items = ",".join(headers).split(",")
    address: IPAddress | None = None
    for item in reversed(items):
        address = parse_address(item)
        if address is None:
            return peer
        if not trusted.contains(address):
            return str(address)
    # Every hop is a trusted proxy: the leftmost is the origin.
    return str(address) if address is not None else peer
