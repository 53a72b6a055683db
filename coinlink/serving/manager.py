"""The main process of ``coinlink serve``: Sanic's worker manager, adapted in three ways.

* SIGTERM is passed on to the workers as SIGTERM, so each one drains
  (:mod:`coinlink.serving.drain`); Sanic would send SIGINT, which stops them at once.
  SIGINT (Ctrl-C) keeps Sanic's immediate stop, and a second signal still kills.
* A stop signal while the workers start no longer leaves the manager waiting forever for
  acknowledgements that cannot come (sanic-org/sanic#2997): it stops the workers and exits.
* ``workers_started`` is logged once every worker serves: no other line says so ("Worker
  ready" is logged by each worker, and Sanic's manager waits only for acknowledgements,
  which come before a worker serves).
  The manager then closes its own copy of the listening socket, which it never accepts on
  (Sanic restarts no worker that dies): the socket closes with the last worker to stop
  accepting, so a stopping server refuses new connections then, not once it has exited, and
  one whose workers all died refuses them rather than queueing them unanswered.

Sanic internals (``WorkerManager``: ``wait_for_ack``, ``worker_state`` and its ``serving``,
``_shutting_down``, ``monitor_subscriber``/``monitor_publisher``, ``shutdown_signal``):
checked against ``CHECKED_VERSIONS`` by ``tests/unit/test_serving_adapters.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType
from typing import Any

import structlog
from sanic import Sanic
from sanic.worker.manager import WorkerManager

from coinlink.serving.listener import listening_socket

log = structlog.get_logger(logger_name="coinlink.serving.manager")

CHECKED_VERSIONS = {"sanic": ">=25.12,<26"}
_POLL_S = 0.1
_TERMINATE_EARLY = "__TERMINATE_EARLY__"  # what a worker sends when its start-up failed
_deferred: list[int] = []  # a stop signal that came before the manager was adapted


def defer_stop_signals() -> None:
    """Until :func:`adapt` runs, remember SIGTERM rather than act on it: it interrupts
    nothing half-way (a migration, Sanic's start-up); see :func:`stop_requested`, and the
    adapted manager stops at once."""
    signal.signal(signal.SIGTERM, lambda signum, frame: _deferred.append(signum))


def stop_requested() -> bool:
    """Whether a SIGTERM came while it was deferred."""
    return bool(_deferred)


def adapt(app: Sanic[Any, Any]) -> None:
    """For ``app.main_process_ready``: adapt the manager that is about to start the workers."""
    manager: WorkerManager = app.manager
    sanic_signal = manager.shutdown_signal

    signalled: set[int] = set()

    def stop_workers() -> None:
        # Once each: a second SIGTERM could cut a worker's exit short (after its loop closes,
        # SIGTERM is fatal again).
        for process in manager.processes:
            if process.pid is not None and process.pid not in signalled:
                signalled.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGTERM or manager._shutting_down:
            sanic_signal(signum, frame)
            return
        log.info("stopping", signal="SIGTERM")
        manager._shutting_down = True
        stop_workers()
        manager.monitor_publisher.send(None)  # ends the monitor loop: no restarts now

    def serving() -> bool:
        # Serving (Sanic's set_serving, after every after_server_start listener) rather than
        # acknowledged (before the server exists): from here each worker drains on SIGTERM.
        states = [state for state in manager.worker_state.values() if state.get("server")]
        return len(states) == manager.num_server and all(s.get("serving") for s in states)

    def wait_for_ack() -> None:
        held: list[Any] = []  # messages for the monitor loop, passed on once it runs
        try:
            acked = wait(held)
        finally:
            for message in held:
                manager.monitor_publisher.send(message)
        if acked:
            log.info("workers_started", workers=manager.num_server)
            sock = listening_socket(app)
            if sock is not None:
                sock.close()

    def wait(held: list[Any]) -> bool:
        misses = 0
        while not serving():
            if manager._shutting_down:
                stop_workers()  # one started after the signal has not had it yet
                return False
            if manager.monitor_subscriber.poll(_POLL_S):
                message = manager.monitor_subscriber.recv()
                if message == _TERMINATE_EARLY:
                    misses = manager.THRESHOLD
                else:
                    held.append(message)
            misses += 1
            if misses > manager.THRESHOLD:
                log.error("workers_did_not_start", workers=manager.num_server)
                manager.kill()
        return True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if _deferred:
        on_signal(_deferred.pop(), None)
    # An instance attribute over the method: monitor() calls self.wait_for_ack().
    manager.wait_for_ack = wait_for_ack  # type: ignore[method-assign]
