"""Readiness checks: each dependency answers within its deadline or the instance is not ready."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import orjson
from tortoise.connection import get_connection

from coinlink import channels
from coinlink.beat import sleep_to_beat
from coinlink.bus import Bus
from coinlink.observability.metrics import READINESS

Check = Callable[[], Awaitable[dict[str, Any]]]
WATCH_INTERVAL_S = 15.0


class NotReady(Exception):
    """A check's own finding, reported with its message."""


async def _timed(check: Check, timeout_s: float) -> dict[str, Any]:
    started = perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            result = {"status": "ok", **await check()}
    except TimeoutError:
        result = {"status": "fail", "error": f"no answer within {timeout_s} s"}
    except Exception as exc:  # every failure is a report, never a 500
        # Our own findings are worded for operators; others are named, not described
        # (a driver's message can carry internal addresses to a public endpoint).
        result = {
            "status": "fail",
            "error": str(exc) if isinstance(exc, NotReady) else type(exc).__name__,
        }
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


async def run_checks(
    checks: dict[str, Check], timeout_s: float, advisory: frozenset[str] = frozenset()
) -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently; ready when all but the advisory ones pass.

    An advisory check that fails is reported as ``warn``: it describes the whole service
    (no ingest leader anywhere, a lagging feed), and taking every instance out of the load
    balancer for it would only stop the reads that still work.
    """
    names = list(checks)
    results = await asyncio.gather(*(_timed(checks[n], timeout_s) for n in names))
    report = dict(zip(names, results, strict=True))
    for name in advisory & set(names):
        if report[name]["status"] == "fail":
            report[name]["status"] = "warn"
    return all(r["status"] in ("ok", "warn") for r in results), report


async def watch(
    checks: dict[str, Check], timeout_s: float, interval_s: float = WATCH_INTERVAL_S
) -> None:
    """Until cancelled: run ``checks`` every ``interval_s`` and export each outcome
    (``readiness_check_ok``), so that a failing dependency shows in the metrics whether or
    not anything calls ``/readyz``."""
    while True:
        _, report = await run_checks(checks, timeout_s)
        for name, result in report.items():
            READINESS.labels(name).set(1 if result["status"] == "ok" else 0)
        await sleep_to_beat(interval_s)


def ingest_check(bus: Bus, stale_after_s: float, *, name_leader: bool) -> Check:
    """Some worker of some instance leads ingest, and its newest tick is recent enough;
    which one (host and pid) only for ``name_leader`` (an operator)."""

    async def check() -> dict[str, Any]:
        raw = await bus.get(channels.INGEST_HEARTBEAT_KEY)
        if raw is None:
            raise NotReady("no ingest leader")
        beat = orjson.loads(raw)
        newest = beat.get("newest_tick")
        lag_s = None if newest is None else round(max(0, beat["at"] - newest) / 1000, 3)
        report: dict[str, Any] = {"lag_s": lag_s}
        if name_leader:
            report["leader"] = beat["holder"]
        if lag_s is not None and lag_s > stale_after_s:
            raise NotReady(f"newest tick is {lag_s} s old")
        return report

    return check
