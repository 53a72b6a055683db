"""Webhook URL safety: only publicly routable receivers (SSRF), checked where we connect.

URL safety. A user's webhook URL is a request *we* make from inside our
network, so it must not reach loopback, private, link-local, CGNAT, metadata or other
non-public addresses (SSRF). :func:`check_url` parses the URL with httpx's own parser (the
one that later sends the request, so no parser differential), applies the syntactic rules,
then resolves the host (A and AAAA, bounded by :data:`RESOLVE_TIMEOUT_S`) and refuses the
URL unless *every* address is publicly routable. Numeric tricks (``2130706433``,
``0x7f.1``, ``127.1``) are normalised by ``getaddrinfo`` into the address they really mean;
IPv6 forms that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``,
NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) are judged by that IPv4 address too
(and a mapped or NAT64 form of a public IPv4 address is accepted: that is where it leads).
The stdlib's ``is_global`` is the main test, backed by an explicit list of special-purpose
ranges, because ``is_global`` is wrong for several of them on Python 3.11 (multicast, NAT64,
IPv4-compatible, ``3fff::/20``...). ``COINLINK_WEBHOOK_ALLOW_PRIVATE`` (``allow_private``)
skips the address rules, not the syntactic ones.

DNS rebinding. A check is worth nothing if the connection resolves the name again and gets
another answer. :func:`deliver` therefore re-checks the URL at delivery time (the record may
have changed since registration) and then connects to *the address it checked*: the request
goes to ``scheme://<checked ip>:port/path`` with the original ``Host`` header, and for https
with httpcore's ``sni_hostname`` extension set to the original name, which makes the TLS
handshake send that SNI *and* verify the certificate against that name. There is no second
resolution, so no window, for http or https. Two limits: httpcore pools connections by
(scheme, address, port), so a kept-alive https connection verified for one name may carry
a later request for another name *at the same checked address* (no SSRF: the address is
the one checked; only that second name's certificate is not re-verified); and a proxy
configured on the client would make the connection for us (:func:`new_client` has none).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses as text``; injectable so tests can fake a DNS answer."""


MAX_URL_LENGTH: Final = 2048
ALLOW_PRIVATE_SETTING: Final = "COINLINK_WEBHOOK_ALLOW_PRIVATE"
RESOLVE_TIMEOUT_S: Final = 2.0

