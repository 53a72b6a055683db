"""Real PostgreSQL and Redis for the suite.

``COINLINK_TEST_DATABASE_URL`` / ``COINLINK_TEST_REDIS_URL`` are used when they answer;
otherwise a throwaway server is started on a free port from the installed binaries
(``scripts/ensure-servers.sh`` installs them when absent) and stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import inspect
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import urlsplit

import asyncpg
import redis

T = TypeVar("T")


_PORTS_GIVEN: set[int] = set()
_LOWEST_PORT = 20000


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives a connecting socket (``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port for a throwaway server: free now, never given before in this run, and below
    the kernel's ephemeral range. A port the kernel picked (``bind(0)``) lies in that range,
    where each of the suite's many client connections takes a local port: one could take
    it before the server binds, and the server would never come up."""
    ceiling = max(_ephemeral_floor(), _LOWEST_PORT + 1000)
    while True:
        port = random.randrange(_LOWEST_PORT, ceiling)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout} s")


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """:func:`wait_for` for async tests: the predicate runs in a thread and the wait yields,
    so servers on the test's own loop (a webhook receiver) keep answering meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout} s")


async def until(check: Callable[[], T | Awaitable[T]], timeout: float = 10, what: str = "") -> T:
    """:func:`eventually` for checks that run on the test's own loop (a bus, a limiter, a
    hub, what a WebSocket client received, a query through the test's ORM): polled between
    the loop's other work until it returns something truthy, which is returned. A check may
    be a plain function or return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return cast(T, result)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what or check} did not happen within {timeout} s")
        await asyncio.sleep(0.02)


def redis_answers(url: str) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
        )
    except (redis.RedisError, OSError):
        return False


def postgres_answers(url: str) -> bool:
    async def probe() -> bool:
        conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=2)
        await conn.close()
        return True

    try:
        return asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


def _asyncpg_dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def installed_binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if not found:
        raise RuntimeError(f"{name} is not installed; run scripts/ensure-servers.sh")
    return found


@dataclass
class RedisServer:
    """A throwaway redis-server that keeps nothing on disk; can be stopped and restarted."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                installed_binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis_answers(self.url), 10, "redis-server")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory (run as ``postgres`` under root)."""

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="coinlink-pg-")))

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root.
            shutil.chown(self.directory, user="postgres")
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*prefix, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def start(self) -> PostgresServer:
        data = self.directory / "data"
        self._run(
            installed_binary("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        self._run(
            installed_binary("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.directory / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200",
            "start",
        )
        wait_for(lambda: postgres_answers(self.url), 20, "PostgreSQL")
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                installed_binary("pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            )
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a reachable PostgreSQL server (an admin connection to its ``postgres`` db)."""
    url = os.environ.get("COINLINK_TEST_DATABASE_URL")
    if url and postgres_answers(url):
        yield url
        return
    server = PostgresServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    url = os.environ.get("COINLINK_TEST_REDIS_URL")
    if url and redis_answers(url):
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return parts._replace(path=f"/{name}").geturl()


async def create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on ``server_url``, dropped afterwards."""
    name = f"coinlink_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(create_database(server_url, name))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, name))
