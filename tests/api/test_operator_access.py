"""What only operators may read in production: ``/metrics``, the ingest leader in
``/readyz``; and ``/docs``, off in production unless asked for."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sanic_testing.reusable import ReusableClient

from tests.support.apps import build_app, serve_until
from tests.support.services import free_port

TOKEN = secrets.token_hex(32)
PRODUCTION = {"env": "production", "bcrypt_rounds": "12"}  # no password is hashed here


# One app at a time (Tortoise has one global context): each test gets its own.
@pytest.fixture
def guarded(pg_url: str, redis_url: str) -> Iterator[ReusableClient]:
    app = build_app(pg_url, redis_url, **PRODUCTION, metrics_token=TOKEN)
    with ReusableClient(app, port=free_port()) as client:
        yield client


@pytest.fixture
def unset(pg_url: str, redis_url: str) -> Iterator[ReusableClient]:
    app = build_app(pg_url, redis_url, **PRODUCTION, docs_enabled=True)
    with ReusableClient(app, port=free_port()) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_metrics_need_the_token(guarded: ReusableClient) -> None:
    for headers in ({}, bearer("x" * 64), {"authorization": f"Basic {TOKEN}"}):
        _, refused = guarded.get("/metrics", headers=headers)
        assert refused.status == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json["error"]["code"] == "unauthorized"
        assert "COINLINK_METRICS_TOKEN" in refused.json["error"]["message"]
        assert "http_requests_total" not in refused.text
    _, served = guarded.get("/metrics", headers=bearer(TOKEN))
    assert served.status == 200
    assert "http_requests_total" in served.text


def test_a_token_of_undecodable_bytes_is_refused_not_a_500(guarded: ReusableClient) -> None:
    # Sanic decodes header bytes that are not UTF-8 to surrogates; the check must not choke.
    headers = {"authorization": b"Bearer \xff\xfe"}
    _, metrics = guarded.get("/metrics", headers=headers)
    assert metrics.status == 401
    assert "COINLINK_METRICS_TOKEN" in metrics.json["error"]["message"]
    _, ready = guarded.get("/readyz", headers=headers)
    assert ready.status == 200
    assert "leader" not in ready.json["checks"]["ingest"]


def test_readiness_names_the_leader_only_to_operators(guarded: ReusableClient) -> None:
    def leader() -> str | None:
        _, operator = guarded.get("/readyz", headers=bearer(TOKEN))
        return operator.json["checks"]["ingest"].get("leader")

    assert serve_until(guarded, leader, 30, "the simulator's leader")
    _, anyone = guarded.get("/readyz")
    assert anyone.json["checks"]["ingest"]["status"] == "ok"
    assert "leader" not in anyone.json["checks"]["ingest"]


def test_without_a_token_production_metrics_are_off(unset: ReusableClient) -> None:
    for headers in ({}, bearer(TOKEN)):
        _, response = unset.get("/metrics", headers=headers)
        assert response.status == 404
        assert "COINLINK_METRICS_TOKEN" in response.json["error"]["message"]


def test_docs_are_off_in_production_by_default(guarded: ReusableClient) -> None:
    assert guarded.get("/docs/openapi.json")[1].status == 404
    assert guarded.get("/docs/asyncapi.json")[1].status == 404


def test_docs_are_served_in_production_when_enabled(unset: ReusableClient) -> None:
    assert unset.get("/docs/openapi.json")[1].status == 200
    assert unset.get("/docs/asyncapi.json")[1].status == 200
