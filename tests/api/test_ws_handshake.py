"""GET /ws refused before the upgrade: each refusal says what to do instead."""

from __future__ import annotations

import pytest
from sanic_testing.reusable import ReusableClient

from tests.support.apps import TEST_ORIGIN
from tests.support.raw_http import exchange

UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a browser's address bar, curl
        {"Connection": "keep-alive", "Upgrade": "websocket"},
        {"Connection": "Upgrade", "Upgrade": "h2c"},
        {"Connection": "Upgrade"},
    ],
)
def test_a_plain_http_request_gets_426_telling_it_to_use_a_websocket_client(
    client: ReusableClient, headers: dict[str, str]
) -> None:
    _, response = client.get("/ws", headers=headers)
    assert response.status == 426
    assert response.headers["upgrade"] == "websocket"
    error = response.json["error"]
    assert error["code"] == "upgrade_required"
    assert "WebSocket client" in error["message"] and "ws://" in error["message"]


def test_a_foreign_origin_is_told_which_setting_lists_the_allowed_ones(
    client: ReusableClient,
) -> None:
    _, response = client.get("/ws", headers={**UPGRADE, "Origin": "https://evil.example"})
    assert response.status == 403
    error = response.json["error"]
    assert error["code"] == "forbidden"
    assert "COINLINK_CORS_ORIGINS" in error["message"]
    assert TEST_ORIGIN not in error["message"]  # the allowed origins themselves are not told


def test_a_header_of_bytes_that_are_not_utf8_is_400_with_the_envelope(
    client: ReusableClient,
) -> None:
    # websockets refused the value outside its handshake checks (Sanic: 500), and logging
    # that 500 raised on the surrogate Sanic decodes the byte to: Sanic sent a plain-text
    # 500 "An error occurred while handling an error" with no log line.
    head = "".join(f"{name}: {value}\r\n" for name, value in UPGRADE.items()).encode()
    request = b"GET /ws HTTP/1.1\r\nHost: test\r\n" + head
    request += b"Sec-WebSocket-Protocol: \xff\r\n\r\n"
    status, _, answer = client._run(exchange(client.port, request))
    assert status == 400
    assert answer["error"]["code"] == "bad_request"
    assert "sec-websocket-protocol" in answer["error"]["message"]
