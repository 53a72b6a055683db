"""An unknown email costs a login the same bcrypt work as a wrong password."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest
from sanic_testing.reusable import ReusableClient

from tests.support.accounts import new_email, register
from tests.support.apps import build_app
from tests.support.services import free_port

ROUNDS = 10  # ~60 ms per check here: large against the noise of one request


@pytest.fixture(scope="module")
def client(pg_url: str, redis_url: str) -> Iterator[ReusableClient]:
    app = build_app(pg_url, redis_url, bcrypt_rounds=ROUNDS)
    with ReusableClient(app, port=free_port()) as client:
        yield client


def timed_login(client: ReusableClient, email: str) -> float:
    started = time.perf_counter()
    _, response = client.post(
        "/api/v2/auth/login", json={"email": email, "password": "not the password"}
    )
    assert response.status == 401
    return time.perf_counter() - started


def test_unknown_email_takes_as_long_as_a_wrong_password(client: ReusableClient) -> None:
    known = register(client)["email"]
    unknown, wrong = [], []
    for _ in range(7):  # interleaved, so machine noise hits both alike
        unknown.append(timed_login(client, new_email()))
        wrong.append(timed_login(client, known))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    # Without the dummy check an unknown email answers in well under a tenth of the time;
    # two checks would take twice as long. The rest of the margin is for machine noise.
    assert 0.5 < ratio < 1.8, (ratio, unknown, wrong)
