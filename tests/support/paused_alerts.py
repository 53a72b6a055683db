"""``python -m tests.support.paused_alerts serve ...``: ``coinlink serve`` with a pause of
``$PAUSE_ENV`` seconds between an alert firing's commit and its publish, a window in which a
test kills the leader or Redis. Fault injection through the app factory, not the settings."""

from __future__ import annotations

import os
import sys
from typing import Any

from sanic import Sanic

from coinlink import app, cli

PAUSE_ENV = "TEST_ALERT_PAUSE_S"
MODULE = "tests.support.paused_alerts"


def create_app() -> Sanic[Any, Any]:
    """Called by Sanic in the main process and in each worker."""
    return app.create_app(alert_pause_s=float(os.environ[PAUSE_ENV]))


if __name__ == "__main__":
    # Imported by its own name, so that workers find the factory (``__main__`` is not it).
    from tests.support import paused_alerts

    sys.exit(cli.main(sys.argv[1:], app_factory=paused_alerts.create_app))
