"""Authenticating requests: ``Authorization: Bearer <access token>`` → the caller's claims."""

from __future__ import annotations

from sanic import Request

from coinlink.accounts.service import AccountService, AuthError
from coinlink.accounts.tokens import AccessClaims, InvalidToken
from coinlink.http.client_address import client_ip as resolve_client_ip
from coinlink.http.errors import ApiError
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
    if claims is not None and not await accounts.access_allowed(claims):
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


async def current_user(request: Request) -> User:
    """The authenticated caller's row (:func:`authenticate` ran); 401 if it is gone."""
    user = await User.get_or_none(id=request.ctx.claims.user_id)
    if user is None:  # deleted while its token still lived
        raise invalid_access_token()
    return user


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
