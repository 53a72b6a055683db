"""Load-test a CoinLink deployment with Locust: REST users and WebSocket users.

    .venv/bin/locust -f bench/locustfile.py --headless --host https://coinlink.example.com \\
        --users 200 --spawn-rate 20 --run-time 5m

``RestUser`` registers an account of its own once (``loadtest-<random>@example.com``), then
reads the tickers, one ticker, 500 candles, its profile, its notifications, and creates,
reads, changes and deletes price alerts. ``WebSocketUser`` connects to ``/ws``, subscribes to
the ticker channels of ``LOADTEST_SYMBOLS`` (default BTC-USD,ETH-USD) and reports each
update as a request named ``ticker update``: its response time is the update's age (receive
time minus the ticker's ``ts``, so it includes the market data provider's own delay and any
clock difference between the machines), and a gap in a channel's ``seq`` is a failure.

Every user signs up and connects from the machine Locust runs on: a deployment's rate limits
(``COINLINK_RATE_LIMIT_*``, ``COINLINK_WS_MAX_CONNECTIONS_PER_IP``) apply to all of them as
one client, so raise them for the test, or expect 429s to show as failures. The accounts it
creates are left behind; they are named ``loadtest-...@example.com``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

import websocket
from locust import FastHttpUser, User, between, task

SYMBOLS = os.environ.get("LOADTEST_SYMBOLS", "BTC-USD,ETH-USD").split(",")


class RestUser(FastHttpUser):
    """One account using the REST API as a dashboard would."""

    wait_time = between(0.5, 2)
    weight = 3

    def on_start(self) -> None:
        email = f"loadtest-{secrets.token_hex(6)}@example.com"
        password = secrets.token_urlsafe(16)
        with self.client.post(
            "/api/v2/auth/register",
            json={"email": email, "password": password},
            name="register",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"register answered {response.status_code}: {response.text}")
                raise RuntimeError("could not register")  # locust stops this user
            token = response.json()["tokens"]["access_token"]
        self.auth = {"authorization": f"Bearer {token}"}

    @task(4)
    def tickers(self) -> None:
        self.client.get("/api/v2/market/tickers")

    @task(8)
    def ticker(self) -> None:
        symbol = SYMBOLS[0]
        self.client.get(f"/api/v2/market/tickers/{symbol}", name="/api/v2/market/tickers/[symbol]")

    @task(2)
    def candles(self) -> None:
        self.client.get(
            f"/api/v2/market/candles/{SYMBOLS[0]}?interval=1m&limit=500",
            name="/api/v2/market/candles/[symbol]",
        )

    @task(4)
    def me(self) -> None:
        self.client.get("/api/v2/users/me", headers=self.auth)

    @task(2)
    def notifications(self) -> None:
        self.client.get("/api/v2/notifications", headers=self.auth)

    @task(2)
    def alerts(self) -> None:
        """Create, list, read, change and delete an alert that never fires."""
        alert = {"symbol": SYMBOLS[0], "condition": "above", "threshold": "1000000000"}
        created = self.client.post("/api/v2/alerts", json=alert, headers=self.auth)
        if created.status_code != 201:
            return  # counted as a failure by Locust already
        path = f"/api/v2/alerts/{created.json()['id']}"
        name = "/api/v2/alerts/[id]"
        self.client.get("/api/v2/alerts", headers=self.auth)
        self.client.get(path, headers=self.auth, name=name)
        self.client.patch(path, json={"threshold": "2000000000"}, headers=self.auth, name=name)
        self.client.delete(path, headers=self.auth, name=name)


class SeqGap(Exception):
    """Updates of a channel were skipped: the client missed some."""


class WebSocketUser(User):
    """One live ticker view: a socket subscribed to the ticker channels."""

    weight = 1

    def on_start(self) -> None:
        url = self.host.replace("http", "ws", 1).rstrip("/") + "/ws"
        began = time.perf_counter()
        try:
            # No Origin header, as any non-browser client: CoinLink lets only the origins of
            # COINLINK_CORS_ORIGINS open a socket from a browser.
            self.socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        except Exception as exc:
            self.report("connect", began, 0, exc)
            raise
        channels = [f"ticker:{symbol}" for symbol in SYMBOLS]
        self.socket.send(json.dumps({"op": "subscribe", "id": 1, "channels": channels}))
        self.report("connect", began, 0, None)
        self.last_seq: dict[str, int] = {}

    def on_stop(self) -> None:
        self.socket.close()

    def report(self, name: str, began: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - began) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def receive(self) -> None:
        raw = self.socket.recv()
        message: dict[str, Any] = json.loads(raw)
        kind, channel = message.get("type"), message.get("channel", "")
        if kind == "snapshot":
            self.last_seq[channel] = int(message.get("seq") or 0)
        elif kind == "update":
            self.update(message, channel, len(raw))
        elif kind == "error":
            self.environment.events.request.fire(
                request_type="WS",
                name="error",
                response_time=0,
                response_length=len(raw),
                exception=RuntimeError(f"{message.get('code')}: {message.get('message')}"),
                context={},
            )

    def update(self, message: dict[str, Any], channel: str, length: int) -> None:
        seq, last = int(message["seq"]), self.last_seq.get(channel, 0)
        self.last_seq[channel] = max(seq, last)
        error = None
        if last and seq != last + 1:
            error = SeqGap(f"{channel}: seq {seq} after {last}")
        age_ms = max(0.0, time.time() * 1000 - float(message["data"]["ts"]))
        self.environment.events.request.fire(
            request_type="WS",
            name="ticker update",
            response_time=age_ms,
            response_length=length,
            exception=error,
            context={},
        )
