"""A server binary of the suite's own (nginx, PgBouncer) run in the foreground.

It listens on a free loopback port and keeps every file in a throwaway directory; its
stdout and stderr go to a log there, kept when the directory goes. Error-level lines of
that log fail the test (:mod:`tests.support.log_guard`), unless the test or the server
expects them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.support import log_guard
from tests.support.services import wait_for


def system_binary(name: str) -> str:
    """A Debian package's daemon, on the path or in the sbin directories (not on a plain
    user's path)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError(f"{name} is not installed; run scripts/ensure-servers.sh")
    return found


class ForegroundServer:
    """``problem``: the log's error-level lines, the message in group 1.
    ``expected_errors``: globs of messages the test provokes on purpose."""

    name = "server"
    problem: re.Pattern[str]

    def __init__(
        self, directory: Path, log: Path, port: int, expected_errors: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.log = log
        self.port = port
        self.expected_errors = expected_errors
        self.process: subprocess.Popen[bytes] | None = None
        self._kept: str | None = None  # the log, once the directory is gone

    def launch(self, command: list[str]) -> None:
        """Run ``command`` until it accepts connections on the port (stopped if it never does)."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        log_guard.STARTED.append(self)
        try:
            wait_for(self._accepts, 10, self.name)
        except BaseException:
            self.stop()
            raise

    def _accepts(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}:\n{self.output()}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def stop(self) -> None:
        """A fast shutdown (SIGTERM), as a container runtime stops it; SIGKILL if stuck."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its workers too
                self.process.wait(5)
        if self._kept is None:
            self._kept = self.output()
            shutil.rmtree(self.directory, ignore_errors=True)

    def output(self) -> str:
        """Its log so far."""
        if self._kept is not None:
            return self._kept
        return self.log.read_text(errors="replace")

    def stopped(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def unexpected_errors(self) -> list[str]:
        allowed = log_guard.EXPECTED | set(self.expected_errors)
        bad = []
        for line in self.output().splitlines():
            match = self.problem.search(line)
            if match and not any(fnmatch.fnmatchcase(match[1], p) for p in allowed):
                bad.append(line)
        return bad
