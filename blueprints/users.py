"""/api/v2/users: the caller's profile and preferences."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, field_validator
from sanic import Blueprint, HTTPResponse, Request, empty, json
from sanic_ext import openapi

from coinlink.accounts.profiles import ProfileService, preferences_dict
from coinlink.accounts.service import AccountService, user_dict
from coinlink.alerts import webhooks
from coinlink.http.auth import BEARER, current_user, requires_auth
from coinlink.http.ratelimit import enforce
from coinlink.http.request import Body, DisplayName, Password, openapi_body, parse_body

bp = Blueprint("users", url_prefix="/api/v2/users")

MAX_WATCHLIST = 100


class ProfileUpdate(Body):
    display_name: DisplayName


class DeleteAccount(Body):
    password: Password


def _webhook_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return webhooks.check_syntax(value)
    except webhooks.UnsafeUrl as exc:
        raise ValueError(exc.message) from None


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


def _profiles(request: Request) -> ProfileService:
    profiles: ProfileService = request.app.ctx.profiles
    return profiles


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
    user = await _profiles(request).rename(await current_user(request), body.display_name)
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
    user = await _profiles(request).set_preferences(
        await current_user(request), body.base_currency, body.watchlist, body.webhook_url
    )
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
    secret = await _profiles(request).rotate_webhook_secret(await current_user(request))
    return json({"secret": secret}, status=201)
