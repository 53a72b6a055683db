"""/api/v2/users: the caller's profile and preferences."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StringConstraints, field_validator
from sanic import Blueprint, HTTPResponse, Request, empty, json
from sanic_ext import openapi

from coinlink import webhooks
from coinlink.accounts import AccountService, user_dict
from coinlink.auth import BEARER, current_user, requires_auth
from coinlink.errors import RequestValidationError
from coinlink.ratelimit import enforce
from coinlink.validation import Body, DisplayName, Password, openapi_body, parse_body
from models.accounts import User

bp = Blueprint("users", url_prefix="/api/v2/users")

MAX_WATCHLIST = 100


class ProfileUpdate(Body):
    display_name: DisplayName


class DeleteAccount(Body):
    password: Password


def _webhook_url(value: str | None) -> str | None:
    if value is None:
        return None
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


class Preferences(Body):
    base_currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3,10}$")] = "USD"
    watchlist: list[Annotated[str, StringConstraints(max_length=21)]] = Field(
        default_factory=list, max_length=MAX_WATCHLIST
    )
    webhook_url: Annotated[str | None, Field(max_length=2048), AfterValidator(_webhook_url)] = None

    @field_validator("base_currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("watchlist")
    @classmethod
    def _normalise(cls, value: list[str]) -> list[str]:
        return [symbol.strip().upper() for symbol in value]  # de-duplicated once checked


def preferences_dict(user: User) -> dict[str, Any]:
    return {
        "base_currency": user.base_currency,
        "watchlist": list(user.watchlist),
        "webhook_url": user.webhook_url,
    }


@bp.get("/me")
@openapi.definition(summary="The caller's profile", tag="users", secured=BEARER)
@requires_auth
async def me(request: Request) -> HTTPResponse:
    return json(user_dict(await current_user(request)))


@bp.patch("/me")
@openapi.definition(
    summary="Change the display name (other fields are read-only: 422)",
    tag="users",
    body=openapi_body(ProfileUpdate),
    secured=BEARER,
)
@requires_auth
async def update_me(request: Request) -> HTTPResponse:
    body = parse_body(request, ProfileUpdate)
    user = await current_user(request)
    user.display_name = body.display_name
    await user.save(update_fields=["display_name", "updated_at"])
    return json(user_dict(user))


@bp.delete("/me")
@openapi.definition(
    summary="Delete the account with its sessions, alerts and notifications",
    tag="users",
    body=openapi_body(DeleteAccount),
    secured=BEARER,
)
@openapi.response(204, description="deleted")
@openapi.response(401, description="invalid_credentials")
@requires_auth
async def delete_me(request: Request) -> HTTPResponse:
    body = parse_body(request, DeleteAccount)
    user = await current_user(request)
    await enforce(request, "login_account", user.email)  # no unlimited password guesses
    accounts: AccountService = request.app.ctx.accounts
    await accounts.delete_account(user, body.password)
    return empty()


@bp.get("/me/preferences")
@openapi.definition(summary="The caller's preferences", tag="users", secured=BEARER)
@requires_auth
async def get_preferences(request: Request) -> HTTPResponse:
    return json(preferences_dict(await current_user(request)))


@bp.put("/me/preferences")
@openapi.definition(
    summary="Replace the caller's preferences",
    tag="users",
    body=openapi_body(Preferences),
    secured=BEARER,
)
@openapi.response(422, description="unknown symbol, bad URL, watchlist over 100")
@requires_auth
async def put_preferences(request: Request) -> HTTPResponse:
    body = parse_body(request, Preferences)
    settings = request.app.ctx.settings
    known = set(settings.symbols)
    unknown = {
        f"watchlist.{index}": f"unknown symbol {symbol}"
        for index, symbol in enumerate(body.watchlist)
        if symbol not in known
    }
    if unknown:
        raise RequestValidationError(unknown)
    quotes = {symbol.split("-")[1] for symbol in known}
    if body.base_currency not in quotes:
        raise RequestValidationError(
            {"base_currency": f"must be one of {', '.join(sorted(quotes))}"}
        )
    if body.webhook_url is not None:
        try:  # SSRF: no webhook into our own network (re-checked at every delivery)
            await webhooks.check_url(body.webhook_url, allow_private=settings.webhook_allow_private)
        except webhooks.UnsafeUrl as exc:
            raise RequestValidationError({"webhook_url": exc.message}) from None
    user = await current_user(request)
    user.base_currency = body.base_currency
    user.watchlist = list(dict.fromkeys(body.watchlist))
    user.webhook_url = body.webhook_url
    await user.save(update_fields=["base_currency", "watchlist", "webhook_url", "updated_at"])
    return json(preferences_dict(user))


@bp.post("/me/webhook-secret")
@openapi.definition(
    summary="Generate (or rotate) the key of the caller's webhook signatures; shown once",
    tag="users",
    secured=BEARER,
)
@openapi.response(201, description="{secret}")
@requires_auth
async def rotate_webhook_secret(request: Request) -> HTTPResponse:
    user = await current_user(request)
    user.webhook_secret = secrets.token_urlsafe(32)
    await user.save(update_fields=["webhook_secret", "updated_at"])
    return json({"secret": user.webhook_secret}, status=201)
