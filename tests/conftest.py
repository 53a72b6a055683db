"""Suite-wide fixtures: real PostgreSQL and Redis, a fresh database per run."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from tests.support import services

# The suite's own defaults; a test that needs other values passes them explicitly.
os.environ.setdefault("COINLINK_ENV", "test")
os.environ.setdefault("COINLINK_BCRYPT_ROUNDS", "4")
# A cancelled CI job sends SIGTERM: unwind like Ctrl-C so fixtures stop throwaway servers.
signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with services.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"coinlink_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(services.create_database(pg_server_url, name))
    yield url
    asyncio.run(services.drop_database(pg_server_url, name))


@pytest.fixture(scope="module")
def module_pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test module's own (market data it writes is its own)."""
    name = f"coinlink_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(services.create_database(pg_server_url, name))
    yield url
    asyncio.run(services.drop_database(pg_server_url, name))


@pytest.fixture
def fresh_pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own."""
    name = f"coinlink_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(services.create_database(pg_server_url, name))
    yield url
    asyncio.run(services.drop_database(pg_server_url, name))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with services.redis_server() as url:
        yield url


@pytest.fixture
def bus_prefix() -> str:
    """A key and channel prefix of this test's own, so tests sharing a Redis never meet."""
    return f"t{uuid.uuid4().hex[:10]}:"
