"""The shipped nginx config (deploy/nginx/) run by Debian's nginx in front of two real
instances of two workers each, on one PostgreSQL and one Redis.

Each test is a client of its own loopback address (127.0.0.2, ...): the app, trusting
X-Forwarded-For from nginx at 127.0.0.1 only, rate-limits each of them apart.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.apps import ServerProcess, instance_env
from tests.support.nginx import NginxProxy, nginx_in_front_of
from tests.support.raw_http import client_hello
from tests.support.services import free_port, wait_for
from tests.support.ws import Publisher, WsClient

pytestmark = pytest.mark.timeout(120)

ANONYMOUS_LIMIT = 20  # below 40: the app decides each request in Redis, exactly
MARKET = "/api/v2/market/assets"


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="module")
def env(module_pg_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    return instance_env(
        module_pg_url,
        redis_url,
        redis_prefix=prefix,
        symbols="BTC-USD",
        trusted_proxies="127.0.0.1",
        rate_limit_anonymous=f"{ANONYMOUS_LIMIT}/60",
    )


@pytest.fixture(scope="module")
def instances(env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    """Two instances; a test that restarts one puts the new process in its place."""
    first = ServerProcess(env, workers=2).wait_ready()
    servers = [first, ServerProcess(env, workers=2).wait_ready()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def addresses(servers: list[ServerProcess]) -> list[str]:
    return [f"127.0.0.1:{server.port}" for server in servers]


@pytest.fixture(scope="module")
def proxy(instances: list[ServerProcess]) -> Iterator[NginxProxy]:
    with nginx_in_front_of(addresses(instances)) as running:
        yield running


def client_at(address: str, base_url: str) -> httpx.Client:
    """A client connecting from ``address`` (a loopback address of its own)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base_url, transport=transport, timeout=10)


def served_by(server: ServerProcess, trace_id: str) -> bool:
    """Whether the instance's access log has the request with this trace id."""
    return f'"trace_id":"{trace_id}"' in server.output()


def assert_nginx_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["details"] is None
    assert error["trace_id"] == response.headers["x-request-id"]
    return dict(error)


# -- through the proxy ----------------------------------------------------------------------


def test_rest_requests_are_spread_over_both_instances(
    proxy: NginxProxy, instances: list[ServerProcess]
) -> None:
    ids = [f"spread-{uuid.uuid4().hex[:8]}-{n}" for n in range(10)]
    with client_at("127.0.0.2", proxy.base_url) as client:
        for trace_id in ids:
            response = client.get(MARKET, headers={"x-request-id": trace_id})
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == trace_id

    def logged() -> bool:
        return all(any(served_by(s, t) for s in instances) for t in ids)

    wait_for(logged, 10, "every request in an instance's access log")
    served = [[t for t in ids if served_by(server, t)] for server in instances]
    assert sorted(served[0] + served[1]) == sorted(ids), "a request served twice"
    assert served[0] and served[1], f"one instance served everything: {served}"
    # nginx's own log names the instance of each request too.
    assert set(addresses(instances)) <= {address for address, _ in proxy.upstream_answers()}


async def test_websocket_upgrade_through_nginx_receives_ticks(
    proxy: NginxProxy, redis_url: str, prefix: str
) -> None:
    channel = "ticker:BTC-USD"
    async with await WsClient.open(proxy.base_url, local_addr=("127.0.0.3", 0)) as client:
        ack = await client.request("subscribe", channels=[channel])
        assert ack["type"] == "ack" and ack["channels"][0]["channel"] == channel
        async with Publisher(redis_url, prefix) as publisher:
            seqs = await publisher.ticks(channel, 5)
        updates = await client.through(channel, seqs[-1])
        assert [u["seq"] for u in updates] == seqs
        assert [u["data"]["n"] for u in updates] == list(range(5))


