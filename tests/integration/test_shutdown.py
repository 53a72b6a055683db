"""``coinlink serve`` stopping: the drain on SIGTERM, and a stop at any moment of start-up.

Real processes (two workers, PostgreSQL, Redis); each step waits on what the server logs
or answers, never on time."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from coinlink.realtime.hub import RESTART_REASON
from tests.support import held_start
from tests.support.apps import ServerProcess, instance_env, server_env
from tests.support.leases import lease
from tests.support.services import until, wait_for
from tests.support.ws import WsClient, ws_url

DRAIN_S = 3.0  # long enough for the test to look at the draining server
BUDGET_S = 7.0


def log_count(server: ServerProcess, event: str) -> int:
    return server.output().count(f'"event":"{event}"')


def read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def live_processes(group: int) -> list[int]:
    """The processes of a process group that are still running (exited ones are zombies
    until their new parent reaps them)."""
    live = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == group and state != "Z":
                live.append(int(entry))
    return live


@pytest.fixture
def draining_server(pg_url: str, redis_url: str) -> Iterator[ServerProcess]:
    env = instance_env(
        pg_url,
        redis_url,
        provider="simulator",
        shutdown_drain_s=str(DRAIN_S),
        shutdown_budget_s=str(BUDGET_S),
    )
    server = ServerProcess(env, workers=2).wait_ready()
    try:
        wait_for(lambda: server.logged("workers_started"), 60, "both workers")
        yield server
    finally:
        server.kill()


async def test_sigterm_drains_then_finishes_every_request_on_its_way(
    draining_server: ServerProcess, redis_url: str
) -> None:
    server = draining_server
    await until(lambda: lease(redis_url, server.env)[0] is not None, 30, "an ingest leader")
    client = await WsClient.open(server.base_url)
    await client.request("subscribe", channels=["ticker:BTC-USD"])
    # Two requests on their way when the server stops accepting: one on a connection that
    # has sent nothing yet, one whose request is half sent.
    fresh = socket.create_connection(("127.0.0.1", server.port))
    half = socket.create_connection(("127.0.0.1", server.port))
    half.sendall(b"GET /health HTTP/1.1\r\nHost: coinlink\r\n")

    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    await until(lambda: log_count(server, "draining") == 2, 10, "both workers draining")
    # The ingest lease is free for another instance at once, not after the drain.
    await until(lambda: lease(redis_url, server.env)[0] is None, 5, "the lease released")
    assert log_count(server, "drained") == 0, "the lease waited for the drain"

    # Draining: still serving, but readiness fails, connections close after each response,
    # and a new WebSocket is refused.
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        ready = await http.get("/readyz")
        health = await http.get("/health")
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert (health.status_code, health.headers["connection"]) == (200, "close")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server.base_url), open_timeout=10):
            pass
    response = refused.value.response
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")

    await until(lambda: log_count(server, "drained") == 2, 10, "both workers drained")
    fresh.sendall(b"GET /health HTTP/1.1\r\nHost: coinlink\r\n\r\n")
    half.sendall(b"\r\n")
    for sock in (fresh, half):
        with sock:
            head = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
            assert b"connection: close" in head.lower()

    assert await client.close_code() == 1001
    assert client.conn.close_reason == RESTART_REASON
    assert server.process.wait(BUDGET_S + 5) == 0
    assert time.monotonic() - signalled < BUDGET_S + 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert server.unexpected_errors() == []


def test_a_starting_server_refuses_connections_until_a_worker_serves(pg_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(60)
        env = server_env(
            COINLINK_DATABASE_URL=pg_url, TEST_START_GATE=f"127.0.0.1:{gate.getsockname()[1]}"
        )
        server = ServerProcess(env, workers=1, module=held_start.MODULE)
        try:
            held, _ = gate.accept()  # the port is bound; the worker waits for our answer
            with held:
                # Refused, not queued unanswered: a proxy moves on to another instance.
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
                held.sendall(b"!")
            server.wait_ready()
            assert httpx.get(server.base_url + "/health").status_code == 200
        finally:
            server.stop()
    assert server.unexpected_errors() == []


# While migrations run (on a new database); before Sanic starts; once one worker serves,
# while the manager waits for the other (the window of sanic-org/sanic#2997); once both do.
@pytest.mark.parametrize(
    "moment", ["migration_applied", "serving", "Worker ready", "workers_started"]
)
def test_sigterm_at_any_moment_of_start_up_stops_it_cleanly(
    moment: str, request: pytest.FixtureRequest, redis_url: str
) -> None:
    database = "fresh_pg_url" if moment == "migration_applied" else "pg_url"
    pg_url = request.getfixturevalue(database)
    env = instance_env(pg_url, redis_url, provider="simulator")
    server = ServerProcess(env, workers=2)
    try:
        wait_for(lambda: f'"event":"{moment}' in server.output(), 60, moment)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(20)
        # Its helpers (multiprocessing's resource tracker) exit once they see it gone.
        wait_for(lambda: live_processes(server.process.pid) == [], 10, "every process gone")
    finally:
        server.kill()
    assert server.process.returncode == 0, server.output()[-3000:]
    assert "Traceback" not in server.output()
    assert server.unexpected_errors() == []


def test_sigint_stops_at_once_without_draining(pg_url: str, redis_url: str) -> None:
    env = instance_env(pg_url, redis_url, shutdown_drain_s="30", shutdown_budget_s="60")
    server = ServerProcess(env, workers=2).wait_ready()
    wait_for(lambda: server.logged("workers_started"), 60, "both workers")
    started = time.monotonic()
    assert server.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 10
    assert not server.logged("draining")


# What systemd (KillMode=control-group), `docker stop` of a shell-wrapped process and a
# terminal's Ctrl-C do: every process of the group gets the signal at once, Sanic's state
# manager too.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_to_the_whole_process_group_stops_like_one_to_the_main_process(
    sig: signal.Signals, draining_server: ServerProcess
) -> None:
    server = draining_server
    client = await WsClient.open(server.base_url)
    os.killpg(server.process.pid, sig)
    if sig == signal.SIGTERM:
        await until(lambda: log_count(server, "draining") == 2, 10, "both workers draining")
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.get("/readyz")).status_code == 503
        await until(lambda: log_count(server, "drained") == 2, 10, "both workers drained")
    assert await client.close_code() == 1001
    assert server.process.wait(BUDGET_S + 5) == 0
    wait_for(lambda: live_processes(server.process.pid) == [], 10, "every process gone")
    assert "Traceback" not in server.output(), server.output()[-3000:]
    assert server.unexpected_errors() == []
