"""/api/v2/users: the caller's profile and preferences."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, field_validator
from sanic import Blueprint, HTTPResponse, Request, empty, json

from blueprints.auth import HASHING_BUSY, INVALID_CREDENTIALS, LOGIN_LIMIT, User
from coinlink.accounts.profiles import ProfileService, preferences_dict
from coinlink.accounts.service import AccountService, user_dict
from coinlink.alerts import webhooks
from coinlink.http.auth import current_profile_json, current_user
from coinlink.http.contract import Reply, operation
from coinlink.http.ratelimit import enforce
from coinlink.http.request import Body, DisplayName, Password
from coinlink.http.schemas import Reply as Model

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
    base_currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3,10}$")] = Field(
        default="USD",
        description="a currency the configured symbols are quoted in (USD by default); "
        "prices are not converted, so any other is a 422",
    )
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


class PreferencesOut(Model):
    base_currency: str = Field(examples=["USD"])
    watchlist: list[str] = Field(examples=[["BTC-USD", "ETH-USD"]])
    webhook_url: str | None


class WebhookSecret(Model):
    secret: str = Field(description="shown once: keep it to check webhook signatures")


def _profiles(request: Request) -> ProfileService:
    profiles: ProfileService = request.app.ctx.profiles
    return profiles


@bp.get("/me")
@operation(
    summary="The caller's profile",
    tag="users",
    auth="bearer",
    replies={200: Reply("the profile", User)},
)
async def me(request: Request) -> HTTPResponse:
    return HTTPResponse(await current_profile_json(request), content_type="application/json")


@bp.patch("/me")
@operation(
    summary="Change the display name (other fields are read-only: 422)",
    tag="users",
    auth="bearer",
    body=ProfileUpdate,
    replies={200: Reply("the profile", User)},
)
async def update_me(request: Request, body: ProfileUpdate) -> HTTPResponse:
    user = await _profiles(request).rename(await current_user(request), body.display_name)
    accounts: AccountService = request.app.ctx.accounts
    await accounts.user_changed(str(user.id))
    return json(user_dict(user))


@bp.delete("/me")
@operation(
    summary="Delete the account with its sessions, alerts and notifications",
    tag="users",
    auth="bearer",
    body=DeleteAccount,
    replies={204: Reply("deleted")},
    errors={**INVALID_CREDENTIALS, 429: LOGIN_LIMIT, **HASHING_BUSY},
)
async def delete_me(request: Request, body: DeleteAccount) -> HTTPResponse:
    user = await current_user(request)
    await enforce(request, "login_account", user.email)  # no unlimited password guesses
    accounts: AccountService = request.app.ctx.accounts
    await accounts.delete_account(user, body.password)
    return empty()


@bp.get("/me/preferences")
@operation(
    summary="The caller's preferences",
    tag="users",
    auth="bearer",
    replies={200: Reply("the preferences", PreferencesOut)},
)
async def get_preferences(request: Request) -> HTTPResponse:
    return json(preferences_dict(await current_user(request)))


@bp.put("/me/preferences")
@operation(
    summary="Replace the caller's preferences",
    tag="users",
    auth="bearer",
    body=Preferences,
    replies={200: Reply("the preferences", PreferencesOut)},
    errors={422: "also: an unknown symbol, an unsafe webhook URL, a quote not served"},
)
async def put_preferences(request: Request, body: Preferences) -> HTTPResponse:
    user = await _profiles(request).set_preferences(
        await current_user(request), body.base_currency, body.watchlist, body.webhook_url
    )
    return json(preferences_dict(user))


@bp.post("/me/webhook-secret")
@operation(
    summary="Generate (or rotate) the key of the caller's webhook signatures; shown once",
    tag="users",
    auth="bearer",
    replies={201: Reply("the new secret", WebhookSecret)},
)
async def rotate_webhook_secret(request: Request) -> HTTPResponse:
    secret = await _profiles(request).rotate_webhook_secret(await current_user(request))
    return json({"secret": secret}, status=201)
