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
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.apps import ROOT
from tests.support.foreground import ForegroundServer, system_binary
from tests.support.services import free_port

SHIPPED = ROOT / "deploy" / "nginx"
CONFIG = "nginx.conf"
UPSTREAMS = "coinlink-upstreams.conf"
LISTEN = "coinlink-listen.conf"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# nginx's error log: "2024/05/01 12:00:00 [error] 123#123: *4 message, client: ..."
_UPSTREAM = re.compile(r'upstream="([^"]*)" upstream_status="([^"]*)"')
_PROBLEM = re.compile(r"\[(?:error|crit|alert|emerg)\] \d+#\d+: (?:\*\d+ )?(.*)")


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
        system_binary("nginx"),
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


class NginxProxy(ForegroundServer):
    """A throwaway nginx with the shipped config in front of ``upstreams`` (``host:port``).

    ``expected_errors``: globs of nginx error-log messages the test provokes on purpose
    (``"connect() failed*"``); any other error-level line fails the test, as for servers."""

    name = "nginx"
    problem = _PROBLEM

    def __init__(self, upstreams: Sequence[str], expected_errors: tuple[str, ...] = ()) -> None:
        directory = Path(tempfile.mkdtemp(prefix="coinlink-nginx-"))
        super().__init__(directory, directory / "error.log", free_port(), expected_errors)
        self.upstreams = list(upstreams)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.access_log = self.directory / "access.log"

    def start(self) -> NginxProxy:
        config = render(self.directory, self.upstreams, self.port)
        checked = check_config(self.directory, config)
        if checked.returncode != 0:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise RuntimeError(f"nginx -t failed:\n{checked.stderr}")
        self.launch(nginx_command(self.directory, config))
        return self

    def upstream_answers(self) -> list[tuple[str, str]]:
        """(instances tried, what each answered) of each request in its access log so far,
        in order: ``("127.0.0.1:8001, 127.0.0.1:8002", "502, 200")``."""
        text = self.access_log.read_text(errors="replace")
        return _UPSTREAM.findall(text)


@contextlib.contextmanager
def nginx_in_front_of(
    upstreams: Sequence[str], expected_errors: tuple[str, ...] = ()
) -> Iterator[NginxProxy]:
    proxy = NginxProxy(upstreams, expected_errors).start()
    try:
        yield proxy
    finally:
        proxy.stop()
