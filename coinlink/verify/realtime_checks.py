"""The checks made over the WebSocket: ticker streams with recovery, and an alert's path
from a tick to the user's socket."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from coinlink.verify.runner import Deployment, Failed, Skipped, bearer, expect
from coinlink.verify.socket import Message, Socket

UPDATES_WANTED = 3
UPDATES_WITHIN_S = 5.0
TICK_EVERY_S = 2.0  # an alert reaches the evaluator within a second: tick again until it fires


def _reply(message: Message, op: str) -> Message:
    if message["type"] != "ack":
        raise Failed(f"{op} answered {message.get('code')}: {message.get('message')}")
    return message


def _frame_of(channel: str) -> Any:
    return lambda m: m["type"] in ("snapshot", "update") and m.get("channel") == channel


async def websocket(deployment: Deployment) -> str:
    """Subscribe to a ticker: a snapshot, then updates numbered without a gap for a few
    updates or a few seconds; reconnect with ``since`` the last seq: ``recovered``."""
    channel = f"ticker:{await deployment.symbol()}"
    url = str(deployment.http.base_url)
    async with Socket(url) as socket:
        _reply(await socket.request("subscribe", channels=[channel]), "subscribe")
        last = int((await socket.next(_frame_of(channel)))["seq"])
        updates = 0
        with_updates = asyncio.timeout(UPDATES_WITHIN_S)
        try:
            async with with_updates:
                while updates < UPDATES_WANTED:
                    frame = await socket.next(_frame_of(channel))
                    if frame["type"] != "update" or frame["seq"] != last + 1:
                        raise Failed(f"{channel}: {frame['type']} {frame['seq']} after seq {last}")
                    last, updates = frame["seq"], updates + 1
        except TimeoutError:
            if not with_updates.expired():
                raise
    async with Socket(url) as socket:
        ack = _reply(
            await socket.request("subscribe", channels=[channel], since={channel: last}),
            "subscribe with since",
        )
        if not all(entry.get("recovered") for entry in ack.get("channels", [])):
            raise Failed(f"resubscribing with since {last} did not recover: {ack}")
    return f"{channel}: snapshot, {updates} contiguous updates, since {last} recovered"


async def alert(deployment: Deployment) -> str:
    """An alert just above the price fires on an admin tick above it: the notification is
    on the user's socket and in the REST list."""
    admin = deployment.target.admin_token
    if admin is None:
        raise Skipped("needs --admin-token (and COINLINK_ADMIN_TICKS=true on the deployment)")
    headers = await deployment.sign_in()
    symbol = await deployment.symbol()
    http = deployment.http
    price = expect(await http.get(f"/api/v2/market/tickers/{symbol}"), 200).json()["price"]
    if price is None:
        raise Failed(f"{symbol} has no price yet")
    threshold = (Decimal(price) * Decimal("1.01")).quantize(Decimal("1e-8"))
    above = (Decimal(price) * Decimal("1.02")).quantize(Decimal("1e-8"))
    async with Socket(str(http.base_url)) as socket:
        _reply(await socket.request("auth", token=headers["authorization"][7:]), "auth")
        _reply(await socket.request("subscribe", channels=["notifications"]), "subscribe")
        await socket.next(_frame_of("notifications"))
        body = {"symbol": symbol, "condition": "above", "threshold": str(threshold)}
        created = expect(await http.post("/api/v2/alerts", headers=headers, json=body), 201)
        alert_id = created.json()["id"]

        def fired(m: Message) -> bool:
            return bool(m["type"] == "update" and m["data"]["data"].get("alert_id") == alert_id)

        pushed = None
        while pushed is None:
            await _admin_tick(deployment, admin, symbol, above)
            try:
                async with asyncio.timeout(TICK_EVERY_S):
                    pushed = await socket.next(fired)
            except TimeoutError:
                continue
    listed = expect(await http.get("/api/v2/notifications", headers=headers), 200).json()["items"]
    if not any(item["id"] == pushed["data"]["id"] for item in listed):
        raise Failed(f"notification {pushed['data']['id']} is on the socket, not in the REST list")
    return f"{symbol} above {threshold}: notified on the socket and over REST"


async def _admin_tick(deployment: Deployment, token: str, symbol: str, price: Decimal) -> None:
    response = await deployment.http.post(
        "/api/v2/admin/ticks",
        headers=bearer(token),
        json={"symbol": symbol, "price": str(price)},
    )
    if response.status_code == 404:
        raise Failed("POST /api/v2/admin/ticks -> 404: is COINLINK_ADMIN_TICKS=true?")
    if response.status_code != 503:  # no ingest leader yet: the next round tries again
        expect(response, 202)
