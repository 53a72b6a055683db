"""What PgBouncer in transaction mode costs a query: the statement cache off, and the hop.

Reads one user row through Tortoise (``User.get_or_none``, what every authenticated
request's session check does at most every few seconds) and runs one write transaction (an
UPDATE in ``in_transaction``, the shape of a refresh rotation) in three set-ups, side by
side in each round: straight to PostgreSQL with asyncpg's statement cache (the default), straight
to PostgreSQL without it (``statement_cache_size=0``: every query is parsed again, in one
more round trip), and through a throwaway PgBouncer (Debian's, ``pool_mode = transaction``)
without it, as ``COINLINK_DATABASE_POOL_MODE=transaction`` runs. Prints the median of the
rounds: wall time and this process's CPU time per call (the client's side; the CPU figure
depends little on the machine's load).

    .venv/bin/python -m bench.pgbouncer [--server-url postgres://postgres@127.0.0.1:5432/postgres]
        [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tortoise import Tortoise
from tortoise.transactions import in_transaction

from coinlink.db import apply_migrations, tortoise_config
from config import load_settings
from models.accounts import User
from tests.support.pgbouncer import pgbouncer_in_front_of
from tests.support.services import fresh_database


async def per_call(step: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per call."""
    await step()  # warm: connection open, statement prepared where cached
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await step()
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


async def measure(url: str, calls: int) -> dict[str, tuple[float, float]]:
    await Tortoise.init(config=tortoise_config(url))
    try:
        user = await User.create(email=f"bench-{uuid.uuid4().hex}@example.com", password_hash="x")

        async def write() -> None:
            async with in_transaction():
                await User.filter(id=user.id).update(password_hash="y")

        return {
            "read": await per_call(lambda: User.get_or_none(id=user.id), calls),
            "write transaction": await per_call(write, calls // 4),
        }
    finally:
        await Tortoise.close_connections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with (
        fresh_database(args.server_url) as direct,
        pgbouncer_in_front_of(args.server_url) as bouncer,
    ):
        asyncio.run(apply_migrations(direct))
        pooled = load_settings(database_url=bouncer.url(direct), database_pool_mode="transaction")
        setups = {
            "direct, statement cache": direct,
            "direct, no statement cache": direct + "?statement_cache_size=0",
            "pgbouncer transaction mode": pooled.effective_database_url,
        }
        rounds = [
            {name: asyncio.run(measure(url, args.calls)) for name, url in setups.items()}
            for _ in range(args.rounds)
        ]
    print(f"median of {args.rounds} rounds, µs per call: wall / client CPU")
    for setup in setups:
        for step in rounds[0][setup]:
            wall = statistics.median(r[setup][step][0] for r in rounds)
            cpu = statistics.median(r[setup][step][1] for r in rounds)
            print(f"  {setup:28s} {step:18s} {wall:8.1f} / {cpu:6.1f}")


if __name__ == "__main__":
    main()
