"""Sentry from real ``coinlink serve`` processes to a fake ingest on 127.0.0.1.

Each worker's SDK sends its events in order from one queue, so an event known to come last
from a connection's worker proves that nothing else is still on its way from it: the
negative cases end with such a marker error on the same keep-alive connection (one worker),
never with a sleep.
"""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from coinlink import __version__
from tests.support.accounts import PASSWORD, new_email
from tests.support.apps import ServerProcess, instance_env
from tests.support.failing_requests import FAULT_HEADER, MODULE, SLOW_ROUTE, SLOW_STARTED
from tests.support.sentry_ingest import SentryIngest, sentry_ingest
from tests.support.services import wait_for

pytestmark = pytest.mark.timeout(180)
Served = tuple[ServerProcess, SentryIngest]


def serving(pg_url: str, redis_url: str, workers: int) -> Iterator[Served]:
    with sentry_ingest() as ingest:
        env = instance_env(
            pg_url, redis_url, sentry_dsn=ingest.dsn, rate_limit_login_account="2/60"
        )
        server = ServerProcess(
            env, workers, expected_errors=("unhandled_exception",), module=MODULE
        )
        try:
            yield server.wait_ready(), ingest
        finally:
            server.stop()


@pytest.fixture(scope="module")
def two_workers(pg_url: str, redis_url: str) -> Iterator[Served]:
    yield from serving(pg_url, redis_url, workers=2)


@pytest.fixture(scope="module")
def one_worker(pg_url: str, redis_url: str) -> Iterator[Served]:
    yield from serving(pg_url, redis_url, workers=1)


def new_trace_id() -> str:
    return f"sentry-{uuid.uuid4().hex}"


def fail(client: httpx.Client, trace_id: str) -> None:
    """An unexpected error in a real route: a sign-in that breaks inside the service."""
    response = client.post(
        "/api/v2/auth/login",
        json={"email": new_email(), "password": PASSWORD},
        headers={FAULT_HEADER: "1", "x-request-id": trace_id},
    )
    assert response.status_code == 500, response.text
    assert response.json()["error"]["trace_id"] == trace_id
    # The connection stays open: a marker sent on it next goes to the same worker.
    assert response.headers["connection"] == "keep-alive"


def trace_ids(ingest: SentryIngest) -> Counter[str]:
    return Counter(str(event["tags"]["trace_id"]) for event in ingest.events())


def arrived(ingest: SentryIngest, *wanted: str) -> bool:
    return set(wanted) <= trace_ids(ingest).keys()


def flushed(client: httpx.Client, ingest: SentryIngest) -> None:
    """Until every event of the connection's worker so far has arrived (see the module)."""
    marker = new_trace_id()
    fail(client, marker)
    wait_for(lambda: arrived(ingest, marker), 30, "the marker's event")


def failing_pids(server: ServerProcess) -> set[int]:
    return {
        record["pid"]
        for line in server.output().splitlines()
        if line.startswith("{")
        and (record := orjson.loads(line)).get("event") == "unhandled_exception"
    }


def test_each_unhandled_error_in_any_worker_is_one_event_with_trace_id_release_and_env(
    two_workers: Served,
) -> None:
    server, ingest = two_workers
    clients: list[httpx.Client] = []
    errors: list[str] = []

    def fail_on_a_new_connection() -> bool:
        clients.append(httpx.Client(base_url=server.base_url, timeout=10))
        errors.append(new_trace_id())
        fail(clients[-1], errors[-1])
        return len(failing_pids(server)) == 2

    try:
        # The kernel hands each new connection to either worker: until both have failed.
        wait_for(fail_on_a_new_connection, 60, "an error in each worker")
        for client in clients:
            flushed(client, ingest)
    finally:
        for client in clients:
            client.close()

    counts = trace_ids(ingest)
    assert {trace_id: counts[trace_id] for trace_id in errors} == dict.fromkeys(errors, 1)
    ours = [event for event in ingest.events() if event["tags"]["trace_id"] in errors]
    for event in ours:
        assert event["release"] == f"coinlink@{__version__}"
        assert event["environment"] == "test"
        assert event["tags"]["route"] == "/api/v2/auth/login"
        assert event["exception"]["values"][-1]["type"] == "InjectedFault"


