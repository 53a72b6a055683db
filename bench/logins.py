"""A burst of concurrent logins from distinct addresses against ``coinlink serve``.

Starts a real server (``--workers``, bcrypt cost ``--rounds``, this database and Redis),
signs up ``--logins`` users, then sends all their logins at once, each from its own address
(``X-Forwarded-For`` from a trusted 127.0.0.1), and prints the statuses and latencies. Run
it with ``--unbounded`` for hashing without a bound (every login queues for the CPU) and
without for the configured one (``COINLINK_BCRYPT_CONCURRENCY`` / ``_WAIT_S``).

    .venv/bin/python -m bench.logins --database-url postgres://.../db --redis-url redis://...
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import time
import uuid

import httpx

from tests.support.apps import ServerProcess, instance_env

PASSWORD = "correct horse battery"  # noqa: S105 - the throwaway users of the run


async def timed_login(client: httpx.AsyncClient, email: str, n: int) -> tuple[int, float]:
    started = time.perf_counter()
    response = await client.post(
        "/api/v2/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"x-forwarded-for": f"198.51.100.{n % 250 + 1}"},
    )
    return response.status_code, time.perf_counter() - started


async def burst(base_url: str, logins: int) -> None:
    limits = httpx.Limits(max_connections=logins)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        emails = [f"burst-{uuid.uuid4().hex[:12]}@example.com" for _ in range(logins)]
        for email in emails:  # one at a time: sign-ups are not what is measured
            body = {"email": email, "password": PASSWORD, "display_name": "b"}
            while (await client.post("/api/v2/auth/register", json=body)).status_code == 503:
                await asyncio.sleep(0.5)
        results = await asyncio.gather(*(timed_login(client, e, n) for n, e in enumerate(emails)))
    statuses = collections.Counter(status for status, _ in results)
    for status in sorted(statuses):
        took = sorted(t for s, t in results if s == status)
        print(
            f"{status}: {statuses[status]:3d}  median {statistics.median(took):6.2f} s"
            f"  max {took[-1]:6.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--unbounded", action="store_true")
    args = parser.parse_args()
    bounds = {"bcrypt_concurrency": "256", "bcrypt_wait_s": "60"} if args.unbounded else {}
    env = instance_env(
        args.database_url,
        args.redis_url,
        bcrypt_rounds=str(args.rounds),
        trusted_proxies="127.0.0.1",
        **bounds,
    )
    server = ServerProcess(env, workers=args.workers).wait_ready()
    try:
        asyncio.run(burst(server.base_url, args.logins))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
