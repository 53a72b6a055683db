"""The REST clients against a real server: round trips, errors, Retry-After, refresh."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from coinlink_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    NotFound,
    RateLimited,
    ServerError,
    Tokens,
    UnexpectedResponse,
    ValidationError,
)
from tests.client.conftest import expiring, signed_up
from tests.support.accounts import PASSWORD, make_admin, new_email
from tests.support.apps import ServerProcess, ingest_heartbeat, metric
from tests.support.services import eventually, until
from tests.support.webhook_receiver import Received, receiver

pytestmark = pytest.mark.timeout(60)


async def test_a_user_signs_in_reads_prices_and_manages_alerts(
    server: ServerProcess, client_pg_url: str
) -> None:
    email = new_email()
    async with AsyncClient(server.base_url) as client:
        user = await client.register(email, PASSWORD, "Ada")
        assert (await client.me()).id == user.id
        assert user.display_name == "Ada"

        # A price set through the admin tick API reaches the ticker, as a Decimal.
        await asyncio.to_thread(make_admin, client_pg_url, email)
        await eventually(lambda: ingest_heartbeat(server), 30, "the ingest leader")
        assert client.tokens is not None
        tick = await httpx.AsyncClient(base_url=server.base_url).post(
            "/api/v2/admin/ticks",
            json={"symbol": "ETH-USD", "price": "3012.125", "volume": "2"},
            headers={"authorization": f"Bearer {client.tokens.access_token}"},
        )
        assert tick.status_code == 202, tick.text

        async def priced() -> bool:
            return (await client.ticker("eth-usd")).price == Decimal("3012.125")

        await until(priced, 30, "the tick in the ticker")
        [eth] = await client.tickers(["ETH-USD"])
        assert eth.symbol == "ETH-USD" and eth.seq is not None and eth.seq >= 1
        candles = await client.candles("ETH-USD", "1m")
        assert candles[-1].close == Decimal("3012.125") and not candles[-1].closed

        alert = await client.create_alert("BTC-USD", "above", Decimal("70000.50"), note="moon")
        assert (alert.threshold, alert.status, alert.note) == (Decimal("70000.5"), "active", "moon")
        move = await client.create_alert("ETH-USD", "pct_change", "2.5", window_s=300, repeat=True)
        assert move.window_s == 300 and move.repeat
        assert [a.id for a in (await client.alerts()).items] == [move.id, alert.id]
        changed = await client.update_alert(alert.id, threshold="71000", status="disabled")
        assert (changed.threshold, changed.status) == (Decimal("71000"), "disabled")
        assert (await client.alert(alert.id)).status == "disabled"
        assert [a.id for a in (await client.alerts(status="disabled")).items] == [alert.id]
        await client.delete_alert(alert.id)
        with pytest.raises(NotFound):
            await client.alert(alert.id)

        page = await client.notifications(unread=True, limit=10)
        assert page.items == [] and page.next_cursor is None
        assert await client.unread_count() == 0
        assert await client.mark_all_read() == 0

        # Signing in again is a session of its own; logging out ends this one only.
        async with AsyncClient(server.base_url) as other:
            assert (await other.login(email, PASSWORD)).id == user.id
            tokens = client.tokens
            await client.logout()
            assert (await other.me()).id == user.id
        async with AsyncClient(server.base_url, tokens=tokens) as revoked:
            with pytest.raises(AuthenticationError) as ended:
                await revoked.me()
        assert ended.value.code == "invalid_token"


async def test_errors_carry_the_envelope_and_a_trace_id_the_server_logged(
    server: ServerProcess,
) -> None:
    client = await signed_up(server)
    async with client:
        with pytest.raises(NotFound) as unknown:
            await client.ticker("DOGE-EUR")
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_symbol")
        assert unknown.value.details == {"symbol": "DOGE-EUR"}
        assert unknown.value.trace_id

        with pytest.raises(ValidationError) as invalid:
            await client.create_alert("BTC-USD", "above", "0")
        assert invalid.value.code == "validation_error"
        assert "threshold" in invalid.value.details["fields"]
        # The id quoted in a report finds the request in the server's log.
        await eventually(
            lambda: invalid.value.trace_id in server.output(), 10, "the request's log line"
        )

        user = await client.me()
        with pytest.raises(Conflict) as taken:
            await AsyncClient(server.base_url).register(user.email, PASSWORD)
        assert taken.value.code == "email_taken"
        with pytest.raises(AuthenticationError) as wrong:
            await AsyncClient(server.base_url).login(user.email, "not the password")
        assert wrong.value.code == "invalid_credentials"


async def test_answers_that_are_not_coinlinks_raise_by_their_status_and_say_so() -> None:
    """A proxy or a wrong base URL answers with its own pages: the client still raises
    the status's exception, with the page's start as the message, and honours a
    ``Retry-After`` given as an HTTP date."""
    pages = {
        "/api/v2/market/tickers/BTC-USD": [
            (502, "text/html", b"<html><h1>502 Bad Gateway</h1></html>", "")
        ],
        "/api/v2/market/tickers/ETH-USD": [(404, "text/plain", b"Not Found", "X-Request-Id: r1")],
        # A date already past: retry at once.
        "/api/v2/market/tickers": [
            (503, "text/html", b"<p>busy</p>", "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT"),
            (200, "application/json", b'{"items": []}', ""),
        ],
        "/api/v2/market/tickers/SOL-USD": [
            (200, "text/html", b"<html>Sign in to Wi-Fi</html>", "")
        ],
    }

    async def respond(received: Received, writer: asyncio.StreamWriter) -> None:
        status, kind, body, extra = pages[received.target.partition("?")[0]].pop(0)
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        writer.write((head + (f"{extra}\r\n" if extra else "") + "\r\n").encode() + body)
        await writer.drain()

    async with receiver(respond) as proxy, AsyncClient(f"http://127.0.0.1:{proxy.port}") as client:
        with pytest.raises(ServerError) as gateway:
            await client.ticker("BTC-USD")
        assert (gateway.value.status, gateway.value.code) == (502, "http_502")
        assert "502 Bad Gateway" in gateway.value.message
        with pytest.raises(NotFound) as missing:
            await client.ticker("ETH-USD")
        assert (missing.value.code, missing.value.trace_id) == ("http_404", "r1")
        assert await client.tickers() == []  # after the 503, retried
        with pytest.raises(UnexpectedResponse) as portal:
            await client.ticker("SOL-USD")
        assert portal.value.code == "not_coinlink"
        assert "text/html" in portal.value.message and "Wi-Fi" in portal.value.message
    assert not any(pages.values())  # every answer was asked for, none twice


async def test_retry_after_is_honoured_for_reads_and_reported_for_writes(
    server: ServerProcess,
) -> None:
    client = await signed_up(server)
    async with client:
        # Over three times the user's burst of writes: a write is never repeated, so the
        # refused ones raise, saying how long to wait.
        results = await asyncio.gather(
            *(client.mark_all_read() for _ in range(100)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert refused and all(r == 0 or isinstance(r, RateLimited) for r in results)
        assert all(e.code == "rate_limited" and e.retry_after == 1 for e in refused)

        # Reads wait as told and then succeed, every one of them.
        rejected_before = metric(server, 'ratelimit_rejections_total{policy="user"}')
        started = time.monotonic()
        users = await asyncio.gather(*(client.me() for _ in range(30)))
        assert {u.id for u in users} == {users[0].id}
        assert time.monotonic() - started >= 1  # the Retry-After
        assert metric(server, 'ratelimit_rejections_total{policy="user"}') > rejected_before


@pytest.mark.parametrize("client_knows", [True, False], ids=["expiry-known", "refused-401"])
async def test_a_burst_of_callers_shares_one_refresh(
    server: ServerProcess, client_knows: bool
) -> None:
    """Refresh tokens are single use: had two callers refreshed with the same one, the
    server would have revoked the session (and every call after it would fail)."""
    first = await signed_up(server)
    assert first.tokens is not None
    stale = expiring(first.tokens, -5)  # expired 5 s ago
    if not client_knows:  # the client only learns it from the server's 401s
        stale = Tokens(stale.access_token, stale.refresh_token, time.time() + 600)
    async with AsyncClient(server.base_url, tokens=stale) as client:
        users = await asyncio.gather(*(client.me() for _ in range(16)))
        assert {u.id for u in users} == {users[0].id}
        assert client.tokens is not None
        assert client.tokens.refresh_token != stale.refresh_token
        assert (await client.me()).id == users[0].id  # the session lives on
        # Explicit refreshes rotate the pair each time.
        before = client.tokens
        after = await client.refresh()
        assert after.refresh_token != before.refresh_token
        assert (await client.me()).id == users[0].id
    await first.aclose()


def test_the_sync_client_works_from_many_threads(server: ServerProcess) -> None:
    with Client(server.base_url) as client:
        user = client.register(new_email(), PASSWORD)
        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(lambda _: client.me().id, range(8)))
        assert ids == {user.id}
        assert {t.symbol for t in client.tickers()} >= {"BTC-USD", "ETH-USD"}
        alert = client.create_alert("BTC-USD", "below", "10000.5")
        assert client.alerts().items == [alert]
        assert client.update_alert(alert.id, note="dip").note == "dip"
        client.delete_alert(alert.id)
        with pytest.raises(NotFound):
            client.alert(alert.id)
        assert client.notifications().items == []
        refreshed = client.refresh()
        assert client.tokens == refreshed
        client.logout()
        assert client.tokens is None
