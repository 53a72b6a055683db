"""Fixtures of the unit tests that run a component over something real: a WebSocket pair
on a Sanic server in the test's loop, or the ORM on a migrated PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from coinlink.db import apply_migrations
from tests.support import services
from tests.support.database import orm
from tests.support.ws_pairs import WsEndpoint, ws_endpoint


@pytest.fixture
async def endpoint() -> AsyncIterator[WsEndpoint]:
    async with ws_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def migrated_pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of the unit tests' own (they empty its tables), migrated once."""
    with services.fresh_database(pg_server_url) as url:
        asyncio.run(apply_migrations(url))
        yield url


@pytest.fixture
async def db(migrated_pg_url: str) -> AsyncIterator[None]:
    """The ORM open on that database, every table empty."""
    async with orm(migrated_pg_url):
        yield
