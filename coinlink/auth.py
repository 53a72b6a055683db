"""Authenticating requests: ``Authorization: Bearer <access token>`` → the caller's claims."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from sanic import HTTPResponse, Request

from coinlink.accounts import AccountService
from coinlink.errors import ApiError
from coinlink.tokens import AccessClaims, InvalidToken

# OpenAPI: the scheme every authenticated operation declares (registered in create_app).
BEARER: dict[str, Any] = {"bearer": []}

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[HTTPResponse]])


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class InvalidAccessToken(ApiError):
    status = 401
    code = "invalid_token"

    def __init__(self, message: str = "access token is invalid, expired or revoked") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def bearer_token(request: Request) -> str | None:
    header: str | None = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidAccessToken("authorization must be `Bearer <access token>`")
    return token.strip()


async def authenticate(request: Request) -> AccessClaims:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized()
    accounts: AccountService = request.app.ctx.accounts
    try:
        claims = accounts.tokens.decode_access(token)
    except InvalidToken:
        raise InvalidAccessToken() from None
    if not await accounts.access_allowed(claims):
        raise InvalidAccessToken()
    request.ctx.claims = claims
    return claims


def requires_auth(handler: Handler) -> Handler:
    """Run the handler only for a valid access token; ``request.ctx.claims`` holds it."""

    @wraps(handler)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        await authenticate(request)
        return await handler(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def client_ip(request: Request) -> str:
    """The client's address as the rate limiter resolved it (trusted proxies applied)."""
    resolved = getattr(request.ctx, "client_ip", None)
    return str(resolved or request.ip)
