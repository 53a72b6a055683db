"""Fixtures of the unit tests that run a component over something real: a WebSocket pair
on a Sanic server in the test's loop, or the ORM on a migrated PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from coinlink.db import apply_migrations
from tests.support.database import orm
from tests.support.ws_pairs import WsEndpoint, ws_endpoint


@pytest.fixture
async def endpoint() -> AsyncIterator[WsEndpoint]:
    async with ws_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def migrated_pg_url(module_pg_url: str) -> str:
    """The module's own PostgreSQL database with every migration applied."""
    asyncio.run(apply_migrations(module_pg_url))
    return module_pg_url


@pytest.fixture
async def db(migrated_pg_url: str) -> AsyncIterator[None]:
    """The ORM open on the module's database, every table empty."""
    async with orm(migrated_pg_url):
        yield