def test_no_event_carries_credentials_cookies_or_auth_bodies(one_worker: Served) -> None:
    server, ingest = one_worker
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        signup = client.post(
            "/api/v2/auth/register", json={"email": new_email(), "password": PASSWORD}
        )
        assert signup.status_code == 201, signup.text
        tokens = signup.json()["tokens"]
        # Made at run time, so that none is in the source lines an event may quote.
        secrets = {
            "email": new_email(),
            "password": f"pw-{uuid.uuid4().hex}",
            "other_email": new_email(),
            "other_password": f"pw-{uuid.uuid4().hex}",
            "cookie": f"ck-{uuid.uuid4().hex}",
            "query": f"q-{uuid.uuid4().hex}",
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
        }
        credentials = {
            "authorization": f"Bearer {secrets['access_token']}",
            "cookie": f"session={secrets['cookie']}",
        }
        failing: dict[str, dict[str, Any]] = {
            "/api/v2/auth/register": {
                "email": secrets["email"],
                "password": secrets["password"],
                "display_name": "Sentry",
            },
            "/api/v2/auth/login": {
                "email": secrets["other_email"],
                "password": secrets["other_password"],
            },
            "/api/v2/auth/refresh": {"refresh_token": secrets["refresh_token"]},
        }
        errors = []
        for path, body in failing.items():
            errors.append(new_trace_id())
            response = client.post(
                f"{path}?api_key={secrets['query']}",
                json=body,
                headers={**credentials, FAULT_HEADER: "1", "x-request-id": errors[-1]},
            )
            assert response.status_code == 500, response.text
        errors.append(new_trace_id())
        me = client.get(
            "/api/v2/users/me",
            headers={**credentials, FAULT_HEADER: "1", "x-request-id": errors[-1]},
        )
        assert me.status_code == 500, me.text
        flushed(client, ingest)

    assert arrived(ingest, *errors)  # the errors were reported...
    raw = ingest.raw()
    for name, secret in secrets.items():  # ...and nothing of the caller's with them
        assert secret.encode() not in raw, name
    assert b"ip_address" not in raw


def test_client_errors_never_reach_sentry(one_worker: Served) -> None:
    server, ingest = one_worker
    before = len(ingest.events())
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        login = {"email": new_email(), "password": PASSWORD}
        statuses = [
            client.get("/api/v2/users/me").status_code,
            client.get("/api/v2/no-such-route").status_code,
            client.post("/api/v2/auth/register", json={"email": "not-an-email"}).status_code,
            *(client.post("/api/v2/auth/login", json=login).status_code for _ in range(3)),
        ]
        assert statuses == [401, 404, 422, 401, 401, 429]
        flushed(client, ingest)

    assert len(ingest.events()) == before + 1  # the marker alone


def logged_with(server: ServerProcess, trace_id: str) -> dict[str, dict[str, Any]]:
    """The request's log records by event."""
    records = (orjson.loads(line) for line in server.output().splitlines() if trace_id in line)
    return {record["event"]: record for record in records}


def test_a_client_that_hangs_up_mid_request_is_no_error(one_worker: Served) -> None:
    server, ingest = one_worker
    before = len(ingest.events())
    trace_id = new_trace_id()
    request = f"GET {SLOW_ROUTE} HTTP/1.1\r\nHost: coinlink\r\nX-Request-ID: {trace_id}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        wait_for(lambda: SLOW_STARTED in logged_with(server, trace_id), 30, "the handler")
    wait_for(lambda: "request" in logged_with(server, trace_id), 30, "the hang-up handled")

    logged = logged_with(server, trace_id)
    assert logged["client_disconnected"]["level"] == "info"
    assert "unhandled_exception" not in logged
    assert logged["request"]["status"] == 499  # the access log's: no server error
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        flushed(client, ingest)  # one worker: the hang-up's, if it had reported
    assert len(ingest.events()) == before + 1  # the marker alone