def test_rate_limits_follow_the_client_address_nginx_forwards(proxy: NginxProxy) -> None:
    with client_at("127.0.0.4", proxy.base_url) as client:
        for used in range(1, ANONYMOUS_LIMIT + 1):
            response = client.get(MARKET)
            assert response.status_code == 200, response.text
            assert response.headers["ratelimit-remaining"] == str(ANONYMOUS_LIMIT - used)
        assert client.get(MARKET).json()["error"]["code"] == "rate_limited"
        # What the client writes in X-Forwarded-For itself buys it no fresh budget: nginx
        # appends the address it saw, and the app believes nothing left of that.
        spoofed = client.get(MARKET, headers={"x-forwarded-for": "198.51.100.9"})
        assert spoofed.status_code == 429
    with client_at("127.0.0.5", proxy.base_url) as other:
        response = other.get(MARKET)
        assert response.status_code == 200
        assert response.headers["ratelimit-remaining"] == str(ANONYMOUS_LIMIT - 1)


def test_the_apps_own_errors_pass_through_untouched(
    proxy: NginxProxy, instances: list[ServerProcess]
) -> None:
    trace_id = f"app-404-{uuid.uuid4().hex[:8]}"
    with client_at("127.0.0.6", proxy.base_url) as client:
        response = client.get("/api/v2/nowhere", headers={"x-request-id": trace_id})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "no such route",
        "details": None,
        "trace_id": trace_id,
    }
    wait_for(lambda: any(served_by(s, trace_id) for s in instances), 10, "the app's access line")


def test_a_stopped_instance_is_passed_over_and_rejoins_on_its_port(
    env: dict[str, str], instances: list[ServerProcess]
) -> None:
    # A proxy of this test's own: which instance it has seen fail is its own state.
    with (
        nginx_in_front_of(
            addresses(instances),
            expected_errors=("connect() failed (111: Connection refused)*",),
        ) as proxy,
        client_at("127.0.0.11", proxy.base_url) as client,
    ):
        running, stopped = instances
        # Stopped once both its workers serve, so that it was in rotation before.
        wait_for(lambda: stopped.logged("workers_started"), 60, "the manager's start")
        assert stopped.stop() == 0
        ids = [f"passed-over-{uuid.uuid4().hex[:8]}-{n}" for n in range(6)]
        # The first refused connection is retried on the running one, which then serves
        # alone: the stopped one is skipped for its fail_timeout, tried again after it.
        for trace_id in ids:
            assert client.get(MARKET, headers={"x-request-id": trace_id}).status_code == 200
        wait_for(lambda: all(served_by(running, t) for t in ids), 10, "the access lines")

        instances[1] = ServerProcess(env, workers=2, port=stopped.port).wait_ready()

        def rejoined() -> bool:  # /health: not rate-limited; nginx's log names the instance
            assert client.get("/health").status_code == 200
            return proxy.upstream_answers()[-1] == (f"127.0.0.1:{stopped.port}", "200")

        wait_for(rejoined, 20, "the restarted instance back in rotation")


# -- nginx's own answers ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/metrics?name=x"])
def test_metrics_are_hidden_behind_the_proxy_as_a_json_404(proxy: NginxProxy, path: str) -> None:
    with client_at("127.0.0.7", proxy.base_url) as client:
        error = assert_nginx_envelope(
            client.get(path, headers={"x-request-id": "metrics-probe"}), 404, "not_found"
        )
    assert error["trace_id"] == "metrics-probe"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "bad_request"),
        (b"TRACE / HTTP/1.1\r\nHost: coinlink\r\n\r\n", 405, "method_not_allowed"),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: coinlink\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET / HTTP/1.1\r\nHost: coinlink\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: coinlink\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "not_implemented",
        ),
        (client_hello(), 400, "bad_request"),  # HTTPS to the plain port
    ],
    ids=["garbage", "trace", "long-uri", "huge-header", "unknown-transfer-encoding", "tls"],
)
def test_requests_nginx_refuses_get_the_envelope_not_html(
    proxy: NginxProxy, request_bytes: bytes, status: int, code: str
) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        raw = b""
        while chunk := sock.recv(65536):  # nginx closes the connection after these
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    response = httpx.Response(int(status_line.split()[1]), headers=headers, content=body)
    assert_nginx_envelope(response, status, code)
    assert b"<html" not in raw.lower()


