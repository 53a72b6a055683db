"""/api/v2/auth: register, login, refresh, logout, sessions, password."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field
from sanic import Blueprint, HTTPResponse, Request, empty, json
from sanic_ext import openapi

from coinlink.accounts.service import AccountService, user_dict
from coinlink.http.auth import BEARER, client_ip, current_user, requires_auth
from coinlink.http.errors import NotFound
from coinlink.http.ratelimit import enforce
from coinlink.http.request import Body, DisplayName, Email, Password, openapi_body, parse_body
from coinlink.wire import iso_time

bp = Blueprint("auth", url_prefix="/api/v2/auth")

NO_STORE = {"Cache-Control": "no-store"}  # token responses are never cached (RFC 6749 5.1)
MAX_SESSIONS_LISTED = 100


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


class PasswordChange(Body):
    current_password: Password
    new_password: Password


def _accounts(request: Request) -> AccountService:
    service: AccountService = request.app.ctx.accounts
    return service


def _user_agent(request: Request) -> str:
    return str(request.headers.get("user-agent", ""))[:256]


@bp.post("/register")
@openapi.definition(
    summary="Create an account and sign in", tag="auth", body=openapi_body(Register)
)
@openapi.response(201, description="{user, tokens}")
@openapi.response(409, description="email_taken")
@openapi.response(422, description="validation_error")
async def register(request: Request) -> HTTPResponse:
    body = parse_body(request, Register)
    user, tokens = await _accounts(request).register(
        body.email, body.password, body.display_name, _user_agent(request), client_ip(request)
    )
    return json({"user": user_dict(user), "tokens": tokens.as_dict()}, status=201, headers=NO_STORE)


@bp.post("/login")
@openapi.definition(summary="Sign in with email and password", tag="auth", body=openapi_body(Login))
@openapi.response(200, description="{user, tokens}")
@openapi.response(401, description="invalid_credentials")
@openapi.response(429, description="rate_limited")
async def login(request: Request) -> HTTPResponse:
    body = parse_body(request, Login)
    await enforce(request, "login_account", body.email)
    user, tokens = await _accounts(request).login(
        body.email, body.password, _user_agent(request), client_ip(request)
    )
    return json({"user": user_dict(user), "tokens": tokens.as_dict()}, headers=NO_STORE)


@bp.post("/refresh")
@openapi.definition(summary="Rotate a refresh token", tag="auth", body=openapi_body(Refresh))
@openapi.response(200, description="{tokens}")
@openapi.response(401, description="invalid_token or token_reused (the session is revoked)")
async def refresh(request: Request) -> HTTPResponse:
    body = parse_body(request, Refresh)
    tokens = await _accounts(request).refresh(body.refresh_token)
    return json({"tokens": tokens.as_dict()}, headers=NO_STORE)


@bp.post("/logout")
@openapi.definition(
    summary="Sign out: revoke this session (a body, if any, is ignored)",
    tag="auth",
    secured=BEARER,
)
@openapi.response(204, description="signed out")
@requires_auth
async def logout(request: Request) -> HTTPResponse:
    # The session comes from the access token; an optional {refresh_token} body is not
    # needed, and a malformed one must never keep a session alive.
    await _accounts(request).logout(request.ctx.claims)
    return empty()


@bp.get("/sessions")
@openapi.definition(summary="The caller's active sessions", tag="auth", secured=BEARER)
@requires_auth
async def sessions(request: Request) -> HTTPResponse:
    claims = request.ctx.claims
    listed = await _accounts(request).list_sessions(claims.user_id, MAX_SESSIONS_LISTED)
    items = [
        {
            "id": str(session.id),
            "created_at": iso_time(session.created_at),
            "last_used_at": iso_time(session.last_used_at),
            "user_agent": session.user_agent,
            "ip": session.ip,
            "current": str(session.id) == claims.session_id,
        }
        for session in listed
    ]
    # The most recently used ones; older live sessions can be ended by a password change.
    return json({"items": items, "next_cursor": None})


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
    user = await current_user(request)
    # A stolen access token must not buy unlimited password guesses: the login budget.
    await enforce(request, "login_account", user.email)
    await _accounts(request).change_password(
        user, request.ctx.claims.session_id, body.current_password, body.new_password
    )
    return empty()