_SCHEMES: Final = frozenset({"http", "https"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?$"
)

# Cloud instance metadata endpoints: inside ranges refused anyway, named so that the error
# says what they are and so that no stdlib change can ever let them through.
_METADATA: Final = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
# Special-purpose ranges (IANA registries) that are never a public webhook receiver.
_SPECIAL: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
_PRIVATE: Final = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPAT: Final = ipaddress.IPv6Network("::/96")


class UnsafeUrl(Exception):
    """A webhook URL we refuse to call; ``message`` says why, for the user (a 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnresolvableUrl(UnsafeUrl):
    """The host did not resolve in time: refused when registering, retried when delivering."""


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL
    """Normalised: lower-case scheme and host, no default port, no fragment."""
    connect_to: IPAddress | None
    """The checked address to connect to, when the host is a name (None: a literal IP)."""


# Webhook lookups get threads of their own: our timeout abandons a slow lookup but its thread
# stays busy until the system resolver gives up (often 10-30 s), and a user choosing hosts
# whose name servers never answer must not tie up the threads the rest of the worker
# resolves with (database, Redis, exchanges). Beyond these two, lookups queue.
_RESOLVER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhook-dns")


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection (A and AAAA)."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        _RESOLVER,
        functools.partial(
            socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        ),
    )
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if any (a packet may end up there)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _IPV4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def unsafe_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not receive webhooks (``"a loopback address"``), or None if public."""
    embedded = _embedded_ipv4(ip)
    if isinstance(ip, ipaddress.IPv6Address) and embedded is not None:
        if (reason := unsafe_reason(embedded)) is not None:
            return f"{reason} ({embedded} embedded in an IPv6 address)"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            # Reaches exactly that public IPv4 address (a dual-stack socket, or an IPv6-only
            # network's NAT64): as good as it. The stdlib files both under special-purpose.
            return None
    checks = (
        (ip in _METADATA, "a cloud metadata address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in _CGNAT, "a carrier-grade NAT address"),
        (any(ip in net for net in _PRIVATE), "a private address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a special-purpose address"),
        (any(ip in net for net in _SPECIAL), "a special-purpose address"),
        (not ip.is_global, "not a globally routable address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def check_syntax(url: str) -> str:
    """The syntactic rules alone (no resolution): the URL, or :class:`UnsafeUrl` saying why.
    Request models use it, so a malformed URL is refused with the request's other errors."""
    _parse(url)
    return url


def _parse(url: str) -> httpx.URL:
    """The syntactic rules; the normalised URL."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UnsafeUrl("the URL must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError) as exc:
        # UnicodeError: the idna codec refuses some A-labels (``xn--``, ``xn--ab-``).
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parsed.scheme not in _SCHEMES:
        shown = f"{parsed.scheme!r}" if parsed.scheme else "none"
        raise UnsafeUrl(f"the scheme must be http or https, not {shown}")
    if not parsed.raw_host:
        raise UnsafeUrl("the URL has no host")
    if parsed.userinfo:
        raise UnsafeUrl("the URL must not contain a user name or password (user:pass@)")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise UnsafeUrl(f"the port must be between 1 and 65535, not {parsed.port}")
    host = parsed.raw_host.decode("ascii")
    if ":" in host:  # an IPv6 literal (httpx already checked its syntax)
        if "%" in host:
            raise UnsafeUrl("an IPv6 zone identifier (%...) is not allowed")
    elif not _HOSTNAME.match(host):
        # The name as sent, not ``parsed.host``: decoding a bad A-label back would raise.
        raise UnsafeUrl(f"{host!r} is not a valid host name")
    if parsed.port == _DEFAULT_PORTS[parsed.scheme]:
        parsed = parsed.copy_with(port=None)
    return parsed.copy_with(fragment=None)


async def inspect_url(url: str, *, allow_private: bool, resolve: Resolver, pin: bool) -> Target:
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    elif allow_private and not pin:
        return Target(parsed, None)  # nothing to check, nothing to connect to yet
    else:
        addresses = await _resolve(host, parsed.port or _DEFAULT_PORTS[parsed.scheme], resolve)
    if not allow_private:
        for ip in addresses:
            if (reason := unsafe_reason(ip)) is not None:
                where = f"{ip} is" if literal is not None else f"{host} resolves to {ip},"
                raise UnsafeUrl(
                    f"{where} {reason}; webhooks may only call publicly routable addresses"
                    f" unless the operator sets {ALLOW_PRIVATE_SETTING}=true"
                )
    # Connect to the first answer, like a resolver-ordered connect would; all were checked.
    # A scoped (link-local) address cannot go in a URL: only reachable with allow_private.
    first = addresses[0]
    scoped = isinstance(first, ipaddress.IPv6Address) and first.scope_id is not None
    return Target(parsed, None if literal is not None or scoped else first)


async def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            answers = await resolve(host, port)
        addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in answers))
    except TimeoutError:
        raise UnresolvableUrl(f"{host} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise UnresolvableUrl(f"{host} does not resolve ({exc})") from None
    if not addresses:
        raise UnresolvableUrl(f"{host} does not resolve to any address")
    return addresses


async def check_url(url: str, *, allow_private: bool, resolve: Resolver = resolve_host) -> str:
    """The normalised webhook URL, or :class:`UnsafeUrl` saying why it is refused.

    Unless ``allow_private``, the host is resolved and every address must be public
    (a name that does not resolve is refused too: :class:`UnresolvableUrl`).
    """
    target = await inspect_url(url, allow_private=allow_private, resolve=resolve, pin=False)
    return str(target.url)
