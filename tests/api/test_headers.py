"""Request ids, security headers and CORS on successful and failed responses alike."""

from __future__ import annotations

import pytest
from sanic_testing.reusable import ReusableClient

from tests.support.accounts import bearer, register
from tests.support.apps import TEST_ORIGIN

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
PATHS = ["/health", "/no/such/route", "/metrics", "/api/v2/users/me"]  # 200, 404, 200, 401


@pytest.mark.parametrize("path", PATHS)
def test_security_headers_on_every_response(client: ReusableClient, path: str) -> None:
    _, response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "server" not in response.headers
    assert "strict-transport-security" not in response.headers  # production only


@pytest.mark.parametrize("path", PATHS)
def test_generated_request_id_is_unique(client: ReusableClient, path: str) -> None:
    ids = {client.get(path)[1].headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("path", PATHS)
def test_sane_client_request_id_is_echoed(client: ReusableClient, path: str) -> None:
    _, response = client.get(path, headers={"x-request-id": "client-id_1.2"})
    assert response.headers["x-request-id"] == "client-id_1.2"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "<script>"])
def test_insane_client_request_id_is_replaced(client: ReusableClient, bad: str) -> None:
    _, response = client.get("/health", headers={"x-request-id": bad})
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32


def test_authenticated_responses_are_not_stored(client: ReusableClient) -> None:
    tokens = register(client)["tokens"]
    _, response = client.get("/api/v2/users/me", headers=bearer(tokens))
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"


def test_cors_allowed_origin_gets_exactly_itself_and_vary(client: ReusableClient) -> None:
    _, response = client.get("/health", headers={"origin": TEST_ORIGIN})
    assert response.headers["access-control-allow-origin"] == TEST_ORIGIN
    assert "origin" in response.headers["vary"].lower()


@pytest.mark.parametrize("path", PATHS)
def test_no_cors_headers_without_origin_but_vary(client: ReusableClient, path: str) -> None:
    # A same-origin or non-browser request: nothing to allow, yet a cache must know the
    # response would differ for a cross-origin one.
    _, response = client.get(path)
    assert not [name for name in response.headers if name.startswith("access-control-")]
    assert response.headers["vary"].lower() == "origin"


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "null", TEST_ORIGIN + ".evil.example", TEST_ORIGIN + ":8443"]
)
def test_cors_foreign_origin_gets_no_allow_origin(client: ReusableClient, origin: str) -> None:
    _, response = client.get("/health", headers={"origin": origin})
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"].lower() == "origin"


def test_cors_preflight_for_allowed_origin(client: ReusableClient) -> None:
    _, response = client.options(
        "/health",
        headers={
            "origin": TEST_ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == TEST_ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_cors_preflight_for_foreign_origin_is_not_allowed(client: ReusableClient) -> None:
    _, response = client.options(
        "/health",
        headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers
