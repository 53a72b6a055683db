"""Where an authenticated request's time goes: token checks against the rest, in one run.

Measures, in this process, the cost per call of each step of ``GET /api/v2/users/me``:
verifying a JWT (first sight and remembered), the revocation check on the in-process bus
and on Redis, the rate-limit decision in process and on Redis, and reading the user
row through Tortoise (SQLite, or ``--database-url``: give it a database of its own).
Prints medians of several rounds.

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

from tortoise import Tortoise

from coinlink.accounts.service import AccountService
from coinlink.accounts.tokens import TokenService
from coinlink.bus import Bus, MemoryBus, RedisBus
from coinlink.db import apply_migrations, tortoise_config
from coinlink.ratelimit import Rate, RateLimiter
from config import load_settings
from models.accounts import User


async def per_call_us(step: Callable[[], Awaitable[Any]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await step()
    return (time.perf_counter() - started) / calls * 1e6


async def user_row(database_url: str, calls: int) -> float:
    await apply_migrations(database_url)
    await Tortoise.init(config=tortoise_config(database_url))
    try:
        user = await User.create(email=f"bench-{uuid.uuid4().hex}@example.com", password_hash="x")
        await User.get_or_none(id=user.id)  # warm
        return await per_call_us(lambda: User.get_or_none(id=user.id), calls)
    finally:
        await Tortoise.close_connections()


async def revocation_check(bus: Bus, tokens: TokenService, calls: int) -> float:
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


async def limiter(redis_url: str | None, calls: int) -> float:
    rate = Rate(10**9, 60)
    rl = RateLimiter(redis_url, prefix=f"bench{uuid.uuid4().hex[:6]}:rl:")
    await rl.start()
    try:
        key = str(uuid.uuid4())
        return await per_call_us(lambda: rl.hit("user", rate, key), calls)
    finally:
        await rl.close()


async def one_round(args: argparse.Namespace, tmp: str) -> dict[str, float]:
    settings = load_settings(env="test", jwt_secret="b" * 16 + "ench-secret-0123456789abcdef")
    tokens = TokenService(settings)
    token = tokens.issue_access(str(uuid.uuid4()), str(uuid.uuid4())).token
    figures: dict[str, float] = {}

    started = time.perf_counter()
    for _ in range(2000):
        TokenService(settings).decode_access(token)  # a fresh service: nothing remembered
    figures["jwt verify (first sight)"] = (time.perf_counter() - started) / 2000 * 1e6
    started = time.perf_counter()
    for _ in range(20000):
        tokens.decode_access(token)
    figures["jwt verify (remembered)"] = (time.perf_counter() - started) / 20000 * 1e6

    figures["revocation check, memory bus"] = await revocation_check(MemoryBus(), tokens, 20000)
    figures["rate limit, in process"] = await limiter(None, 20000)
    if args.redis_url:
        bus = RedisBus(args.redis_url, prefix=f"bench{uuid.uuid4().hex[:6]}:")
        figures["revocation check, redis"] = await revocation_check(bus, tokens, 2000)
        figures["rate limit, redis"] = await limiter(args.redis_url, 2000)
    # One backend per process: Tortoise does not switch dialects within a process.
    url = args.database_url or f"sqlite://{tmp}/bench.sqlite3"
    figures[f"user row, {url.split(':', 1)[0]}"] = await user_row(url, 2000)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="coinlink-bench-") as tmp:
        for _ in range(args.rounds):
            rounds.append(asyncio.run(one_round(args, tmp)))
    print(f"median of {args.rounds} rounds, microseconds per call (one process, one core)")
    for name in rounds[0]:
        print(f"  {name:32s} {statistics.median(r[name] for r in rounds):8.1f}")


if __name__ == "__main__":
    main()
