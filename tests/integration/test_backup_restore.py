"""A backup restores: what a running server wrote to PostgreSQL, dumped with ``pg_dump -Fc``
and restored with ``pg_restore`` into a new database, serves a new server as before.

The new server also gets an empty Redis (a key prefix of its own), as after losing Redis
with the database, and a different JWT secret, as after losing the deployment's secrets
too: passwords, sessions (refresh tokens), alerts with their state, notifications and
candles all come back; only access tokens signed with the old secret are refused. The steps
are the runbook's (docs/operations.md, "Backups and recovery").
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import PASSWORD, admin_headers, bearer, new_email
from tests.support.apps import (
    ROOT,
    ServerProcess,
    alerts_loaded,
    instance_env,
)
from tests.support.services import fresh_database, installed_binary, wait_for

pytestmark = pytest.mark.timeout(240)
MINUTE = 60_000
# Not the suite's secret: the restored database is served by a deployment whose secret changed.
NEW_SECRET = "Zq4Lw8Nc2Vx6Bm0Pk7Rt3Yh9Gf5Dj1Sa-restored-only-Ue4Io8Pl2Kj6Hg0Fd"


def env_for(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return instance_env(
        database_url,
        redis_url,
        admin_ticks="true",
        symbols="BTC-USD,ETH-USD",
        # Candles are made by ticks of minutes past: they must not be dropped as stale.
        ingest_max_tick_age_s="3600",
        **extra,
    )


def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, server.base_url + path, timeout=10, **kwargs)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def tick(server: ServerProcess, admin: dict[str, str], symbol: str, price: str, **ts: int) -> None:
    """Inject a tick, retried while the API answers 503: no ingest leader yet."""
    body = {"symbol": symbol, "price": price, "volume": "1", **ts}

    def accepted() -> bool:
        response = call(server, "POST", "/api/v2/admin/ticks", headers=admin, json=body)
        if response.status_code == 503:
            return False
        ok(response, 202)
        return True

    wait_for(accepted, 30, "an ingest leader")


def notifications(server: ServerProcess, headers: dict[str, str]) -> list[dict[str, Any]]:
    return list(ok(call(server, "GET", "/api/v2/notifications", headers=headers))["items"])


def alerts(server: ServerProcess, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    items = ok(call(server, "GET", "/api/v2/alerts", headers=headers))["items"]
    return {a["id"]: a for a in items}


def candles(server: ServerProcess, start: int, end: int) -> list[dict[str, Any]]:
    query = f"interval=1m&start={start}&end={end}"
    return list(ok(call(server, "GET", f"/api/v2/market/candles/ETH-USD?{query}"))["items"])


def signed_in(server: ServerProcess, path: str, body: dict[str, str], status: int = 200) -> Any:
    """The tokens of a registration, login or refresh."""
    return ok(call(server, "POST", f"/api/v2/auth/{path}", json=body), status)["tokens"]


def run(*argv: str, env: dict[str, str] | None = None) -> float:
    """Run a command to success; the seconds it took."""
    began = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return time.monotonic() - began


def test_a_dump_restored_into_a_new_database_serves_everything_as_before(
    fresh_pg_url: str, pg_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(env_for(fresh_pg_url, redis_url)).wait_ready()
    try:
        admin = admin_headers(server, fresh_pg_url)
        credentials = {"email": new_email(), "password": PASSWORD}
        signed_in(server, "register", credentials, 201)
        tokens = signed_in(server, "login", credentials)  # a second session: the one kept
        user = bearer(tokens)

        # Three closed 1-minute candles (the fourth tick opens the candle that closes them).
        start = (time.time_ns() // 1_000_000 // MINUTE - 5) * MINUTE
        for n, price in enumerate(["2000", "2010.5", "1990.25", "2001"]):
            tick(server, admin, "ETH-USD", price, ts=start + n * MINUTE + 5)
        end = start + 2 * MINUTE
        wait_for(lambda: len(candles(server, start, end)) == 3, 30, "three stored candles")

        def create(condition: str, threshold: str) -> str:
            body = {"symbol": "BTC-USD", "condition": condition, "threshold": threshold}
            return str(
                ok(call(server, "POST", "/api/v2/alerts", headers=user, json=body), 201)["id"]
            )

        fired = create("above", "105")
        second = create("above", "110")
        marker = create("below", "95")  # fired last, after the restore: nothing comes after it
        wait_for(lambda: alerts_loaded([server]) == 3, 30, "the alerts in the engine")
        tick(server, admin, "BTC-USD", "100")
        tick(server, admin, "BTC-USD", "105")
        wait_for(lambda: notifications(server, user), 30, "the first firing")

        before: dict[str, Any] = {
            "alerts": alerts(server, user),
            "notifications": notifications(server, user),
            "candles": candles(server, start, end),
        }
        assert before["alerts"][fired]["status"] == "triggered"
        assert [n["data"]["alert_id"] for n in before["notifications"]] == [fired]

        # Online, as the runbook takes it: pg_dump reads one consistent snapshot.
        dump = tmp_path / "coinlink.dump"
        dump_s = run(installed_binary("pg_dump"), "--format=custom", f"--file={dump}", fresh_pg_url)
    finally:
        server.stop()

    with fresh_database(pg_server_url) as restored:
        restore_s = run(
            installed_binary("pg_restore"), "--no-owner", "--exit-on-error",
            f"--dbname={restored}", str(dump),
        )  # fmt: skip
        print(
            f"\npg_dump {dump_s:.2f} s ({dump.stat().st_size} bytes), pg_restore {restore_s:.2f} s"
        )
        # A fresh Redis prefix and another secret; the runbook's `coinlink migrate` first.
        env = env_for(restored, redis_url, jwt_secret=NEW_SECRET, auto_migrate="false")
        run(sys.executable, "-m", "coinlink", "migrate", env=env)
        server = ServerProcess(env).wait_ready()
        try:
            # Access tokens were signed with the old secret; the refresh token is an opaque
            # value whose hash is in the database: it still renews the session.
            assert call(server, "GET", "/api/v2/users/me", headers=user).status_code == 401
            renewed = signed_in(server, "refresh", {"refresh_token": tokens["refresh_token"]})
            user = bearer(renewed)
            me = ok(call(server, "GET", "/api/v2/users/me", headers=user))
            assert me["email"] == credentials["email"]
            signed_in(server, "login", credentials)  # the same password

            assert alerts(server, user) == before["alerts"]
            assert notifications(server, user) == before["notifications"]
            assert candles(server, start, end) == before["candles"]

            # Only the alerts still active are armed; the triggered one stays triggered.
            wait_for(lambda: alerts_loaded([server]) == 2, 30, "the active alerts in the engine")
            admin = admin_headers(server, restored)  # the old admin token is refused too
            for price in ["108", "111", "112", "94"]:
                tick(server, admin, "BTC-USD", price)
            wait_for(lambda: len(notifications(server, user)) >= 3, 30, "the marker's firing")
            after = notifications(server, user)
            assert [n["data"]["alert_id"] for n in after] == [marker, second, fired]
            assert after[2] == before["notifications"][0]
            now = alerts(server, user)
            assert [now[a]["trigger_count"] for a in (fired, second, marker)] == [1, 1, 1]
        finally:
            server.stop()
