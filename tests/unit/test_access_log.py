"""The access-log line written directly equals the one structlog's processor chain renders."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import select
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from coinlink.observability import logging as obs_logging

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


class FakeStdout(io.TextIOWrapper):
    """What ``sys.stdout`` offers configure_logging: text with a binary ``buffer``."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", write_through=True)

    def lines(self) -> list[dict[str, Any]]:
        self.flush()
        raw = self.buffer.getvalue().decode()  # type: ignore[attr-defined]
        return [json.loads(line) for line in raw.splitlines()]


Configure = Callable[[str, str], FakeStdout]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """configure_logging() writing to a buffer; the previous set-up restored afterwards."""
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    monkeypatch.setattr(obs_logging, "_access", obs_logging._access)

    def configure(level: str, fmt: str) -> FakeStdout:
        # Inside the test: pytest's output capture replaces sys.stdout when the test starts.
        fake = FakeStdout()
        monkeypatch.setattr(sys, "stdout", fake)
        obs_logging.configure_logging(level, fmt)
        return fake

    yield configure
    structlog.configure(**saved_config)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def log_both_ways() -> None:
    fields: dict[str, Any] = {
        "method": "GET",
        "path": "/api/v2/market/tickers/BTC-USD",
        "route": "/api/v2/market/tickers/<symbol>",
        "status": 200,
        "duration_ms": 1.23,
    }
    # A fresh structlog logger: the module's own may be cached on an earlier stream.
    structlog.get_logger(logger_name="coinlink.access").info("request", **fields)
    obs_logging.access(*fields.values())


def test_direct_json_line_matches_structlogs(configure: Configure) -> None:
    stdout = configure("info", "json")
    obs_logging.bind_request_context(trace_id="trace-1")
    log_both_ways()
    via_structlog, direct = stdout.lines()
    assert isinstance(obs_logging._access, obs_logging._AccessLine)
    # Same keys in the same order, same values; only the clock moved in between.
    assert list(direct) == list(via_structlog)
    assert list(direct)[:8] == [
        "method",
        "path",
        "route",
        "status",
        "duration_ms",
        "event",
        "logger",
        "trace_id",
    ]
    timestamps = via_structlog.pop("timestamp"), direct.pop("timestamp")
    assert direct == via_structlog
    assert direct["logger"] == "coinlink.access" and direct["trace_id"] == "trace-1"
    assert all(ISO_UTC.fullmatch(t) for t in timestamps)


def test_a_sensitive_request_context_value_is_redacted(configure: Configure) -> None:
    stdout = configure("info", "json")
    obs_logging.bind_request_context(trace_id="t", token="secret-value")
    log_both_ways()
    via_structlog, direct = stdout.lines()
    assert direct["token"] == via_structlog["token"] == "[redacted]"


def test_no_access_line_when_info_is_filtered_out(configure: Configure) -> None:
    stdout = configure("warning", "json")
    log_both_ways()
    assert stdout.lines() == []


def test_console_format_keeps_structlogs_path(configure: Configure) -> None:
    stdout = configure("info", "console")
    obs_logging.bind_request_context(trace_id="trace-2")
    obs_logging.access("GET", "/x", "/x", 200, 1.0)
    stdout.flush()
    text = stdout.buffer.getvalue().decode()
    assert "request" in text and "trace-2" in text and "/x" in text


def test_a_value_of_bytes_that_are_not_utf8_is_written_escaped(configure: Configure) -> None:
    # Sanic decodes such request bytes to surrogates; orjson refused them, and the logging
    # call raised inside whatever was logging (an error handler: a bare 500, no line).
    out = configure("info", "json")
    structlog.get_logger("t").warning("odd_header", value="a\udcffb", items=["\udcfe"])
    logging.getLogger("sanic.error").warning("quoted: %s", "\udcfd")
    [line, stdlib_line] = out.lines()
    assert line["value"] == "a\\udcffb" and line["items"] == ["\\udcfe"]
    assert stdlib_line["event"] == "quoted: \\udcfd"


class Writes(io.BytesIO):
    """A binary stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return super().write(data)


async def test_a_loop_turns_lines_are_written_together_when_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Writes()
    monkeypatch.setattr(obs_logging, "_access", obs_logging._AccessLine(stream, 1))
    for path in ("/a", "/b", "/c"):
        obs_logging.access("GET", path, path, 200, 1.0)
    assert stream.writes == []  # held until the turn ends
    await asyncio.sleep(0)
    [written] = stream.writes
    assert [json.loads(line)["path"] for line in written.splitlines()] == ["/a", "/b", "/c"]


async def test_a_busy_turns_lines_go_out_in_whole_lines_of_at_most_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers share one stdout pipe, which keeps a write whole only up to PIPE_BUF."""
    stream = Writes()
    monkeypatch.setattr(obs_logging, "_access", obs_logging._AccessLine(stream, 1))
    paths = [f"/api/v2/market/tickers/{i:04d}" for i in range(100)]
    for path in paths:
        obs_logging.access("GET", path, path, 200, 1.0)
    await asyncio.sleep(0)
    assert 1 < len(stream.writes) < len(paths)
    assert all(len(w) <= select.PIPE_BUF and w.endswith(b"\n") for w in stream.writes)
    lines = b"".join(stream.writes).splitlines()
    assert [json.loads(line)["path"] for line in lines] == paths
