"""Debian's PgBouncer in transaction mode in front of the suite's PostgreSQL.

A throwaway pgbouncer on a free loopback port with an ini of its own: every database of the
upstream server (a ``*`` fallback entry), ``auth_type = trust`` with the upstream's user in
its userlist (the suite's PostgreSQL trusts local connections too), ``pool_mode =
transaction`` and a small ``default_pool_size``, so a test's many client connections
really share a few server sessions. It stays in the foreground with its log on stderr,
kept in its directory; an error-level line (``ERROR``/``FATAL``) fails the test, as a
server's does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.foreground import ForegroundServer, system_binary
from tests.support.services import free_port

# "2024-05-01 12:00:00.000 UTC [123] ERROR C-0x...: db/user@127.0.0.1:5555 message"
_PROBLEM = re.compile(r"\[\d+\] (?:ERROR|FATAL) (.*)")


class PgBouncer(ForegroundServer):
    """PgBouncer (``pool_mode = transaction``) in front of the PostgreSQL at ``upstream``.

    ``pool_size``: server sessions per database and user (``default_pool_size``)."""

    name = "pgbouncer"
    problem = _PROBLEM

    def __init__(self, upstream: str, pool_size: int = 4) -> None:
        directory = Path(tempfile.mkdtemp(prefix="coinlink-pgbouncer-"))
        super().__init__(directory, directory / "pgbouncer.log", free_port())
        server = urlsplit(upstream)
        self.user = server.username or "postgres"
        self.ini = self.directory / "pgbouncer.ini"
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        self.ini.write_text(
            "[databases]\n"
            f"* = host={server.hostname} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )

    def url(self, database_url: str) -> str:
        """``database_url`` (of the upstream server) through this PgBouncer."""
        parts = urlsplit(database_url)
        user = parts.username or self.user
        return parts._replace(netloc=f"{user}@127.0.0.1:{self.port}").geturl()

    def start(self) -> PgBouncer:
        # PgBouncer refuses to run as root: it drops to PostgreSQL's user, who then reads
        # its files.
        user: list[str] = []
        if os.geteuid() == 0:
            for path in [self.directory, *self.directory.iterdir()]:
                shutil.chown(path, user="postgres")
            user = ["-u", "postgres"]
        self.launch([system_binary("pgbouncer"), *user, str(self.ini)])
        return self


@contextlib.contextmanager
def pgbouncer_in_front_of(upstream: str, pool_size: int = 4) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(upstream, pool_size).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
