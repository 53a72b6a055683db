"""The client address: the peer, unless a trusted proxy vouches for someone else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from sanic import Request
from sanic.compat import Header

from coinlink.http.client_address import TrustedProxies, client_ip, parse_address


def request(peer: str, *xff: str) -> Request:
    headers = Header([("x-forwarded-for", value) for value in xff])
    return cast(Request, SimpleNamespace(ip=peer, headers=headers))


LB = TrustedProxies(["10.0.0.0/8", "192.168.1.1"])


def test_no_trusted_proxies_means_the_peer() -> None:
    none = TrustedProxies([])
    assert not none
    assert client_ip(request("203.0.113.7"), none) == "203.0.113.7"
    assert client_ip(request("10.0.0.5", "198.51.100.1"), none) == "10.0.0.5"


def test_trusted_proxy_gives_the_rightmost_untrusted_entry() -> None:
    # The client wrote the first two entries itself; our balancer appended the third.
    req = request("10.0.0.5", "1.1.1.1, 2.2.2.2, 198.51.100.9")
    assert client_ip(req, LB) == "198.51.100.9"


def test_untrusted_peer_with_xff_is_ignored() -> None:
    assert client_ip(request("203.0.113.7", "1.1.1.1"), LB) == "203.0.113.7"


def test_chain_of_trusted_proxies_is_skipped() -> None:
    req = request("192.168.1.1", "6.6.6.6, 198.51.100.9, 10.1.2.3, 10.0.0.7")
    assert client_ip(req, LB) == "198.51.100.9"


def test_several_headers_are_one_list_in_order() -> None:
    req = request("10.0.0.5", "6.6.6.6, 198.51.100.9", "10.9.9.9")
    assert client_ip(req, LB) == "198.51.100.9"


def test_only_trusted_entries_give_the_leftmost() -> None:
    assert client_ip(request("10.0.0.5", "10.2.2.2, 10.3.3.3"), LB) == "10.2.2.2"


def test_trusted_peer_without_xff_is_the_client() -> None:
    assert client_ip(request("10.0.0.5"), LB) == "10.0.0.5"
    assert client_ip(request("10.0.0.5", ""), LB) == "10.0.0.5"


@pytest.mark.parametrize(
    "xff",
    [
        "not-an-ip",
        "1.1.1.1, bogus",
        "1.1.1.1,,10.0.0.9",  # an empty item met during the walk
        "999.1.1.1",
        "1.1.1.1:http",
        "[2001:db8::1",
        "unknown",
    ],
)
def test_malformed_xff_falls_back_to_the_peer(xff: str) -> None:
    assert client_ip(request("10.0.0.5", xff), LB) == "10.0.0.5"


def test_malformed_entries_left_of_the_client_do_not_matter() -> None:
    # The walk stops at the first untrusted entry: the client's own junk is never read.
    assert client_ip(request("10.0.0.5", "junk, 198.51.100.9"), LB) == "198.51.100.9"


def test_ports_are_dropped() -> None:
    assert client_ip(request("10.0.0.5", "198.51.100.9:4711"), LB) == "198.51.100.9"
    assert client_ip(request("10.0.0.5", "[2001:db8::7]:443"), LB) == "2001:db8::7"


def test_ipv6() -> None:
    v6 = TrustedProxies(["2001:db8:ffff::/48", "::1"])
    assert client_ip(request("::1", "2001:db8:1::42"), v6) == "2001:db8:1::42"
    assert client_ip(request("2001:db8:ffff::1", "2001:db8:1::42, ::1"), v6) == "2001:db8:1::42"
    # An IPv6 peer outside the trusted networks: XFF ignored.
    assert client_ip(request("2001:db8:2::1", "2001:db8:1::42"), v6) == "2001:db8:2::1"
    # Addresses come back normalised.
    assert client_ip(request("::1", "2001:DB8:0:0:0:0:0:42"), v6) == "2001:db8::42"
    # Mixed families: an IPv4 client behind an IPv6 balancer.
    assert client_ip(request("::1", "198.51.100.9"), v6) == "198.51.100.9"


def test_ipv4_mapped_peer_matches_ipv4_networks() -> None:
    assert client_ip(request("::ffff:10.0.0.5", "198.51.100.9"), LB) == "198.51.100.9"
    mapped = TrustedProxies(["::ffff:10.0.0.0/104"])
    assert client_ip(request("10.0.0.5", "198.51.100.9"), mapped) == "198.51.100.9"


def test_parse_address() -> None:
    assert str(parse_address(" 1.2.3.4 ")) == "1.2.3.4"
    assert str(parse_address("[::1]")) == "::1"
    assert parse_address("1.2.3.4:99999999") is None
    assert parse_address("[::1]x") is None
    assert parse_address("") is None
