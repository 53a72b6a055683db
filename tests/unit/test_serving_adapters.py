"""The adapters of ``coinlink serve`` to Sanic's internals still fit the installed Sanic.

Their behaviour is tested on real processes (tests/integration/test_shutdown.py: a stop at
each moment of start-up, the drain finishing requests on their way); these tests name the
adapter when an upgrade moves what it relies on."""

from __future__ import annotations

import inspect

from sanic.http import Http
from sanic.mixins.startup import StartupMixin
from sanic.server.protocols.http_protocol import HttpProtocol
from sanic.server.protocols.websocket_protocol import WebSocketProtocol
from sanic.worker.manager import WorkerManager
from sanic.worker.multiplexer import WorkerMultiplexer
from sanic.worker.process import WorkerProcess

from coinlink.serving import manager, protocol, request_heads
from tests.support.adapters import check_signature, check_versions


def test_sanic_is_a_version_the_adapters_were_checked_against() -> None:
    check_versions(manager)
    check_versions(protocol)
    check_versions(request_heads)


def test_the_worker_manager_internals_are_where_the_manager_adapter_expects() -> None:
    check_signature(manager, WorkerManager.shutdown_signal, "(self, signal, frame)")
    check_signature(manager, WorkerManager.wait_for_ack, "(self)")
    check_signature(manager, WorkerMultiplexer.set_serving, "(self, serving: bool) -> None")
    assert '"serving": serving' in inspect.getsource(WorkerMultiplexer.set_serving)
    check_signature(manager, WorkerManager.kill, "(self)")
    # The monitor loop polls its pipe each turn: the adapter makes those polls unhurried.
    assert "self.monitor_subscriber.poll(0.1)" in inspect.getsource(WorkerManager._poll_monitor)
    assert WorkerManager.THRESHOLD == WorkerProcess.THRESHOLD, "the start-up wait changed"
    # The state manager is made by the module's Manager, which the adapter replaces.
    assert "sync_manager = Manager()" in inspect.getsource(StartupMixin.serve)


def test_the_protocol_internals_are_where_the_protocol_adapter_expects() -> None:
    check_signature(protocol, WebSocketProtocol.close_if_idle, "(self)")
    check_signature(protocol, WebSocketProtocol.connection_made, "(self, transport)")
    check_signature(protocol, WebSocketProtocol.data_received, "(self, data)")
    assert "recv_buffer" in HttpProtocol.__slots__, "unparsed request bytes moved"
    check_signature(protocol, WebSocketProtocol.connection_lost, "(self, exc)")
    check_signature(protocol, WebSocketProtocol.eof_received, "(self) -> bool | None")
    check_signature(
        protocol,
        WebSocketProtocol.websocket_handshake,
        "(self, request, subprotocols: collections.abc.Sequence[str] | None = None)",
    )
    assert "_callback_check_timeouts" in HttpProtocol.__slots__, "Sanic's timer moved"
    # The read bound reads the connection's stage and body state and answers through
    # Http.exception, as Sanic's own timeout check does.
    timeouts = inspect.getsource(HttpProtocol.check_timeouts)
    assert "self._http.exception = RequestTimeout" in timeouts, "timeouts answer differently"
    assert "self._task.cancel" in timeouts
    assert {"stage", "exception", "request_body", "upgrade_websocket"} <= set(Http.__slots__)


def test_the_head_parser_internals_are_where_the_head_check_expects() -> None:
    check_signature(request_heads, Http.__init__, "(self, protocol)")
    check_signature(request_heads, Http.http1_request_header, "(self)")
    assert {"_receive_more", "recv_buffer", "stage"} <= set(Http.__slots__)
    # The head is read inside the try whose errors are answered (and close the connection).
    http1 = inspect.getsource(Http.http1)
    assert http1.index("try:") < http1.index("await self.http1_request_header()")
    assert "await self._receive_more()" in inspect.getsource(Http.http1_request_header)
    assert protocol.FinishingProtocol.HTTP_CLASS is request_heads.HeadCheckingHttp
