"""Accounts across real processes: two workers, two instances, one PostgreSQL, one Redis."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.accounts import PASSWORD, new_email
from tests.support.apps import ServerProcess, instance_env


@pytest.fixture(scope="module")
def instances(pg_url: str, redis_url: str) -> Iterator[list[ServerProcess]]:
    """Two instances of two workers each, as behind a load balancer."""
    env = instance_env(pg_url, redis_url, provider="simulator")
    servers = [ServerProcess(env, workers=2), ServerProcess(env, workers=2)]
    try:
        yield [server.wait_ready() for server in servers]
    finally:
        for server in servers:
            server.stop()


def fresh(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to any worker."""
    with httpx.Client(base_url=url, headers={"connection": "close"}, timeout=10) as client:
        return client.request(method, path, **kwargs)


def signed_up(url: str) -> dict[str, Any]:
    response = fresh(
        url, "POST", "/api/v2/auth/register", json={"email": new_email(), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    return dict(response.json()["tokens"])


def test_concurrent_refreshes_with_one_token_yield_exactly_one_success(
    instances: list[ServerProcess],
) -> None:
    tokens = signed_up(instances[0].base_url)
    urls = [server.base_url for server in instances] * 4

    def refresh(url: str) -> httpx.Response:
        body = {"refresh_token": tokens["refresh_token"]}
        return fresh(url, "POST", "/api/v2/auth/refresh", json=body)

    with ThreadPoolExecutor(len(urls)) as pool:
        responses = list(pool.map(refresh, urls))
    winners = [r for r in responses if r.status_code == 200]
    losers = [r for r in responses if r.status_code != 200]
    assert len(winners) == 1
    assert {r.status_code for r in losers} == {401}
    assert {r.json()["error"]["code"] for r in losers} <= {"token_reused", "invalid_token"}
    assert "token_reused" in {r.json()["error"]["code"] for r in losers}
    # Reuse revoked the session (RFC 9700): the winner's fresh token dies with it.
    new_access = winners[0].json()["tokens"]["access_token"]
    me = fresh(
        urls[0], "GET", "/api/v2/users/me", headers={"authorization": f"Bearer {new_access}"}
    )
    assert me.status_code == 401
    # ...and the security event was logged by the instance that saw the reuse.
    events = [
        line
        for server in instances
        for line in server.output().splitlines()
        if '"event":"refresh_token_reuse"' in line and '"logger":"coinlink.security"' in line
    ]
    assert events


def test_logout_on_one_instance_is_seen_by_every_worker_of_both(
    instances: list[ServerProcess],
) -> None:
    first, second = (server.base_url for server in instances)
    tokens = signed_up(first)
    auth = {"authorization": f"Bearer {tokens['access_token']}"}
    assert fresh(second, "GET", "/api/v2/users/me", headers=auth).status_code == 200

    assert fresh(second, "POST", "/api/v2/auth/logout", headers=auth).status_code == 204

    def me(url: str) -> int:
        return fresh(url, "GET", "/api/v2/users/me", headers=auth).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(me, [first, second] * 10))
    assert statuses == [401] * 20
    refreshed = fresh(
        first, "POST", "/api/v2/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


def test_with_a_reuse_grace_concurrent_refreshes_all_get_the_one_new_pair(
    pg_url: str, redis_url: str
) -> None:
    """Several tabs refresh with one token at once, across workers: each gets the same new
    pair, and the session lives on."""
    env = instance_env(pg_url, redis_url, refresh_reuse_grace_s="10")
    server = ServerProcess(env, workers=2).wait_ready()
    try:
        tokens = signed_up(server.base_url)

        def refresh(_: int) -> httpx.Response:
            body = {"refresh_token": tokens["refresh_token"]}
            return fresh(server.base_url, "POST", "/api/v2/auth/refresh", json=body)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(refresh, range(8)))
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
        pairs = {
            (r.json()["tokens"]["access_token"], r.json()["tokens"]["refresh_token"])
            for r in responses
        }
        assert len(pairs) == 1
        [(access, _)] = pairs
        headers = {"authorization": f"Bearer {access}"}
        assert fresh(server.base_url, "GET", "/api/v2/users/me", headers=headers).status_code == 200
    finally:
        server.stop()
    assert not server.unexpected_errors()
