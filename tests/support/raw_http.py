"""HTTP/1.1 over a plain socket, for what HTTP clients refuse to send (raw header bytes, a
request trickled a byte at a time) and what they hide (a connection's own answer)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from typing import Any

Response = tuple[int, dict[str, str], dict[str, Any]]


def _head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers


def read_response(sock: socket.socket) -> Response:
    """Status, headers and JSON body of the next response on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = _head(head)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the whole body")
        body += chunk
    return status, headers, json.loads(body)


async def exchange(port: int, request: bytes) -> Response:
    """Send ``request`` on a new connection to ``port`` and read its response (async: an
    in-process app serves only while its loop runs)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status, headers = _head((await reader.readuntil(b"\r\n\r\n"))[:-4])
        body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    return status, headers, json.loads(body)


def client_hello() -> bytes:
    """What an HTTPS client sends first: a real TLS ClientHello."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="x")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:  # it waits for the server's answer, as it should
        return outgoing.read()
    raise AssertionError("a TLS handshake completed without a server")
