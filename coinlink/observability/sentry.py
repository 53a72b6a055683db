"""Sentry, initialised in each worker when a DSN is configured; no PII leaves the process."""

from __future__ import annotations

from typing import Any

import sentry_sdk

from coinlink import __version__

_KEEP_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-request-id"})


def _scrub(event: Any, _hint: Any) -> Any:
    """Keep the route and trace id, drop bodies, cookies, query strings and most headers."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        request.pop("query_string", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items() if k.lower() in _KEEP_HEADERS}
    event.pop("user", None)
    return event


def init_sentry(dsn: str, environment: str) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=f"coinlink@{__version__}",
        send_default_pii=False,
        before_send=_scrub,
        traces_sample_rate=0.0,
    )
