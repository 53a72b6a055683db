"""Sentry, initialised in each worker when a DSN is configured; no PII leaves the process.

Automatic integrations are off: the error handler reports each 500 itself, tagged with the
trace id the client was given, so there is one event per failure and nothing from request
bodies, headers or cookies is attached. Errors the stdlib logs (Sanic's own) are reported
through the logging integration, without breadcrumbs.
"""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from coinlink import __version__


def _scrub(event: Any, _hint: Any) -> Any:
    """Belt and braces: whatever an integration attached about the request or user goes."""
    event.pop("request", None)
    event.pop("user", None)
    event.pop("breadcrumbs", None)
    return event


def init_sentry(dsn: str, environment: str) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=f"coinlink@{__version__}",
        send_default_pii=False,
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[
            DedupeIntegration(),
            LoggingIntegration(level=None, event_level=logging.ERROR),
        ],
        before_send=_scrub,
        max_breadcrumbs=0,
        include_local_variables=False,  # locals of a handler may hold passwords or tokens
        traces_sample_rate=0.0,
    )


def report_exception(exception: BaseException, trace_id: str, route: str) -> None:
    if not sentry_sdk.is_initialized():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("trace_id", trace_id)
        scope.set_tag("route", route)
        scope.capture_exception(exception)
