"""The ORM for tests that call services in-process (no server around them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tortoise import Tortoise, connections

from coinlink.db import tortoise_config


@contextlib.asynccontextmanager
async def orm(database_url: str) -> AsyncIterator[None]:
    """Tortoise open on a migrated PostgreSQL database whose tables are emptied first, so a
    test sees only the rows it wrote, whatever ran before it on the same database."""
    await Tortoise.init(config=tortoise_config(database_url))
    try:
        # Every other table hangs off users (ON DELETE CASCADE); candles stand alone. DELETE,
        # not TRUNCATE: on a few rows it takes well under a millisecond, TRUNCATE ~70 ms.
        await connections.get("default").execute_script("DELETE FROM users; DELETE FROM candles")
        yield
    finally:
        await Tortoise.close_connections()
