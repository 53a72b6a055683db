"""Debian's nginx running the shipped deploy/nginx/ config in front of app instances.

The shipped ``nginx.conf`` is copied unchanged, and so are its two includes but for what an
operator changes too: ``coinlink-upstreams.conf`` gets one ``server`` line per address
given, with the parameters of the shipped example's lines (``max_fails`` ...), and
``coinlink-listen.conf`` listens on a free loopback port and keeps every file nginx writes
(access log, temporary files) in the proxy's own directory, so it runs as root or not.
The master stays in the foreground (``daemon off``); its error log is its stderr, kept in
a file of that directory.

Instances are started separately (:class:`tests.support.apps.ServerProcess`): a test can
stop, restart or replace one behind a running proxy.
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
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support import log_guard
from tests.support.apps import ROOT
from tests.support.services import free_port, wait_for

SHIPPED = ROOT / "deploy" / "nginx"
CONFIG = "nginx.conf"
UPSTREAMS = "coinlink-upstreams.conf"
LISTEN = "coinlink-listen.conf"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# nginx's error log: "2024/05/01 12:00:00 [error] 123#123: *4 message, client: ..."
_UPSTREAM = re.compile(r'upstream="([^"]*)" upstream_status="([^"]*)"')
_PROBLEM = re.compile(r"\[(error|crit|alert|emerg)\] \d+#\d+: (?:\*\d+ )?(.*)")


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nginx is not installed; run scripts/ensure-servers.sh")
    return found


def _replace(pattern: str, replacement: str, text: str) -> str:
    """``text`` with the one directive ``pattern`` matches replaced."""
    replaced, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count == 1, f"expected one match of {pattern!r} in a shipped include"
    return replaced


def render(directory: Path, upstreams: Sequence[str] | None, port: int) -> Path:
    """The shipped config in ``directory``, its includes the shipped ones but for the
    addresses and the paths; the path of its nginx.conf.

    ``upstreams``: ``host:port`` of each instance, each with the parameters of the shipped
    example's ``server`` lines; None keeps the example's lines as they are."""
    shutil.copy(SHIPPED / CONFIG, directory / CONFIG)
    servers = (SHIPPED / UPSTREAMS).read_text()
    if upstreams is not None:
        parameters = set(re.findall(r"^\s*server\s+\S+(.*);", servers, re.M))
        assert len(parameters) == 1, "the example's server lines differ in their parameters"
        [rest] = parameters
        servers = "".join(f"server {address}{rest};\n" for address in upstreams)
    (directory / UPSTREAMS).write_text(servers)
    listen = _replace(
        r"^\s*listen\s+[^;]+;", f"listen 127.0.0.1:{port};", (SHIPPED / LISTEN).read_text()
    )
    listen = _replace(r"^(\s*access_log\s+)\S+", rf"\g<1>{directory / 'access.log'}", listen)
    # nginx's temporary files default to /var/lib/nginx, which only root may write.
    temp = "".join(f"{name}_temp_path {directory / name};\n" for name in TEMP_PATHS)
    (directory / LISTEN).write_text(listen + temp)
    if os.geteuid() == 0:
        # The workers run as nobody: they write temporary files in directories the master
        # creates for them in here, so they need to traverse it (and read nothing).
        directory.chmod(0o711)
    return directory / CONFIG


def nginx_command(directory: Path, config: Path, *args: str) -> list[str]:
    """nginx with the prefix, pid file and error log in ``directory``."""
    return [
        nginx_binary(),
        "-p",
        str(directory),
        "-c",
        str(config),
        "-e",
        "stderr",
        "-g",
        f"pid {directory / 'nginx.pid'}; daemon off;",
        *args,
    ]


def check_config(directory: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a rendered config (what an operator runs before a reload)."""
    return subprocess.run(
        nginx_command(directory, config, "-t", "-q"), capture_output=True, text=True, check=False
    )


class NginxProxy:
    """A throwaway nginx with the shipped config in front of ``upstreams`` (``host:port``).

    ``expected_errors``: globs of nginx error-log messages the test provokes on purpose
    (``"connect() failed*"``); any other error-level line fails the test, as for servers."""

    def __init__(self, upstreams: Sequence[str], expected_errors: tuple[str, ...] = ()) -> None:
        self.upstreams = list(upstreams)
        self.expected_errors = expected_errors
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="coinlink-nginx-"))
        self.error_log = self.directory / "error.log"
        self.access_log = self.directory / "access.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._kept: str | None = None  # the error log, once the directory is gone

    def start(self) -> NginxProxy:
        config = render(self.directory, self.upstreams, self.port)
        checked = check_config(self.directory, config)
        if checked.returncode != 0:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise RuntimeError(f"nginx -t failed:\n{checked.stderr}")
        with self.error_log.open("wb") as stderr:
            self.process = subprocess.Popen(
                nginx_command(self.directory, config),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        log_guard.STARTED.append(self)
        try:
            wait_for(self._accepts, 10, "nginx")
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.errors()}")
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
            self._kept = self.errors()
            shutil.rmtree(self.directory, ignore_errors=True)

    def errors(self) -> str:
        """nginx's error log (its stderr)."""
        if self._kept is not None:
            return self._kept
        return self.error_log.read_text(errors="replace")

    def upstream_answers(self) -> list[tuple[str, str]]:
        """(instances tried, what each answered) of each request in its access log so far,
        in order: ``("127.0.0.1:8001, 127.0.0.1:8002", "502, 200")``."""
        text = self.access_log.read_text(errors="replace")
        return _UPSTREAM.findall(text)

    def stopped(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def unexpected_errors(self) -> list[str]:
        allowed = log_guard.EXPECTED | set(self.expected_errors)
        bad = []
        for line in self.errors().splitlines():
            match = _PROBLEM.search(line)
            if match and not any(fnmatch.fnmatchcase(match[2], p) for p in allowed):
                bad.append(line)
        return bad


@contextlib.contextmanager
def nginx_in_front_of(
    upstreams: Sequence[str], expected_errors: tuple[str, ...] = ()
) -> Iterator[NginxProxy]:
    proxy = NginxProxy(upstreams, expected_errors).start()
    try:
        yield proxy
    finally:
        proxy.stop()
