"""Readiness checks: each dependency answers within its deadline or the instance is not ready."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from tortoise.connection import get_connection

from coinlink.bus import Bus

Check = Callable[[], Awaitable[dict[str, Any]]]


async def _timed(check: Check, timeout_s: float) -> dict[str, Any]:
    started = perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            result = {"status": "ok", **await check()}
    except TimeoutError:
        result = {"status": "fail", "error": f"no answer within {timeout_s} s"}
    except Exception as exc:  # every failure is a report, never a 500
        result = {"status": "fail", "error": type(exc).__name__}
    result["latency_ms"] = round((perf_counter() - started) * 1000, 2)
    return result


async def database_check() -> dict[str, Any]:
    connection = get_connection("default")
    await connection.execute_query("SELECT 1")
    return {"backend": connection.capabilities.dialect}


def bus_check(bus: Bus) -> Check:
    async def check() -> dict[str, Any]:
        await bus.ping()
        return {"backend": bus.backend}

    return check


async def run_checks(checks: dict[str, Check], timeout_s: float) -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently; ready only when all pass."""
    names = list(checks)
    results = await asyncio.gather(*(_timed(checks[n], timeout_s) for n in names))
    report = dict(zip(names, results, strict=True))
    return all(r["status"] == "ok" for r in results), report
