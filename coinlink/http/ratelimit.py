"""The rate-limit middleware: one policy per request, the ``RateLimit-*`` headers, 429s.

:func:`install` adds a request middleware that resolves the client address (trusted
proxies applied; stored as ``request.ctx.client_ip``) and applies one policy per request:
``user`` keyed by user id when the bearer token is valid and its session open (a revoked
or logged-out token buys no budget of its own), else ``anonymous`` keyed by address (IPv6
by its /64: one subscriber gets a whole /64 and could otherwise rotate through it).
``POST /api/v2/auth/login`` and ``.../register`` also pay ``login_ip`` and ``register``
per address; the login handler adds ``login_account`` per email through
:func:`enforce`. The most restrictive decision becomes the ``RateLimit-*`` headers; a
refusal is the 429 envelope with ``Retry-After``.

It registers at priority 900. Sanic runs request middleware from the highest priority
down (ties in registration order) and response middleware from the lowest up, so the
limiter runs after ``coinlink.http.middleware``'s trace id/metrics hook (1000): a 429 carries
the request's trace id and is counted in ``http_requests_total``. Its response hook runs
before that hook's, which only adds other headers.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from prometheus_client import Counter
from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from coinlink.http.client_address import TrustedProxies, client_ip, parse_address
from coinlink.http.errors import ApiError
from coinlink.http.middleware import QUIET_ROUTES, route_label
from coinlink.ratelimit import Decision, Policies, RateLimiter
from config import Settings

RATELIMIT_REJECTIONS = Counter(
    "ratelimit_rejections_total", "Requests refused with 429, by policy.", ["policy"]
)

PRIORITY: Final = 900  # below coinlink.http.middleware's 1000: runs after the trace id is set
_APP_KEY: Final = "rate_limiting"
_UNLIMITED_PATHS: Final = QUIET_ROUTES  # the probes
_LOGIN_PATH: Final = "/api/v2/auth/login"
_REGISTER_PATH: Final = "/api/v2/auth/register"


@dataclass(frozen=True, slots=True)
class _Installed:
    limiter: RateLimiter
    policies: Policies


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }


def _record(request: Request, policy_name: str, decision: Decision) -> None:
    """Keep the most restrictive decision for the headers; raise the 429 on a refusal."""
    current: Decision | None = getattr(request.ctx, "rate_limit", None)
    if not decision.allowed:
        request.ctx.rate_limit = decision
        RATELIMIT_REJECTIONS.labels(policy_name).inc()
        headers = rate_limit_headers(decision)
        # At least 1: "Retry-After: 0" would invite an immediate, refused retry.
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ApiError(
            "too many requests; retry later", status=429, code="rate_limited", headers=headers
        )
    if (
        current is None
        or decision.remaining < current.remaining
        or (decision.remaining == current.remaining and decision.reset_s > current.reset_s)
    ):
        request.ctx.rate_limit = decision


async def enforce(request: Request, policy_name: str, key: str) -> Decision | None:
    """Apply ``policy_name`` to ``key`` from a handler (e.g. ``login_account`` per email).

    Raises the 429 :class:`ApiError` when refused; otherwise the decision joins the
    request's ``RateLimit-*`` headers. None when rate limits are not installed (disabled).
    Callers pass a normalised key (the login handler's email is already lower-cased).
    """
    installed: _Installed | None = getattr(request.app.ctx, _APP_KEY, None)
    if installed is None:
        return None
    decision = await installed.limiter.hit(policy_name, installed.policies[policy_name], key)
    _record(request, policy_name, decision)
    return decision


@lru_cache(maxsize=4096)
def ip_key(address: str) -> str:
    """The rate-limit key of an address: IPv4 as is, IPv6 by its /64."""
    if ":" not in address:
        return address
    parsed = parse_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv4Address):  # IPv4-mapped, from a dual-stack socket
        return str(parsed)
    return f"{ipaddress.IPv6Network((parsed, 64), strict=False).network_address}/64"


def install(
    app: Sanic[Any, Any],
    limiter: RateLimiter,
    policies: Policies,
    trusted: TrustedProxies,
    user_of: Callable[[Request, str], Awaitable[str | None]],
) -> None:
    """Add the rate-limit middleware, unless ``rate_limits_enabled`` is off.

    The caller owns the limiter's lifecycle (``start``/``close`` in the worker listeners);
    a limiter used before ``start`` connects by itself.
    """
    settings: Settings | None = getattr(app.ctx, "settings", None)
    if settings is not None and not settings.rate_limits_enabled:
        return
    setattr(app.ctx, _APP_KEY, _Installed(limiter, policies))
    hit, hit_now = limiter.hit, limiter.hit_now
    anonymous, user, login_ip, register = (
        policies["anonymous"],
        policies["user"],
        policies["login_ip"],
        policies["register"],
    )

    async def limit_request(request: Request) -> None:
        path = request.path
        if (
            request.method == "OPTIONS"
            or path in _UNLIMITED_PATHS
            or path == "/docs"
            or path.startswith("/docs/")
        ):
            return
        ip = request.ctx.client_ip = client_ip(request, trusted)
        user_id = None
        authorization = request.headers.get("authorization")
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
            user_id = await user_of(request, token) if token else None
        # Decided without a coroutine when no Redis call is needed (most requests).
        if user_id is not None:
            decision = hit_now("user", user, user_id) or await hit("user", user, user_id)
            _record(request, "user", decision)
        else:
            key = ip_key(ip)
            decision = hit_now("anonymous", anonymous, key) or await hit(
                "anonymous", anonymous, key
            )
            _record(request, "anonymous", decision)
        if request.method == "POST":
            # The matched route, not the raw path: "/api/v2/auth/login/" or an encoded
            # variant reaching the same handler must pay the same policy.
            target = (request.route and route_label(request)) or path
            target = target.rstrip("/")
            if target == _LOGIN_PATH:
                _record(request, "login_ip", await hit("login_ip", login_ip, ip_key(ip)))
            elif target == _REGISTER_PATH:
                _record(request, "register", await hit("register", register, ip_key(ip)))

    # A coroutine although it never waits: Sanic tests each middleware's result with
    # inspect.isawaitable, which a coroutine passes at once and None only after the
    # Awaitable ABC's isinstance check (a plain function costs more here).
    async def add_headers(request: Request, response: BaseHTTPResponse) -> None:
        decision: Decision | None = getattr(request.ctx, "rate_limit", None)
        if decision is not None:
            response.headers.update(rate_limit_headers(decision))

    app.register_middleware(limit_request, "request", priority=PRIORITY)
    app.register_middleware(add_headers, "response", priority=PRIORITY)
