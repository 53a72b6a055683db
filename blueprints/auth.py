"""/api/v2/auth: register, login, refresh, logout, sessions, password."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import ConfigDict, Field
from sanic import Blueprint, HTTPResponse, Request, empty, json

from coinlink.accounts.service import AccountService, user_dict
from coinlink.http.auth import client_ip, current_user
from coinlink.http.contract import Reply, operation
from coinlink.http.errors import NotFound
from coinlink.http.ratelimit import enforce
from coinlink.http.request import Body, DisplayName, Email, Password
from coinlink.http.schemas import Page
from coinlink.http.schemas import Reply as Model
from coinlink.wire import iso_time

bp = Blueprint("auth", url_prefix="/api/v2/auth")

NO_STORE = {"Cache-Control": "no-store"}  # token responses are never cached (RFC 6749 5.1)
MAX_SESSIONS_LISTED = 100


class Register(Body):
    email: Email
    password: Password
    display_name: DisplayName = ""


class Login(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ada@example.com", "password": "correct horse battery"}]
        }
    )
    email: Email
    password: Password


# Generous bounds: anything that is not one of our tokens is answered 401, not 422.
class Refresh(Body):
    refresh_token: str = Field(min_length=1, max_length=4096)


class PasswordChange(Body):
    current_password: Password
    new_password: Password


class User(Model):
    id: UUID
    email: str = Field(examples=["ada@example.com"])
    display_name: str
    is_admin: bool
    created_at: datetime


class Tokens(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
                    "refresh_token": "rt_5u8Yy9kQ2bVd1xW3",
                    "token_type": "Bearer",
                    "expires_in": 900,
                }
            ]
        }
    )
    access_token: str = Field(description="send as `Authorization: Bearer <access_token>`")
    refresh_token: str = Field(description="single use: POST /api/v2/auth/refresh")
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=0, description="seconds until the access token expires")


class SignedIn(Model):
    user: User
    tokens: Tokens


class Refreshed(Model):
    tokens: Tokens


class SessionInfo(Model):
    id: UUID
    created_at: datetime
    last_used_at: datetime
    user_agent: str
    ip: str
    current: bool = Field(description="the session of the token that asked")


NO_CACHE = "no-store: token responses are never cached"
SIGNED_IN = Reply("the account and its first tokens", SignedIn, headers={"Cache-Control": NO_CACHE})
INVALID_CREDENTIALS = {401: "`invalid_credentials`: the password is wrong"}
# Password hashing is bounded per worker (COINLINK_BCRYPT_CONCURRENCY).
HASHING_BUSY = {
    503: "`service_unavailable`: too many passwords are being checked; retry after `Retry-After`"
}
LOGIN_LIMIT = (
    "`rate_limited`: too many attempts for this account or from this address; wait "
    "`Retry-After` seconds"
)


def _accounts(request: Request) -> AccountService:
    service: AccountService = request.app.ctx.accounts
    return service


def _user_agent(request: Request) -> str:
    return str(request.headers.get("user-agent", ""))[:256]


@bp.post("/register")
@operation(
    summary="Create an account and sign in",
    tag="auth",
    body=Register,
    replies={201: SIGNED_IN},
    errors={409: "`email_taken`: sign in instead", **HASHING_BUSY},
)
async def register(request: Request, body: Register) -> HTTPResponse:
    user, tokens = await _accounts(request).register(
        body.email, body.password, body.display_name, _user_agent(request), client_ip(request)
    )
    return json({"user": user_dict(user), "tokens": tokens.as_dict()}, status=201, headers=NO_STORE)


@bp.post("/login")
@operation(
    summary="Sign in with email and password",
    tag="auth",
    body=Login,
    replies={200: SIGNED_IN},
    errors={
        401: "`invalid_credentials`: email or password is wrong",
        429: LOGIN_LIMIT,
        **HASHING_BUSY,
    },
)
async def login(request: Request, body: Login) -> HTTPResponse:
    await enforce(request, "login_account", body.email)
    user, tokens = await _accounts(request).login(
        body.email, body.password, _user_agent(request), client_ip(request)
    )
    return json({"user": user_dict(user), "tokens": tokens.as_dict()}, headers=NO_STORE)


@bp.post("/refresh")
@operation(
    summary="Rotate a refresh token: a new pair, the old refresh token is spent",
    tag="auth",
    body=Refresh,
    replies={200: Reply("the new tokens", Refreshed, headers={"Cache-Control": NO_CACHE})},
    errors={401: "`invalid_token` (unknown or expired) or `token_reused` (the session is revoked)"},
)
async def refresh(request: Request, body: Refresh) -> HTTPResponse:
    tokens = await _accounts(request).refresh(body.refresh_token)
    return json({"tokens": tokens.as_dict()}, headers=NO_STORE)


@bp.post("/logout")
@operation(
    summary="Sign out: revoke this session (a body, if any, is ignored)",
    tag="auth",
    auth="bearer",
    replies={204: Reply("signed out")},
)
async def logout(request: Request) -> HTTPResponse:
    # The session comes from the access token; an optional {refresh_token} body is not
    # needed, and a malformed one must never keep a session alive.
    await _accounts(request).logout(request.ctx.claims)
    return empty()


@bp.get("/sessions")
@operation(
    summary="The caller's active sessions, the most recently used first (at most 100)",
    tag="auth",
    auth="bearer",
    replies={200: Reply("the sessions (`next_cursor` is always null)", Page[SessionInfo])},
)
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


@bp.delete("/sessions/<session_id:str>")
@operation(
    summary="Revoke one of the caller's sessions",
    tag="auth",
    auth="bearer",
    replies={204: Reply("revoked")},
    errors={404: "`not_found`: no such session of the caller's"},
)
async def revoke_session(request: Request, session_id: str) -> HTTPResponse:
    if not await _accounts(request).revoke_own_session(request.ctx.claims.user_id, session_id):
        raise NotFound("no such session")
    return empty()


@bp.post("/password")
@operation(
    summary="Change the password; every other session is revoked",
    tag="auth",
    auth="bearer",
    body=PasswordChange,
    replies={204: Reply("changed")},
    errors={**INVALID_CREDENTIALS, 429: LOGIN_LIMIT, **HASHING_BUSY},
)
async def change_password(request: Request, body: PasswordChange) -> HTTPResponse:
    user = await current_user(request)
    # A stolen access token must not buy unlimited password guesses: the login budget.
    await enforce(request, "login_account", user.email)
    await _accounts(request).change_password(
        user, request.ctx.claims.session_id, body.current_password, body.new_password
    )
    return empty()
