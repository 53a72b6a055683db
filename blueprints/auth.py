"""/api/v2/auth: register, login, refresh, logout, sessions, password."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import Field, StringConstraints
from sanic import Blueprint, HTTPResponse, Request, empty, json
from sanic_ext import openapi

from coinlink.accounts import AccountError, AccountService, Tokens, iso, user_dict
from coinlink.auth import BEARER, client_ip, requires_auth
from coinlink.errors import ApiError, NotFound
from coinlink.ratelimit import enforce
from coinlink.validation import Body, Email, Password, openapi_body, parse_body

bp = Blueprint("auth", url_prefix="/api/v2/auth")

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
NO_STORE = {"Cache-Control": "no-store"}  # token responses are never cached (RFC 6749 5.1)


class Register(Body):
    email: Email
    password: Password
    display_name: DisplayName = ""


class Login(Body):
    email: Email
    password: Password


# Generous bounds: anything that is not one of our tokens is answered 401, not 422.
class Refresh(Body):
    refresh_token: str = Field(min_length=1, max_length=4096)


class Logout(Body):
    refresh_token: str | None = Field(default=None, max_length=4096)


class PasswordChange(Body):
    current_password: Password
    new_password: Password


_STATUS_OF = {
    "email_taken": 409,
    "invalid_credentials": 401,
    "invalid_token": 401,
    "token_reused": 401,
}


def account_error(exc: AccountError) -> ApiError:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if "token" in exc.code else None
    return ApiError(exc.message, status=_STATUS_OF[exc.code], code=exc.code, headers=headers)


def _accounts(request: Request) -> AccountService:
    service: AccountService = request.app.ctx.accounts
    return service


def _user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:256]


@bp.post("/register")
@openapi.definition(
    summary="Create an account and sign in", tag="auth", body=openapi_body(Register)
)
@openapi.response(201, description="{user, tokens}")
@openapi.response(409, description="email_taken")
@openapi.response(422, description="validation_error")
async def register(request: Request) -> HTTPResponse:
    body = parse_body(request, Register)
    try:
        user, tokens = await _accounts(request).register(
            body.email, body.password, body.display_name, _user_agent(request), client_ip(request)
        )
    except AccountError as exc:
        raise account_error(exc) from None
    return json({"user": user_dict(user), "tokens": tokens.as_dict()}, status=201, headers=NO_STORE)


@bp.post("/login")
@openapi.definition(summary="Sign in with email and password", tag="auth", body=openapi_body(Login))
@openapi.response(200, description="{user, tokens}")
@openapi.response(401, description="invalid_credentials")
@openapi.response(429, description="rate_limited")
async def login(request: Request) -> HTTPResponse:
    body = parse_body(request, Login)
    await enforce(request, "login_account", body.email)
    try:
        user, tokens = await _accounts(request).login(
            body.email, body.password, _user_agent(request), client_ip(request)
        )
    except AccountError as exc:
        raise account_error(exc) from None
    return json({"user": user_dict(user), "tokens": tokens.as_dict()}, headers=NO_STORE)


@bp.post("/refresh")
@openapi.definition(summary="Rotate a refresh token", tag="auth", body=openapi_body(Refresh))
@openapi.response(200, description="{tokens}")
@openapi.response(401, description="invalid_token or token_reused (the session is revoked)")
async def refresh(request: Request) -> HTTPResponse:
    body = parse_body(request, Refresh)
    try:
        tokens: Tokens = await _accounts(request).refresh(body.refresh_token)
    except AccountError as exc:
        raise account_error(exc) from None
    return json({"tokens": tokens.as_dict()}, headers=NO_STORE)


@bp.post("/logout")
@openapi.definition(summary="Sign out: revoke this session", tag="auth", secured=BEARER)
@openapi.response(204, description="signed out")
@requires_auth
async def logout(request: Request) -> HTTPResponse:
    if request.body:
        parse_body(request, Logout)  # accepted for clients that send it; the session is revoked
    await _accounts(request).logout(request.ctx.claims)
    return empty()


@bp.get("/sessions")
@openapi.definition(summary="The caller's active sessions", tag="auth", secured=BEARER)
@requires_auth
async def sessions(request: Request) -> HTTPResponse:
    claims = request.ctx.claims
    items = [
        {
            "id": str(session.id),
            "created_at": iso(session.created_at),
            "last_used_at": iso(session.last_used_at),
            "user_agent": session.user_agent,
            "ip": session.ip,
            "current": str(session.id) == claims.session_id,
        }
        for session in await _accounts(request).list_sessions(claims.user_id)
    ]
    return json({"items": items})


@bp.delete("/sessions/<session_id:uuid>")
@openapi.definition(summary="Revoke one of the caller's sessions", tag="auth", secured=BEARER)
@openapi.response(204, description="revoked")
@openapi.response(404, description="unknown id or another user's")
@requires_auth
async def revoke_session(request: Request, session_id: UUID) -> HTTPResponse:
    if not await _accounts(request).revoke_own_session(request.ctx.claims.user_id, session_id):
        raise NotFound("no such session")
    return empty()


@bp.post("/password")
@openapi.definition(
    summary="Change the password; every other session is revoked",
    tag="auth",
    body=openapi_body(PasswordChange),
    secured=BEARER,
)
@openapi.response(204, description="changed")
@openapi.response(401, description="invalid_credentials")
@requires_auth
async def change_password(request: Request) -> HTTPResponse:
    body = parse_body(request, PasswordChange)
    claims = request.ctx.claims
    try:
        await _accounts(request).change_password(
            claims.user_id, claims.session_id, body.current_password, body.new_password
        )
    except AccountError as exc:
        raise account_error(exc) from None
    return empty()
