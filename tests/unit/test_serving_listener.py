"""The listening socket of a stopping server: queued connections are kept, new ones wait
for the socket to close and are then refused (never accepted and cut)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from coinlink.serving.listener import refuse_new_connections


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def connect(port: int, timeout: float) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def test_a_connection_queued_before_is_accepted_and_keeps_its_request(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    with connect(port, 2) as client:
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert refuse_new_connections(listener)
        accepted, _ = listener.accept()
        with accepted:
            accepted.settimeout(2)
            assert accepted.recv(100) == b"GET / HTTP/1.1\r\n\r\n"


def test_a_new_connection_is_not_completed_then_refused_once_the_socket_closes(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    assert refuse_new_connections(listener)
    # Its SYN is dropped: the handshake never completes, so nothing can be cut later.
    with pytest.raises(TimeoutError):
        connect(port, 0.3).close()
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        connect(port, 2).close()
