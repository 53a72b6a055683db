"""Servers and helpers for the client's tests: real ``coinlink serve`` processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import psutil
import pytest

from coinlink_client import AsyncClient, Event, Snapshot, Stream, Tokens, Update
from tests.support import log_guard, services
from tests.support.accounts import PASSWORD, new_email
from tests.support.apps import TEST_SECRET, ServerProcess, instance_env
from tests.support.ws import ws_url

# Per user: 30 requests at once, 30 more each second. The Retry-After test runs out; the
# others stay well below it (a refused write is not retried, it fails).
USER_RATE = "30/1"


def start(pg_url: str, redis_url: str, **settings: str) -> ServerProcess:
    """Two workers, heartbeats every second, the admin tick API on."""
    env = instance_env(
        pg_url,
        redis_url,
        admin_ticks="true",
        ws_heartbeat_s="1",
        rate_limit_user=USER_RATE,
        **settings,
    )
    # Sockets the tests drop or freeze leave Sanic's keepalive tasks behind at shutdown.
    return ServerProcess(
        env, workers=2, expected_errors=log_guard.SANIC_WEBSOCKET_TASKS
    ).wait_ready()


def restarted(server: ServerProcess) -> ServerProcess:
    """A stopped server started again, on its port (where its clients reconnect)."""
    again = ServerProcess(
        server.env, workers=2, port=server.port, expected_errors=server.expected_errors
    )
    return again.wait_ready()


@pytest.fixture(scope="package")
def client_pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of these tests' own (the servers here migrate it once)."""
    with services.fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="package")
def server(client_pg_url: str, redis_url: str) -> Iterator[ServerProcess]:
    """One server for every test here that leaves it running: starting one is most of
    what a test costs, and the directory has a minute."""
    server = start(client_pg_url, redis_url)
    try:
        yield server
    finally:
        server.stop()
        # After the modules' own checks (tests/conftest.py): this one stops last.
        bad = log_guard.check_stopped()
        if bad:
            pytest.fail("unexpected error-level log lines:\n" + "\n".join(bad[:10]))


def prefix(server: ServerProcess) -> str:
    return server.env["COINLINK_REDIS_PREFIX"]


def url(server: ServerProcess) -> str:
    return ws_url(server.base_url)


async def signed_up(server: ServerProcess, **options: Any) -> AsyncClient:
    client = AsyncClient(server.base_url, **options)
    await client.register(new_email(), PASSWORD)
    return client


def expiring(tokens: Tokens, in_s: float) -> Tokens:
    """The same session's tokens with an access token re-signed to expire in ``in_s``
    seconds (the server's shortest TTL is 30 s), as the client sees it."""
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    expires_at = time.time() + in_s
    claims["exp"] = int(expires_at)
    access = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    return Tokens(access, tokens.refresh_token, int(expires_at))


def serving_worker(server: ServerProcess, stream: Stream) -> int:
    """The pid of the worker serving the stream's connection."""
    assert stream.connection is not None
    port = stream.connection.local_address[1]
    [worker] = [
        pid
        for pid in server.worker_pids()
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port
    ]
    return worker


async def events_until(
    stream: Stream, done: Callable[[list[Event]], bool], timeout: float = 30
) -> list[Event]:
    """Every event the stream yields until ``done`` holds for them."""
    got: list[Event] = []
    async with asyncio.timeout(timeout):
        while not done(got):
            got.append(await anext(stream))
    return got


async def events_through(
    stream: Stream, channel: str, seq: int, timeout: float = 30
) -> list[Event]:
    """Every event the stream yields until the update of ``channel`` numbered ``seq``."""
    return await events_until(stream, lambda got: has_update(got, channel, seq), timeout)


def has_update(events: list[Event], channel: str, seq: int) -> bool:
    return any(isinstance(e, Update) and (e.channel, e.seq) == (channel, seq) for e in events)


def seqs(events: list[Event], channel: str) -> list[int]:
    return [e.seq for e in events if isinstance(e, Update) and e.channel == channel]


def from_snapshot(events: list[Event], channel: str, through: int) -> list[int]:
    """The seqs a consumer must see after the channel's snapshot among ``events``, up to
    ``through``: every one, once, in order. (Not only the test's own ticks: one published
    earlier may still have been on its way to the worker when it took the snapshot.)"""
    [snapshot] = [e for e in events if isinstance(e, Snapshot) and e.channel == channel]
    return list(range(snapshot.seq + 1, through + 1))
