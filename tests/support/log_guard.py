"""Error-level log lines fail the test that caused them, unless it says it expects them.

A test that expects some (a dependency it stops on purpose, a 500 it provokes) names their
events: ``@pytest.mark.expected_errors("unhandled_exception")``. The suite's autouse fixture
reads the test's captured output, every server process checks its own log when it stops.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Protocol

import orjson


class Checked(Protocol):
    def unexpected_errors(self) -> list[str]: ...

    def stopped(self) -> bool: ...


STARTED: list[Checked] = []
"""Server processes not yet checked; the suite's fixtures check each once it has stopped."""

EXPECTED: set[str] = set()
"""The events the running test expects at error level (set by the autouse fixture)."""

SANIC_WEBSOCKET_TASKS: tuple[str, ...] = (
    "Task was destroyed but it is pending!*coro=<WebsocketImplProtocol.*",
)
"""Sanic's WebSocket protocol starts tasks nobody keeps (one per received chunk, the
keepalive ping): those still waiting when the process stops (the chunks of a client that
flooded, a ping to a client that went silent) are destroyed pending, and asyncio logs each
at error level. A server whose test provokes that names this."""

REDIS_GONE: tuple[str, ...] = ("Unclosed Pipeline client*",)
"""redis-py leaves a pipeline unclosed when Redis vanishes under it and reports it at error
level from the garbage collector (not our code's log). A test that stops Redis under a
server names this."""

_LEVELS = frozenset({"error", "critical", "exception"})
# structlog's console renderer: "<time> [error    ] event key=value".
_CONSOLE = re.compile(r"\[(error|critical|exception)\s*\]\s+(\S+)")
# pytest's captured stdlib records: "ERROR    logger:file.py:12 message".
_PYTEST_RECORD = re.compile(r"^(ERROR|CRITICAL)\s+\S+:\d+ (.*)$")


def error_events(output: str) -> list[tuple[str, str]]:
    """(event, line) of every error-level line, JSON or console."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and str(record.get("level")).lower() in _LEVELS:
                found.append((str(record.get("event")), line))
            continue
        match = _CONSOLE.search(line)
        if match:
            found.append((match[2], line))
            continue
        record = _PYTEST_RECORD.match(line)
        if record:
            found.append((record[2], line))
    return found


def check_stopped() -> list[str]:
    """Unexpected error lines of every started server that has stopped (each checked once)."""
    bad: list[str] = []
    for server in [s for s in STARTED if s.stopped()]:
        STARTED.remove(server)
        bad += server.unexpected_errors()
    return bad


def unexpected(output: str, also_expected: tuple[str, ...] = ()) -> list[str]:
    """Error lines whose event matches no expected one (an event name, or a glob with *)."""
    allowed = EXPECTED | set(also_expected)
    return [
        line
        for event, line in error_events(output)
        if not any(fnmatch.fnmatchcase(event, pattern) for pattern in allowed)
    ]
