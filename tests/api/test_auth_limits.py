"""Brute-force protection on the auth routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sanic_testing.reusable import ReusableClient

from tests.support.accounts import PASSWORD, new_email, register
from tests.support.apps import build_app
from tests.support.services import RedisServer, free_port


def limited_client(pg_url: str, redis_url: str | None, **limits: str) -> ReusableClient:
    return ReusableClient(build_app(pg_url, redis_url, **limits), port=free_port())


def attempt(
    client: ReusableClient, email: str, password: str = "wrong password!", **headers: str
) -> Any:
    _, response = client.post(
        "/api/v2/auth/login", json={"email": email, "password": password}, headers=headers
    )
    return response


def assert_limited(response: Any) -> None:
    assert response.status == 429, response.text
    assert response.json["error"]["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"


@pytest.fixture
def client(pg_url: str, redis_url: str) -> Iterator[ReusableClient]:
    with limited_client(pg_url, redis_url, rate_limit_login_account="3/60") as client:
        yield client


def test_failed_logins_on_one_account_get_429_and_others_are_unaffected(
    client: ReusableClient,
) -> None:
    victim, bystander = register(client), register(client)
    for _ in range(3):
        assert attempt(client, victim["email"]).status == 401
    assert_limited(attempt(client, victim["email"]))
    # Even the right password waits: the attacker cannot tell when they guessed it.
    assert_limited(attempt(client, victim["email"], PASSWORD))
    assert attempt(client, bystander["email"], PASSWORD).status == 200
    # The same account spelt differently is the same account.
    assert_limited(attempt(client, victim["email"].upper()))


def test_successful_responses_carry_the_budget(client: ReusableClient) -> None:
    account = register(client)
    response = attempt(client, account["email"], PASSWORD)
    assert response.status == 200
    assert response.headers["ratelimit-limit"] == "3"
    assert response.headers["ratelimit-remaining"] == "2"
    assert int(response.headers["ratelimit-reset"]) >= 1


def test_spoofed_forwarded_for_from_an_untrusted_peer_shares_one_budget(
    pg_url: str, redis_url: str
) -> None:
    with limited_client(pg_url, redis_url, rate_limit_login_ip="3/60") as client:
        for n in range(3):
            assert (
                attempt(client, new_email(), **{"x-forwarded-for": f"203.0.113.{n}"}).status == 401
            )
        assert_limited(attempt(client, new_email(), **{"x-forwarded-for": "198.51.100.7"}))


def test_registrations_per_address_are_limited(pg_url: str, redis_url: str) -> None:
    with limited_client(pg_url, redis_url, rate_limit_register="2/3600") as client:
        register(client)
        register(client)
        _, response = client.post(
            "/api/v2/auth/register", json={"email": new_email(), "password": PASSWORD}
        )
        assert_limited(response)


def test_login_limits_reads_and_logout_hold_while_redis_is_down(pg_url: str) -> None:
    redis = RedisServer().start()
    try:
        with limited_client(
            pg_url, redis.url, rate_limit_login_account="3/60", redis_timeout_s=0.5
        ) as client:
            account = register(client)
            redis.stop()
            statuses = [attempt(client, account["email"]).status for _ in range(4)]
            assert statuses == [401, 401, 401, 429]
            # Reads are still served: revocations are checked in the database meanwhile.
            headers = {"authorization": f"Bearer {account['tokens']['access_token']}"}
            assert client.get("/api/v2/users/me", headers=headers)[1].status == 200
            # Logout still works, and the token is refused from then on.
            assert client.post("/api/v2/auth/logout", headers=headers)[1].status == 204
            assert client.get("/api/v2/users/me", headers=headers)[1].status == 401
    finally:
        redis.stop()
