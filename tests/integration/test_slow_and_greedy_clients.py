"""Slow and greedy HTTP clients against ``coinlink serve``, over raw sockets: a request read
takes at most ``COINLINK_HTTP_READ_TIMEOUT_S`` (then 408), one address holds at most
``COINLINK_HTTP_MAX_CONNECTIONS_PER_IP`` connections per worker (then 429), and a client
hanging up mid-request is no error."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.apps import ServerProcess, instance_env, running_server
from tests.support.raw_http import read_response
from tests.support.services import wait_for

READ_TIMEOUT_S = 2
MAX_CONNECTIONS = 3
PACE_S = 0.7  # one byte per PACE_S: each keeps Sanic's own (idle) timeout from firing
LOGIN_HEAD = (
    b"POST /api/v2/auth/login HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(module_pg_url: str) -> Iterator[ServerProcess]:
    env = instance_env(
        module_pg_url,
        http_read_timeout_s=str(READ_TIMEOUT_S),
        http_max_connections_per_ip=str(MAX_CONNECTIONS),
    )
    with running_server(env) as server:
        yield server


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def trickle(sock: socket.socket, data: bytes) -> float:
    """Send ``data`` a byte per :data:`PACE_S` until the server answers; the seconds it took."""
    began = time.monotonic()
    sock.settimeout(PACE_S)
    for byte in data:
        sock.sendall(bytes([byte]))
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except TimeoutError:
            continue
    else:
        raise AssertionError("the server read the whole trickled request")
    sock.settimeout(5)
    return time.monotonic() - began


@pytest.mark.parametrize(
    "request_bytes",
    [LOGIN_HEAD + b"x" * 200, b"GET /health HTTP/1.1\r\nHost: test\r\n" + b"X-Slow: a\r\n" * 100],
    ids=["body", "headers"],
)
def test_a_trickled_request_is_cut_with_408_within_the_bound(
    server: ServerProcess, request_bytes: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes[:40])  # a request begins; then a byte now and then
        took = trickle(sock, request_bytes[40:])
        status, headers, body = read_response(sock)
    assert status == 408
    assert body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert "within 2 s" in body["error"]["message"]  # type: ignore[index]
    assert headers["connection"] == "close"
    # The bound, plus a pace of slack (the answer is seen at the next byte) and scheduling.
    assert took < READ_TIMEOUT_S + PACE_S + 1.5
    assert not server.unexpected_errors()


def test_the_bound_restarts_with_each_request_of_a_keep_alive_connection(
    server: ServerProcess,
) -> None:
    with connect(server) as sock:
        for _ in range(2):  # each well within the bound, the two together beyond it
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
            trickle_for(sock, READ_TIMEOUT_S * 0.6)
            sock.sendall(b"\r\n")
            assert read_response(sock)[0] == 200
        sock.sendall(LOGIN_HEAD[:40])
        trickle(sock, LOGIN_HEAD[40:] + b"x" * 200)
        assert read_response(sock)[0] == 408


def trickle_for(sock: socket.socket, seconds: float) -> None:
    """Send a header line a byte at a time for about ``seconds``, the server silent."""
    line = b"X-Slow: " + b"a" * 200
    began = time.monotonic()
    sock.settimeout(PACE_S / 2)
    sent = 0
    while time.monotonic() - began < seconds:
        sock.sendall(line[sent : sent + 1])
        sent += 1
        try:
            assert not sock.recv(1, socket.MSG_PEEK), "the server answered early"
        except TimeoutError:
            continue
    sock.sendall(line[sent:] + b"\r\n")
    sock.settimeout(5)


def test_a_client_hanging_up_mid_body_is_no_error(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(LOGIN_HEAD + b'{"email": "a')
    # A request after it shows the server read the hang-up (and is still serving).
    assert httpx.get(server.base_url + "/health").status_code == 200
    wait_for(lambda: server.logged("client_disconnected"), 10, "the hang-up noticed")
    assert not server.unexpected_errors()


def test_an_address_over_its_connection_cap_is_refused_politely(server: ServerProcess) -> None:
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each is accepted and served (keep-alive: it stays open)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with connect(server) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, body = read_response(extra)
        assert status == 429
        assert headers["retry-after"] == "1"
        assert body["error"]["code"] == "too_many_connections"  # type: ignore[index]
        assert body["error"]["details"] == {"limit": MAX_CONNECTIONS}  # type: ignore[index]
    finally:
        held.pop().close()
    try:
        # One closed: a new connection is served again.
        def served() -> bool:
            with httpx.Client(headers={"connection": "close"}) as client:
                return client.get(server.base_url + "/health").status_code == 200

        wait_for(served, 10, "a connection under the cap served")
    finally:
        for sock in held:
            sock.close()
    assert not server.unexpected_errors()


def test_a_burst_of_logins_beyond_the_hashing_slots_is_refused_at_once(pg_url: str) -> None:
    """One hashing slot and a short wait: a burst of logins gets some 200s and, soon, 503s
    with ``Retry-After``; nobody queues for long."""
    wait_s = 0.3
    env = instance_env(
        pg_url,
        bcrypt_rounds="10",  # ~70 ms a hash: a burst of 20 would queue for over a second
        bcrypt_concurrency="1",
        bcrypt_wait_s=str(wait_s),
        trusted_proxies="127.0.0.1",
    )
    with running_server(env) as server:
        emails = [f"burst-{n}-{time.monotonic_ns()}@example.com" for n in range(20)]
        with httpx.Client(base_url=server.base_url) as client:
            for email in emails:
                body = {"email": email, "password": "correct horse", "display_name": "b"}
                assert client.post("/api/v2/auth/register", json=body).status_code == 201

        async def login(client: httpx.AsyncClient, n: int) -> tuple[httpx.Response, float]:
            began = time.monotonic()
            response = await client.post(
                "/api/v2/auth/login",
                json={"email": emails[n], "password": "correct horse"},
                headers={"x-forwarded-for": f"198.51.100.{n + 1}"},
            )
            return response, time.monotonic() - began

        async def burst() -> list[tuple[httpx.Response, float]]:
            limits = httpx.Limits(max_connections=len(emails))
            async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:
                return await asyncio.gather(*(login(client, n) for n in range(len(emails))))

        results = asyncio.run(burst())
        assert not server.unexpected_errors()
    statuses = sorted(response.status_code for response, _ in results)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    for response, took in results:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "service_unavailable"
            assert took < wait_s + 1.5  # refused after the wait, not after the queue
