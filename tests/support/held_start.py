"""``python -m tests.support.held_start serve ...``: ``coinlink serve`` whose workers, while
starting, connect to ``$GATE_ENV`` (``host:port``) and wait there until the test answers:
a test holds a server between its main process binding the port and a worker serving."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from sanic import Sanic

from coinlink import app, cli

GATE_ENV = "TEST_START_GATE"
MODULE = "tests.support.held_start"


def create_app() -> Sanic[Any, Any]:
    """Called by Sanic in the main process and in each worker."""
    held = app.create_app()

    async def wait_at_the_gate(_: Sanic[Any, Any]) -> None:
        host, port = os.environ[GATE_ENV].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        await reader.read(1)  # the test's answer (or its closing the gate)
        writer.close()

    held.register_listener(wait_at_the_gate, "before_server_start")
    return held


if __name__ == "__main__":
    # Imported by its own name, so that workers find the factory (``__main__`` is not it).
    from tests.support import held_start

    sys.exit(cli.main(sys.argv[1:], app_factory=held_start.create_app))
