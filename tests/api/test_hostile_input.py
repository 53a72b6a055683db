"""Inputs that used to reach a 500: deep JSON, raw header bytes stored with a session,
tampered pagination cursors, a 405 on a route with a path parameter, a request-target that
is not a URL."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from sanic_testing.reusable import ReusableClient

from coinlink.http.request import MAX_DEPTH
from tests.support.accounts import PASSWORD, bearer, new_email, register
from tests.support.raw_http import exchange


def nested(depth: int) -> bytes:
    """A login body whose ``email`` is ``depth`` levels of lists around a string."""
    return b'{"email": ' + b"[" * depth + b'"a"' + b"]" * depth + b', "password": "x"}'


@pytest.mark.parametrize("depth", [MAX_DEPTH, 1000])
def test_a_body_nested_too_deep_is_400_naming_the_limit(client: ReusableClient, depth: int) -> None:
    _, response = client.post("/api/v2/auth/login", content=nested(depth))
    assert response.status == 400
    assert response.json["error"]["details"] == {"max_depth": MAX_DEPTH}
    assert f"deeper than {MAX_DEPTH} levels" in response.json["error"]["message"]


def test_a_body_within_the_depth_is_validated_as_usual(client: ReusableClient) -> None:
    _, response = client.post("/api/v2/auth/login", content=nested(MAX_DEPTH - 2))
    assert response.status == 422
    assert "email" in response.json["error"]["details"]["fields"]


def raw_register(
    client: ReusableClient, email: str, user_agent: bytes
) -> tuple[int, dict[str, Any]]:
    """Register over a raw socket (HTTP clients refuse to send such header bytes)."""
    body = orjson.dumps({"email": email, "password": PASSWORD})
    head = (
        b"POST /api/v2/auth/register HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\nUser-Agent: " + user_agent + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    status, _, answer = client._run(exchange(client.port, head + body))
    return status, answer


def test_user_agent_bytes_the_database_refuses_are_stored_replaced(
    client: ReusableClient,
) -> None:
    status, body = raw_register(client, new_email(), b"Agent/1.0 \xff\xfe\x01\x00 (x)")
    assert status == 201, body
    _, response = client.get("/api/v2/auth/sessions", headers=bearer(body["tokens"]))
    assert response.status == 200
    [session] = response.json["items"]
    assert session["user_agent"] == "Agent/1.0 \ufffd\ufffd\ufffd\ufffd (x)"


def cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/api/v2/alerts", [2**63]),
        ("/api/v2/alerts", [-(2**63) - 1]),
        ("/api/v2/alerts", [True]),
        ("/api/v2/alerts", ["7"]),
        ("/api/v2/alerts", [[1]]),
        ("/api/v2/notifications/deliveries", [2**64]),
        ("/api/v2/notifications/deliveries", [1.5]),
        ("/api/v2/notifications", ["2026-12-06T00:00:00+00:00", 7]),
        ("/api/v2/notifications", [{"a": 1}, "x"]),
        ("/api/v2/notifications", ["2026-12-06T00:00:00+00:00", "x" * 65]),
        ("/api/v2/notifications", [1]),
    ],
)
def test_a_tampered_cursor_is_422_naming_cursor(
    client: ReusableClient, path: str, key: list[Any]
) -> None:
    headers = bearer(register(client)["tokens"])
    _, response = client.get(path, params={"cursor": cursor(*key)}, headers=headers)
    assert response.status == 422, response.text
    assert list(response.json["error"]["details"]["fields"]) == ["cursor"]


def test_a_405_on_a_route_with_a_path_parameter_names_the_allowed_methods(
    client: ReusableClient,
) -> None:
    _, response = client.put("/api/v2/alerts/some-id")
    assert response.status == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed
    assert "PUT" not in allowed and "POST" not in allowed


def test_a_get_with_a_body_is_answered_and_logs_no_error(client: ReusableClient) -> None:
    # Sanic leaves a GET's body unread and logged "body not consumed" at error level.
    _, response = client.request(
        "/api/v2/market/assets", http_method="get", content=b'{"ignored": true}'
    )
    assert response.status == 200


@pytest.mark.parametrize("target", [b"health", b"sip:nm", b"a:b@c"])
def test_a_request_target_that_is_not_a_url_is_400(client: ReusableClient, target: bytes) -> None:
    # Sanic's error path re-parsed the same URL to build its stand-in request, raised again,
    # closed the connection unanswered and logged "connection_task uncaught" at error level
    # (sanic-org/sanic#2735; scanners send "sip:nm").
    request = b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n\r\n"
    status, _, answer = client._run(exchange(client.port, request))
    assert status == 400
    assert answer["error"]["code"] == "bad_request"
    assert "URL" in answer["error"]["message"]


def test_a_refusal_quoting_bytes_that_are_not_utf8_keeps_the_envelope(
    client: ReusableClient,
) -> None:
    # Sanic's 417 quotes the Expect value, a surrogate after decoding: rendering it as JSON
    # raised, and Sanic sent a plain-text 500 "An error occurred while handling an error".
    request = b"POST /health HTTP/1.1\r\nHost: test\r\nExpect: \xff\r\nContent-Length: 0\r\n\r\n"
    status, _, answer = client._run(exchange(client.port, request))
    assert status == 417
    assert answer["error"]["code"] == "expectation_failed"
    assert answer["error"]["message"] == "Unknown Expect: \\udcff"
