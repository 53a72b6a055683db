"""Where an authenticated request's time goes: token checks against the rest, in one run.

Measures, in this process, the cost per call of each step of ``GET /api/v2/users/me``:
verifying a JWT (first sight and remembered), the revocation check on the in-process bus
and on Redis, the rate-limit decision in process and on Redis, and reading the user
row through Tortoise (SQLite, or ``--database-url``: give it a database of its own).
Prints medians of several rounds: wall time (round trips count) and this process's CPU
time (``time.process_time``, what the worker pays; it moves less on a shared machine).

    .venv/bin/python -m bench.auth [--redis-url URL] [--database-url URL] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tortoise import Tortoise, connections

from coinlink.accounts.service import AccountService
from coinlink.accounts.tokens import TokenService
from coinlink.bus import Bus, MemoryBus, RedisBus
from coinlink.db import apply_migrations, tortoise_config
from coinlink.ratelimit import Rate, RateLimiter
from config import load_settings
from models.accounts import User

Figure = tuple[float, float]  # (wall, CPU) µs per call


async def per_call_us(step: Callable[[], Awaitable[Any]], calls: int) -> Figure:
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await step()
    return (
        (time.perf_counter() - started) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


def per_call_sync(step: Callable[[], Any], calls: int) -> Figure:
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        step()
    return (
        (time.perf_counter() - started) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


async def user_row(database_url: str, calls: int) -> dict[str, Figure]:
    """The user row through Tortoise, and the same read as one SQL query on Tortoise's
    connection (no query building, no model object): what the ORM itself costs."""
    await apply_migrations(database_url)
    await Tortoise.init(config=tortoise_config(database_url))
    try:
        user = await User.create(email=f"bench-{uuid.uuid4().hex}@example.com", password_hash="x")
        await User.get_or_none(id=user.id)  # warm
        db = connections.get("default")
        sql = "SELECT id, email, display_name, is_admin, created_at FROM users WHERE id = $1"
        if database_url.startswith("sqlite"):
            sql = sql.replace("$1", "?")
        user_id = str(user.id)
        await db.execute_query_dict(sql, [user_id])
        kind = database_url.split(":", 1)[0]
        return {
            f"user row, Tortoise, {kind}": await per_call_us(
                lambda: User.get_or_none(id=user.id), calls
            ),
            f"user row, one SQL query, {kind}": await per_call_us(
                lambda: db.execute_query_dict(sql, [user_id]), calls
            ),
        }
    finally:
        await Tortoise.close_connections()


async def revocation_check(bus: Bus, tokens: TokenService, calls: int) -> Figure:
    await bus.start()
    try:
        settings = load_settings(env="test")
        accounts = AccountService(settings, tokens, bus)
        claims = tokens.decode_access(
            tokens.issue_access(str(uuid.uuid4()), str(uuid.uuid4())).token
        )
        # Only the bus part: the database re-check runs at most every 5 s per session.
        accounts._session_cache[claims.session_id] = (True, time.monotonic() + 3600)
        return await per_call_us(lambda: accounts.access_allowed(claims), calls)
    finally:
        await bus.close()


async def limiter(redis_url: str | None, calls: int) -> Figure:
    rate = Rate(10**9, 60)
    rl = RateLimiter(redis_url, prefix=f"bench{uuid.uuid4().hex[:6]}:rl:")
    await rl.start()
    try:
        key = str(uuid.uuid4())
        return await per_call_us(lambda: rl.hit("user", rate, key), calls)
    finally:
        await rl.close()


async def one_round(args: argparse.Namespace, tmp: str) -> dict[str, Figure]:
    settings = load_settings(env="test", jwt_secret="b" * 16 + "ench-secret-0123456789abcdef")
    tokens = TokenService(settings)
    token = tokens.issue_access(str(uuid.uuid4()), str(uuid.uuid4())).token
    figures: dict[str, Figure] = {}

    # A fresh service each time: nothing remembered.
    figures["jwt verify (first sight)"] = per_call_sync(
        lambda: TokenService(settings).decode_access(token), 2000
    )
    figures["jwt verify (remembered)"] = per_call_sync(lambda: tokens.decode_access(token), 20000)

    figures["revocation check, memory bus"] = await revocation_check(MemoryBus(), tokens, 20000)
    figures["rate limit, in process"] = await limiter(None, 20000)
    if args.redis_url:
        bus = RedisBus(args.redis_url, prefix=f"bench{uuid.uuid4().hex[:6]}:")
        figures["revocation check, redis"] = await revocation_check(bus, tokens, 2000)
        figures["rate limit, redis"] = await limiter(args.redis_url, 2000)
    # One backend per process: Tortoise does not switch dialects within a process.
    url = args.database_url or f"sqlite://{tmp}/bench.sqlite3"
    figures.update(await user_row(url, 2000))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds: list[dict[str, Figure]] = []
    with tempfile.TemporaryDirectory(prefix="coinlink-bench-") as tmp:
        for _ in range(args.rounds):
            rounds.append(asyncio.run(one_round(args, tmp)))
    print(f"median of {args.rounds} rounds, microseconds per call (one process, one core)")
    print(f"  {'step':40s} {'wall':>8s} {'CPU':>8s}")
    for name in rounds[0]:
        wall = statistics.median(r[name][0] for r in rounds)
        cpu = statistics.median(r[name][1] for r in rounds)
        print(f"  {name:40s} {wall:8.1f} {cpu:8.1f}")


if __name__ == "__main__":
    main()
