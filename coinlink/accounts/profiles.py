"""What a user changes of their own account: the display name, preferences, the webhook key.

Preferences are checked against this instance: watchlist symbols it serves, a base currency
one of its symbols is quoted in (stored for clients; prices are never converted), and a
webhook URL that is safe to call (SSRF: no receiver inside our own network; re-checked at
every delivery).
"""

from __future__ import annotations

import secrets
from typing import Any

from coinlink.alerts import webhooks
from coinlink.invalid import Invalid
from models.accounts import User


def preferences_dict(user: User) -> dict[str, Any]:
    return {
        "base_currency": user.base_currency,
        "watchlist": list(user.watchlist),
        "webhook_url": user.webhook_url,
    }


class ProfileService:
    def __init__(self, symbols: list[str], *, webhook_allow_private: bool) -> None:
        self.symbols = frozenset(symbols)
        self.quotes = frozenset(symbol.split("-")[1] for symbol in symbols)
        self.webhook_allow_private = webhook_allow_private

    async def rename(self, user: User, display_name: str) -> User:
        user.display_name = display_name
        await user.save(update_fields=["display_name", "updated_at"])
        return user

    async def set_preferences(
        self, user: User, base_currency: str, watchlist: list[str], webhook_url: str | None
    ) -> User:
        unknown = {
            f"watchlist.{index}": f"unknown symbol {symbol}"
            for index, symbol in enumerate(watchlist)
            if symbol not in self.symbols
        }
        if unknown:
            raise Invalid(unknown)
        if base_currency not in self.quotes:
            # Prices are never converted: only a currency the symbols are quoted in is served.
            served = ", ".join(sorted(self.quotes))
            raise Invalid(
                {
                    "base_currency": f"only {served} is served here: prices are not converted"
                    " (the quote currency of the configured symbols)"
                }
            )
        if webhook_url is not None:
            try:
                await webhooks.check_url(webhook_url, allow_private=self.webhook_allow_private)
            except webhooks.UnsafeUrl as exc:
                raise Invalid({"webhook_url": exc.message}) from None
        user.base_currency = base_currency
        user.watchlist = list(dict.fromkeys(watchlist))
        user.webhook_url = webhook_url
        await user.save(update_fields=["base_currency", "watchlist", "webhook_url", "updated_at"])
        return user

    async def rotate_webhook_secret(self, user: User) -> str:
        """A new key for the user's webhook signatures (the old one stops at once)."""
        user.webhook_secret = secrets.token_urlsafe(32)
        await user.save(update_fields=["webhook_secret", "updated_at"])
        return user.webhook_secret