def test_a_head_with_bare_lf_line_ends_is_passed_on_with_crlf(proxy: NginxProxy) -> None:
    # nginx reads a bare LF as a line end (RFC 9112 allows it) and sends the app CRLF: the
    # app's 400 for bare LF (coinlink/serving/request_heads.py) is for direct clients only.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\nHost: coinlink\nConnection: close\n\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_body_over_64_kib_gets_413_from_nginx_before_any_instance(
    instances: list[ServerProcess],
) -> None:
    trace_id = f"too-large-{uuid.uuid4().hex[:8]}"
    with (
        nginx_in_front_of(
            addresses(instances), expected_errors=("client intended to send too large body*",)
        ) as proxy,
        client_at("127.0.0.8", proxy.base_url) as client,
    ):
        response = client.post(
            "/api/v2/auth/register",
            content=b"x" * 100_000,
            headers={"content-type": "application/json", "x-request-id": trace_id},
        )
        assert_nginx_envelope(response, 413, "payload_too_large")
        assert client.get(MARKET).status_code == 200  # the proxy answers on
    assert not any(served_by(server, trace_id) for server in instances)


def test_every_instance_down_gets_a_json_502() -> None:
    # Nothing listens on these ports: connections are refused, as by a stopped instance.
    with (
        nginx_in_front_of(
            [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"],
            expected_errors=("connect() failed (111: Connection refused)*", "no live upstreams*"),
        ) as proxy,
        client_at("127.0.0.9", proxy.base_url) as client,
    ):
        for _ in range(3):  # both refused, then both skipped for their fail_timeout
            assert_nginx_envelope(client.get(MARKET), 502, "upstream_unavailable")


def test_an_instance_that_never_accepts_gets_a_json_504() -> None:
    # A listening socket whose accept queue is full: the kernel drops further SYNs, so the
    # connect hangs as to a host that died (proxy_connect_timeout: 2 s).
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(0)
        with (
            socket.create_connection(hung.getsockname(), timeout=5),  # fills the queue
            nginx_in_front_of(
                [f"127.0.0.1:{hung.getsockname()[1]}"],
                expected_errors=("upstream timed out (110: Connection timed out)*",),
            ) as proxy,
            client_at("127.0.0.10", proxy.base_url) as client,
        ):
            assert_nginx_envelope(client.get(MARKET), 504, "upstream_timeout")


PER_CLIENT = 256  # the shipped config's limit_conn


def test_a_client_over_its_requests_in_flight_gets_a_json_429() -> None:
    """An instance that accepts and never answers holds every request in flight: the
    client's 257th is refused by nginx at once, in the envelope, with ``Retry-After``;
    another client's request is still passed on."""
    held: list[socket.socket] = []
    clients: list[socket.socket] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(PER_CLIENT + 16)
        silent.settimeout(0.1)

        def passed_on(count: int) -> bool:
            with contextlib.suppress(TimeoutError):
                held.append(silent.accept()[0])
            return len(held) >= count

        def send_from(address: str, port: int) -> None:
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(address, 0)
            )
            clients.append(sock)
            sock.sendall(f"GET {MARKET} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

        try:
            with nginx_in_front_of([f"127.0.0.1:{silent.getsockname()[1]}"]) as proxy:
                for _ in range(PER_CLIENT):
                    send_from("127.0.0.20", proxy.port)
                wait_for(lambda: passed_on(PER_CLIENT), 30, "every request passed on")
                with client_at("127.0.0.20", proxy.base_url) as client:
                    refused = client.get(MARKET)
                assert_nginx_envelope(refused, 429, "too_many_connections")
                assert refused.headers["retry-after"] == "1"
                send_from("127.0.0.21", proxy.port)
                wait_for(lambda: passed_on(PER_CLIENT + 1), 10, "another client passed on")
        finally:
            for sock in clients + held:
                sock.close()
