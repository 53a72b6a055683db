"""A fake Sentry ingest on 127.0.0.1: takes the SDK's envelope POSTs and keeps them.

The SDK posts to ``/api/<project>/envelope/``, brotli-compressed when the ``brotli`` module
is installed (the test environment has it, through Locust), else gzip; an encoding the
ingest cannot read is refused and the test waiting for the event fails. An envelope is a
JSON header line, then items: a JSON item header line and its payload (``length`` bytes
when the header says so, else up to the next newline).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import brotli
import orjson

PROJECT = "42"
KEY = "publickey"


@dataclass(frozen=True)
class Item:
    headers: dict[str, Any]
    payload: bytes


@dataclass(frozen=True)
class Envelope:
    raw: bytes
    """The decompressed body, exactly as the SDK serialised it."""
    headers: dict[str, Any]
    items: list[Item]


def parse_envelope(raw: bytes) -> Envelope:
    header_line, _, rest = raw.partition(b"\n")
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_headers = orjson.loads(item_line)
        if "length" in item_headers:
            length = int(item_headers["length"])
            payload, rest = rest[:length], rest[length:].removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append(Item(item_headers, payload))
    return Envelope(raw, orjson.loads(header_line), items)


_DECODERS = {
    "": lambda body: body,
    "identity": lambda body: body,
    "br": brotli.decompress,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


class SentryIngest(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _IngestHandler)
        self._lock = threading.Lock()
        self._envelopes: list[Envelope] = []

    @property
    def dsn(self) -> str:
        return f"http://{KEY}@127.0.0.1:{self.server_address[1]}/{PROJECT}"

    def keep(self, envelope: Envelope) -> None:
        with self._lock:
            self._envelopes.append(envelope)

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def events(self) -> list[dict[str, Any]]:
        """Every error event received, in order of arrival."""
        return [
            orjson.loads(item.payload)
            for envelope in self.envelopes()
            for item in envelope.items
            if item.headers.get("type") == "event"
        ]

    def raw(self) -> bytes:
        """Everything received, decompressed: what a leak would be found in."""
        return b"\n".join(envelope.raw for envelope in self.envelopes())


class _IngestHandler(BaseHTTPRequestHandler):
    server: SentryIngest

    def do_POST(self) -> None:
        if self.path.split("?")[0] != f"/api/{PROJECT}/envelope/":
            self.send_error(404)
            return
        if f"sentry_key={KEY}" not in self.headers.get("x-sentry-auth", ""):
            self.send_error(401)
            return
        decode = _DECODERS.get(self.headers.get("content-encoding", "").lower())
        if decode is None:
            self.send_error(415)
            return
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.keep(parse_envelope(decode(body)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's output is for the server's log lines


@contextmanager
def sentry_ingest() -> Iterator[SentryIngest]:
    ingest = SentryIngest()
    thread = threading.Thread(target=ingest.serve_forever, daemon=True)
    thread.start()
    try:
        yield ingest
    finally:
        ingest.shutdown()
        ingest.server_close()
        thread.join(5)
