"""The listening socket: it starts listening with the first worker that serves, and stops
without cutting a connection the kernel already accepted.

Sanic's main process binds and listens before its workers exist, so connections that come
while they start (seconds, more on a loaded machine) wait in the queue unanswered: a proxy
in front cannot tell a starting instance from a working one. :func:`bound_socket` only
binds: a connection attempt is refused until a worker's server listens on the socket (the
event loop's ``create_server`` does), so a proxy tries another instance at once.

Closing a listening socket resets every connection still in its accept queue: a client
whose handshake completed gets its request cut (an nginx in front answers 502 for a POST
it may not retry). So a stopping server first makes the kernel drop new connection
attempts (SYN) at the socket, keeps accepting what is already queued or mid-handshake for
a moment, and only then closes. A client whose SYN was dropped retries it (after 1 s on
Linux) and is refused once the socket is gone: refused at connect, never accepted and cut.

Linux only (a classic BPF socket filter); elsewhere the socket closes as before.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Any

import structlog
from sanic import Sanic

log = structlog.get_logger(logger_name="coinlink.serving.listener")

_SO_ATTACH_FILTER = 26
# On a TCP socket the filter sees the TCP header at offset 0; byte 13 holds the flags.
_DROP_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]
    (0x45, 1, 0, 0x02),  # jset #SYN: to "drop", else to "keep"
    (0x06, 0, 0, 0xFFFFFFFF),  # keep: the whole packet
    (0x06, 0, 0, 0),  # drop
)


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for the workers to listen on (not listening yet)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)  # the workers get it
    return sock


def listening_socket(app: Sanic[Any, Any]) -> socket.socket | None:
    """The socket this worker accepts on (shared with the main process and other workers)."""
    for info in app.state.server_info:
        sock = info.settings.get("sock")
        if isinstance(sock, socket.socket):
            return sock
    return None


def refuse_new_connections(sock: socket.socket) -> bool:
    """Drop new connection attempts at ``sock`` for every process sharing it; connections
    already queued or mid-handshake still complete. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    code = b"".join(struct.pack("HBBI", *op) for op in _DROP_SYN)
    program = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(program))
    try:
        # The kernel copies the program: the buffer need not outlive the call.
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        log.warning("listener_filter_refused", error=str(exc))
        return False
    return True
