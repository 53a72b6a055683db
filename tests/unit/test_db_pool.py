"""The ORM's connection pool on PostgreSQL: a released connection is handed out again
without a reset round trip, and an open transaction never survives its release."""

from __future__ import annotations

import pytest
from tortoise import connections

from models.accounts import User


@pytest.mark.usefixtures("db")
# asyncpg's own complaint about the transaction this test leaves open on purpose.
@pytest.mark.expected_errors("Resetting connection with an active transaction*")
async def test_a_released_connection_costs_no_round_trip_and_keeps_no_transaction() -> None:
    client = connections.get("default")
    pool = client._pool
    sent: list[str] = []
    async with pool.acquire() as con:
        con.add_query_logger(lambda record: sent.append(record.query))
        await con.execute("BEGIN")
        await con.execute("CREATE TEMP TABLE left_open (n int)")
    # asyncpg rolled the transaction back (its own step); no RESET ALL / UNLISTEN was sent.
    assert [q for q in sent if "RESET" in q or "UNLISTEN" in q] == []
    assert "ROLLBACK" in sent
    async with pool.acquire() as again:
        assert await again.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    assert await User.all().count() == 0  # the ORM still works through the same pool
