"""The REST client (async): tokens kept fresh with one refresh at a time, errors raised
as :class:`~coinlink_client.errors.CoinLinkError`, ``Retry-After`` honoured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from coinlink_client.errors import (
    AuthenticationError,
    CoinLinkError,
    UnexpectedResponse,
    error_for,
)
from coinlink_client.models import Alert, Candle, Json, Notification, Page, Ticker, Tokens, User

API = "/api/v2"
# Methods a retry cannot apply twice: only these are retried after a 429 or 503.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class AsyncClient:
    """CoinLink's REST API. Sign in with :meth:`login` or :meth:`register`, or pass saved
    ``tokens``; every call then sends the access token, refreshed ``refresh_margin_s``
    before it expires or after a 401. All callers share one refresh: refresh tokens are
    single use, and a second refresh with the same token would revoke the session.

    A 429 or 503 with ``Retry-After`` is retried after that wait when the method is
    idempotent and the wait at most ``max_retry_wait_s``, up to ``max_retries`` times.
    ``http``: an ``httpx.AsyncClient`` of your own (proxies, TLS, transports).
    """

    def __init__(
        self,
        base_url: str,
        *,
        tokens: Tokens | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 30.0,
        refresh_margin_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._api = self.base_url + API
        self._tokens = tokens
        self._max_retries = max_retries
        self._max_retry_wait_s = max_retry_wait_s
        self.refresh_margin_s = refresh_margin_s
        self._refresh_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- tokens ------------------------------------------------------------------------

    @property
    def tokens(self) -> Tokens | None:
        """The current tokens (save them to resume the session later), None signed out."""
        return self._tokens

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it expires within the margin."""
        tokens = self._signed_in()
        if tokens.expires_at - time.time() <= self.refresh_margin_s:
            await self._refresh(tokens.access_token)
        return self._signed_in().access_token

    async def refresh(self) -> Tokens:
        """Exchange the refresh token for a new pair now (joining a refresh under way)."""
        await self._refresh(self._signed_in().access_token)
        return self._signed_in()

    async def _refresh(self, stale: str) -> None:
        """Replace the tokens whose access token is ``stale``, unless another caller has
        done so meanwhile: the lock makes every other caller wait for the one refresh."""
        async with self._refresh_lock:
            tokens = self._signed_in()
            if tokens.access_token != stale:
                return
            # Not retried, whatever happens: the server may have spent the token already.
            response = await self._http.post(
                f"{self._api}/auth/refresh", json={"refresh_token": tokens.refresh_token}
            )
            if not response.is_success:
                raise _error(response)
            self._tokens = Tokens.from_json(_body(response)["tokens"])

    def _signed_in(self) -> Tokens:
        if self._tokens is None:
            raise AuthenticationError(401, "unauthorized", "sign in first: login() or register()")
        return self._tokens

    # -- requests ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Json | None = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        retries, refreshed = 0, False
        query = {k: v for k, v in (params or {}).items() if v is not None}
        while True:
            headers, token = {}, ""
            if auth:
                token = await self.access_token()
                headers["authorization"] = f"Bearer {token}"
            response = await self._http.request(
                method, self._api + path, json=json, params=query, headers=headers
            )
            if response.is_success:
                return response
            error = _error(response)
            if auth and error.code == "invalid_token" and not refreshed:
                # Expired early, or revoked: one refresh (shared), then one more try.
                refreshed = True
                await self._refresh(token)
                continue
            wait = error.retry_after
            if (
                response.status_code in (429, 503)
                and method in IDEMPOTENT
                and wait is not None
                and wait <= self._max_retry_wait_s
                and retries < self._max_retries
            ):
                retries += 1
                await asyncio.sleep(wait)
                continue
            raise error

    async def _json(self, method: str, path: str, **options: Any) -> Any:
        return _body(await self._call(method, path, **options))

    # -- accounts ----------------------------------------------------------------------

    async def register(self, email: str, password: str, display_name: str = "") -> User:
        body = {"email": email, "password": password, "display_name": display_name}
        return self._signed_in_as(await self._json("POST", "/auth/register", json=body, auth=False))

    async def login(self, email: str, password: str) -> User:
        body = {"email": email, "password": password}
        return self._signed_in_as(await self._json("POST", "/auth/login", json=body, auth=False))

    def _signed_in_as(self, body: Json) -> User:
        self._tokens = Tokens.from_json(body["tokens"])
        return User.from_json(body["user"])

    async def logout(self) -> None:
        """Revoke the session on the server (every worker and instance at once)."""
        await self._call("POST", "/auth/logout")
        self._tokens = None

    async def me(self) -> User:
        return User.from_json(await self._json("GET", "/users/me"))

    # -- market data -------------------------------------------------------------------

    async def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        params = {"symbols": ",".join(symbols) if symbols else None}
        body = await self._json("GET", "/market/tickers", params=params, auth=False)
        return [Ticker.from_json(item) for item in body["items"]]

    async def ticker(self, symbol: str) -> Ticker:
        return Ticker.from_json(await self._json("GET", f"/market/tickers/{symbol}", auth=False))

    async def candles(
        self,
        symbol: str,
        interval: str = "1m",
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Candles in epoch milliseconds: ``start`` alone gives the first ``limit`` from
        it; otherwise the newest ``limit`` up to ``end``."""
        params = {"interval": interval, "start": start, "end": end, "limit": limit}
        body = await self._json("GET", f"/market/candles/{symbol}", params=params, auth=False)
        return [Candle.from_json(item) for item in body["items"]]

    # -- alerts ------------------------------------------------------------------------

    async def create_alert(
        self,
        symbol: str,
        condition: str,
        threshold: Decimal | str,
        *,
        window_s: int | None = None,
        repeat: bool | None = None,
        cooldown_s: int | None = None,
        note: str | None = None,
    ) -> Alert:
        """``condition``: ``above``, ``below`` or ``pct_change`` (which needs ``window_s``).
        ``threshold`` goes as a decimal string, never a float."""
        fields = {"window_s": window_s, "repeat": repeat, "cooldown_s": cooldown_s, "note": note}
        body: Json = {"symbol": symbol, "condition": condition, "threshold": _plain(threshold)}
        body |= {k: v for k, v in fields.items() if v is not None}
        return Alert.from_json(await self._json("POST", "/alerts", json=body))

    async def alerts(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Alert]:
        params = {"status": status, "limit": limit, "cursor": cursor}
        return Page.from_json(await self._json("GET", "/alerts", params=params), Alert.from_json)

    async def alert(self, alert_id: str) -> Alert:
        return Alert.from_json(await self._json("GET", f"/alerts/{alert_id}"))

    async def update_alert(
        self,
        alert_id: str,
        *,
        threshold: Decimal | str | None = None,
        repeat: bool | None = None,
        cooldown_s: int | None = None,
        note: str | None = None,
        status: str | None = None,
    ) -> Alert:
        """Change the fields given; ``status="active"`` re-arms a triggered alert."""
        fields = {"repeat": repeat, "cooldown_s": cooldown_s, "note": note, "status": status}
        body: Json = {k: v for k, v in fields.items() if v is not None}
        if threshold is not None:
            body["threshold"] = _plain(threshold)
        return Alert.from_json(await self._json("PATCH", f"/alerts/{alert_id}", json=body))

    async def delete_alert(self, alert_id: str) -> None:
        await self._call("DELETE", f"/alerts/{alert_id}")

    # -- notifications -----------------------------------------------------------------

    async def notifications(
        self, *, unread: bool | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[Notification]:
        flag = None if unread is None else str(unread).lower()
        params = {"unread": flag, "limit": limit, "cursor": cursor}
        body = await self._json("GET", "/notifications", params=params)
        return Page.from_json(body, Notification.from_json)

    async def unread_count(self) -> int:
        return int((await self._json("GET", "/notifications/unread-count"))["count"])

    async def mark_read(self, notification_id: str) -> Notification:
        path = f"/notifications/{notification_id}/read"
        return Notification.from_json(await self._json("POST", path))

    async def mark_all_read(self) -> int:
        """How many were marked read."""
        return int((await self._json("POST", "/notifications/read-all"))["updated"])


def _plain(value: Decimal | str) -> str:
    """A decimal in the plain notation the API takes (``1E+2`` is ``100``)."""
    return value if isinstance(value, str) else f"{value:f}"


def _error(response: httpx.Response) -> CoinLinkError:
    """The exception of an error answer, from its envelope when it has one."""
    status = response.status_code
    try:
        body = response.json()["error"]
        code, message, details = body["code"], body["message"], body.get("details")
        trace_id = body.get("trace_id")
    except (ValueError, KeyError, TypeError):  # not CoinLink's envelope (a proxy's page)
        code, message, details = f"http_{status}", response.text[:200], None
        trace_id = None
    trace_id = trace_id or response.headers.get("x-request-id")
    retry_after = _retry_after(response.headers.get("retry-after"))
    return error_for(status)(status, code, message, trace_id, details, retry_after)


def _body(response: httpx.Response) -> Any:
    """The JSON of a success answer; one that is not JSON was not CoinLink's."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise UnexpectedResponse(
            response.status_code,
            "not_coinlink",
            f"{response.request.url} answered {kind}, not CoinLink's JSON (is the base URL"
            f" right?): {response.text[:200]}",
        ) from None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait: ``Retry-After`` is delta-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
