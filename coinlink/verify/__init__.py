"""``coinlink verify``: checks a live deployment from outside, as its clients use it.

The checks run in order (later ones use what earlier ones set up: the throwaway user of
``auth-round-trip`` is the alert's owner) and the run fails when any check fails.
"""

from __future__ import annotations

import asyncio

from coinlink.verify import http_checks, realtime_checks
from coinlink.verify.latency import latency
from coinlink.verify.report import Display, as_json, quiet
from coinlink.verify.runner import Step, Target, run

STEPS = [
    Step("health", http_checks.health, 5),
    Step("readiness", http_checks.readiness, 8),
    Step("security-headers", http_checks.security_headers, 5),
    Step("cors", http_checks.cors, 5),
    Step("rate-limit-headers", http_checks.rate_limit_headers, 5),
    Step("auth-round-trip", http_checks.auth_round_trip, 10),
    Step("websocket", realtime_checks.websocket, 15),
    Step("alert", realtime_checks.alert, 20),
    Step("metrics-not-public", http_checks.metrics_not_public, 5),
    Step("latency", latency, 15),
]

__all__ = ["Target", "verify"]


def verify(target: Target, json_output: bool) -> bool:
    """Run every check against ``target`` and show the results; whether all passed (or
    were skipped)."""
    if json_output:
        results = asyncio.run(run(target, STEPS, quiet, quiet))
        print(as_json(results))
    else:
        with Display(target.url) as display:
            results = asyncio.run(run(target, STEPS, display.started, display.done))
        display.table(results)
    return all(result.status != "fail" for result in results)
