"""One webhook delivery attempt, what its answer means, and when to try again.

Delivery outcome (:class:`DeliveryResult`): 2xx is success. 3xx is a permanent failure: a
redirect is not followed (its target was never checked, and a webhook URL is configured, not
discovered), and asking again will get the same redirect; the user must configure the final
URL. 408, 429 and 5xx, timeouts, connection and TLS errors, and a name that does not resolve
(at delivery time that is usually a transient DNS failure) are retryable. Other 4xx and a URL
that is unsafe are permanent. :func:`deliver` never raises for network trouble.

Retries: the dispatcher waits :func:`coinlink.backoff.delay` after each failed attempt
(:data:`BASE_DELAY_S` doubling to :data:`MAX_DELAY_S`, equal jitter); a delivery is abandoned
after :data:`MAX_ATTEMPTS` attempts or :data:`MAX_AGE_S` (see :func:`gives_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final, cast

import httpx

from coinlink.alerts.webhooks.url_safety import (
    Resolver,
    Target,
    UnresolvableUrl,
    UnsafeUrl,
    inspect_url,
    resolve_host,
)

RESPONSE_READ_LIMIT: Final = 4096
"""Bytes of a response body we look at (for the error text); the rest is never read."""

BASE_DELAY_S: Final = 5.0
MAX_DELAY_S: Final = 3600.0
MAX_ATTEMPTS: Final = 12
"""Attempts per delivery, the first included. With 5 s doubling to a 1 h cap and equal
jitter, the 11 waits add up to 1.2-2.4 h: enough to ride out a receiver's deploy or a short
outage, short enough that a price alert is not delivered absurdly late."""
MAX_AGE_S: Final = 24 * 3600
"""A delivery older than this is abandoned whatever its attempt count: if the dispatcher
itself was down for a day, receivers do not get a flood of day-old alerts when it returns."""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one delivery attempt, as recorded in the deliveries listing."""

    ok: bool
    status: int | None
    error: str | None
    duration_ms: int
    retryable: bool


def gives_up(attempts: int, age_s: float) -> bool:
    """True when a delivery that failed ``attempts`` times and is ``age_s`` old is abandoned."""
    return attempts >= MAX_ATTEMPTS or age_s >= MAX_AGE_S


def new_client() -> httpx.AsyncClient:
    """The client :func:`deliver` expects: no redirects, no environment, no cookies.

    ``trust_env=False``: no proxy from ``HTTP(S)_PROXY`` (it would connect for us, out of our
    checks) and no ``.netrc`` credentials attached to a user's URL. The cookie jar refuses
    every cookie, so one receiver cannot set a cookie that another user's delivery to the
    same address would carry.
    """
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        cookies=jar,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout_s: float = 5.0,
    resolve: Resolver = resolve_host,
) -> DeliveryResult:
    """POST ``body`` to ``url`` once; never raises for network trouble.

    ``timeout_s`` bounds the whole attempt (re-check, connect, send, response head and the
    first :data:`RESPONSE_READ_LIMIT` bytes): httpx's own timeouts are per operation, so a
    receiver dribbling one byte a second would never trip them.
    """
    started = time.monotonic()

    def result(ok: bool, status: int | None, error: str | None, retryable: bool) -> DeliveryResult:
        elapsed_ms = round((time.monotonic() - started) * 1000)
        return DeliveryResult(ok, status, error, elapsed_ms, retryable)

    try:
        async with asyncio.timeout(timeout_s):
            target = await inspect_url(url, allow_private=allow_private, resolve=resolve, pin=True)
            request = _build_request(client, target, body, headers, timeout_s)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                head = await _read_at_most(response, RESPONSE_READ_LIMIT)
            finally:
                await response.aclose()  # closes the connection if the body was not all read
    except UnresolvableUrl as exc:
        return result(False, None, exc.message, True)
    except UnsafeUrl as exc:
        return result(False, None, f"refused: {exc.message}", False)
    except (TimeoutError, httpx.TimeoutException):
        return result(False, None, f"timed out after {timeout_s:g} s", True)
    except (httpx.TransportError, OSError) as exc:
        return result(False, None, f"connection failed: {type(exc).__name__}: {exc}", True)

    status = response.status_code
    if 200 <= status < 300:
        return result(True, status, None, False)
    if 300 <= status < 400:
        location = _printable(response.headers.get("location", ""))
        return result(False, status, f"HTTP {status}: redirect to {location!r} not followed", False)
    retryable = status >= 500 or status in (408, 429)
    snippet = _printable(head.decode("utf-8", "replace"))
    return result(
        False, status, f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}", retryable
    )


def _build_request(
    client: httpx.AsyncClient,
    target: Target,
    body: bytes,
    request_headers: dict[str, str],
    timeout_s: float,
) -> httpx.Request:
    url = target.url
    merged = httpx.Headers(request_headers)
    # We only glance at the body: compressed bytes would make a useless error text.
    merged["Accept-Encoding"] = "identity"
    extensions: dict[str, str] = {}
    if target.connect_to is not None:
        # Pin the connection to the checked address; the receiver still sees its own name.
        merged["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            # httpcore sends this as SNI and verifies the certificate against it.
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        url = url.copy_with(host=str(target.connect_to))
    return client.build_request(
        "POST",
        url,
        content=body,
        headers=merged,
        timeout=httpx.Timeout(timeout_s),
        extensions=extensions,
    )


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of the raw body (plus at most one network read: ~64 KiB)."""
    if response.is_stream_consumed:  # a transport that hands over read responses (mocks)
        return response.content[:limit]
    received = bytearray()
    # aiter_raw is an async generator (typed as an iterator): close it when we stop early.
    raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(raw) as chunks:
        async for chunk in chunks:
            received += chunk
            if len(received) >= limit:
                break
    return bytes(received[:limit])


def _printable(text: str, limit: int = 200) -> str:
    """A receiver's text made safe to store and show: one line, no control characters."""
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return cleaned[:limit]
