"""Authenticating requests: ``Authorization: Bearer <access token>`` → the caller's claims."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable

import orjson
from sanic import HTTPResponse, Request

from coinlink.accounts.service import AccountService, AuthError, user_dict
from coinlink.accounts.tokens import AccessClaims, InvalidToken
from coinlink.http.client_address import client_ip as resolve_client_ip
from coinlink.http.errors import ApiError
from coinlink.http.pagination import DEFAULT_LIMIT, PageQuery
from models.accounts import User


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


def invalid_access_token(message: str = "access token is invalid, expired or revoked") -> AuthError:
    return AuthError(message)


def bearer_token(request: Request) -> str | None:
    header: str | None = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise invalid_access_token("authorization must be `Bearer <access token>`")
    return token.strip()


async def authenticate(request: Request) -> AccessClaims:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized()
    claims = await checked_claims(request, token)
    if claims is None:
        raise invalid_access_token()
    request.ctx.claims = claims
    return claims


async def checked_claims(request: Request, token: str) -> AccessClaims | None:
    """The claims of ``token`` when it is a valid access token of a session still open,
    else None; checked once per request (the rate limiter asks first)."""
    checked: tuple[str, AccessClaims | None] | None = getattr(request.ctx, "checked_token", None)
    if checked is not None and checked[0] == token:
        return checked[1]
    accounts: AccountService = request.app.ctx.accounts
    try:
        claims: AccessClaims | None = accounts.tokens.decode_access(token)
    except InvalidToken:
        claims = None
    if claims is not None:
        allowed, request.ctx.user_version = await accounts.check_access(claims)
        if not allowed:
            claims = None
    request.ctx.checked_token = (token, claims)
    return claims


async def user_of(request: Request, token: str) -> str | None:
    """The rate limiter's user key: the user of a valid token of an open session. A token
    that was signed but is revoked or logged out names nobody: its request pays the
    anonymous budget of its address."""
    claims = await checked_claims(request, token)
    return claims.user_id if claims is not None else None


def client_ip(request: Request) -> str:
    """The client's address, trusted proxies applied (resolved once per request)."""
    resolved = getattr(request.ctx, "client_ip", None)
    if resolved is None:
        resolved = request.ctx.client_ip = resolve_client_ip(request, request.app.ctx.trusted)
    return str(resolved)


async def cached_for_caller(
    request: Request, what: Hashable, render: Callable[[], Awaitable[bytes | None]]
) -> bytes | None:
    """A read of the authenticated caller's that the worker may answer from its
    :class:`~coinlink.accounts.user_views.UserViews` (``what`` names it with its query)."""
    accounts: AccountService = request.app.ctx.accounts
    version: bytes | None = getattr(request.ctx, "user_version", None)
    return await accounts.cached_for(request.ctx.claims.user_id, what, version, render)


async def cached_page_for_caller(
    request: Request, query: PageQuery, what: Hashable, render: Callable[[], Awaitable[bytes]]
) -> HTTPResponse:
    """A list page of the caller's: the first at the default limit through
    :func:`cached_for_caller` (the page read often); any other straight from ``render`` (a
    key per cursor or limit would let one user fill the worker with copies of one page)."""
    if query.cursor is None and query.limit == DEFAULT_LIMIT:
        return json_body(await cached_for_caller(request, what, render))
    return json_body(await render())


def json_body(body: bytes | None) -> HTTPResponse:
    """A cached read's JSON body as the response (``render`` gave one: never None here)."""
    assert body is not None
    return HTTPResponse(body, content_type="application/json")


async def current_profile_json(request: Request) -> bytes:
    """The authenticated caller's ``user_dict`` as JSON; 401 if the user is gone."""

    async def render() -> bytes | None:
        user = await User.get_or_none(id=request.ctx.claims.user_id)
        return None if user is None else orjson.dumps(user_dict(user))

    body = await cached_for_caller(request, "profile", render)
    if body is None:  # deleted while its token still lived
        raise invalid_access_token()
    return body


async def current_user(request: Request) -> User:
    """The authenticated caller's row (:func:`authenticate` ran); 401 if it is gone."""
    user = await User.get_or_none(id=request.ctx.claims.user_id)
    if user is None:  # deleted while its token still lived
        raise invalid_access_token()
    return user


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
