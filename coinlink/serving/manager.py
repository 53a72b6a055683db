"""The main process of ``coinlink serve``: Sanic's worker manager, adapted in four ways.

* SIGTERM is passed on to the workers as SIGTERM, so each one drains
  (:mod:`coinlink.serving.drain`); Sanic would send SIGINT, which stops them at once.
  SIGINT (Ctrl-C) keeps Sanic's immediate stop, and a second signal still kills.
* A stop signal while the workers start no longer leaves the manager waiting forever for
  acknowledgements that cannot come (sanic-org/sanic#2997): it stops the workers and exits.
* ``workers_started`` is logged once every worker serves: no other line says so ("Worker
  ready" is logged by each worker, and Sanic's manager waits only for acknowledgements,
  which come before a worker serves). From then on its monitor loop wakes every 5 s
  when nothing happens, not ten times a second (:class:`_Unhurried`).
  The manager then closes its own copy of the listening socket, which it never accepts on
  (Sanic restarts no worker that dies): the socket closes with the last worker to stop
  accepting, so a stopping server refuses new connections then, not once it has exited, and
  one whose workers all died refuses them rather than queueing them unanswered.
* Sanic's state manager (a ``multiprocessing`` SyncManager process holding each worker's
  state) ignores SIGTERM and SIGINT: systemd, ``docker stop`` of a shell-wrapped process
  and a terminal's Ctrl-C signal the whole process group, and a manager killed by that
  made the main process fail on its next state update (a traceback, exit 1) instead of
  stopping as for a signal to itself alone. It ends when the main process shuts it down
  (Sanic does, last) or dies (Linux: the parent-death signal).

Sanic internals (``WorkerManager``: ``wait_for_ack``, ``worker_state`` and its ``serving``,
``_shutting_down``, ``monitor_subscriber``/``monitor_publisher``, ``shutdown_signal``,
``_poll_monitor``; the ``Manager`` that ``sanic.mixins.startup`` calls):
checked against ``CHECKED_VERSIONS`` by ``tests/unit/test_serving_adapters.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from multiprocessing.managers import SyncManager
from types import FrameType
from typing import Any

import structlog
from sanic import Sanic
from sanic.mixins import startup
from sanic.worker.manager import WorkerManager

from coinlink.serving.listener import listening_socket

log = structlog.get_logger(logger_name="coinlink.serving.manager")

CHECKED_VERSIONS = {"sanic": ">=25.12,<26"}
_POLL_S = 0.1
MONITOR_POLL_S = 5.0  # see _Unhurried
_TERMINATE_EARLY = "__TERMINATE_EARLY__"  # what a worker sends when its start-up failed
_deferred: list[int] = []  # a stop signal that came before the manager was adapted
_PR_SET_PDEATHSIG = 1


class _Unhurried:
    """The monitor's end of its pipe, for Sanic's monitor loop once every worker serves.

    The loop polls it every 0.1 s and after each poll reads every worker's state from the
    state manager, a round trip per worker: ~7 ms of CPU a second between the main process
    and the state manager, about half of an idle server's (0.7 ms/s when polled every
    second). Polled every 5 s instead, a message (a stop, a restart) still wakes it at
    once; only a worker's exit is recorded up to 5 s later, and nothing acts on it (nothing
    restarts workers here).
    """

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def poll(self, timeout: float = 0.0) -> bool:
        return bool(self._pipe.poll(max(timeout, MONITOR_POLL_S) if timeout else 0.0))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


def defer_stop_signals() -> None:
    """Until :func:`adapt` runs, remember SIGTERM rather than act on it: it interrupts
    nothing half-way (a migration, Sanic's start-up); see :func:`stop_requested`, and the
    adapted manager stops at once."""
    signal.signal(signal.SIGTERM, lambda signum, frame: _deferred.append(signum))


def stop_requested() -> bool:
    """Whether a SIGTERM came while it was deferred."""
    return bool(_deferred)


def keep_state_manager_through_signals() -> None:
    """Before ``Sanic.serve``: its state manager starts ignoring SIGTERM and SIGINT."""
    startup.Manager = _state_manager  # type: ignore[attr-defined]


def _state_manager() -> SyncManager:
    manager = SyncManager(ctx=multiprocessing.get_context())
    manager.start(_ignore_stop_signals)
    return manager


def _ignore_stop_signals() -> None:
    """In the state manager's process, first thing."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        # Ignoring SIGTERM, it would outlive a main process killed outright: die with it.
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def adapt(app: Sanic[Any, Any]) -> None:
    """For ``app.main_process_ready``: adapt the manager that is about to start the workers."""
    manager: WorkerManager = app.manager
    sanic_signal = manager.shutdown_signal
    pipe = manager.monitor_subscriber

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
            # Duck-typed: Sanic calls only poll and recv on it.
            manager.monitor_subscriber = _Unhurried(pipe)  # type: ignore[assignment]
            sock = listening_socket(app)
            if sock is not None:
                sock.close()

    def wait(held: list[Any]) -> bool:
        misses = 0
        while not serving():
            if manager._shutting_down:
                stop_workers()  # one started after the signal has not had it yet
                return False
            if pipe.poll(_POLL_S):  # the pipe itself: misses count tenths of a second
                message = pipe.recv()
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
