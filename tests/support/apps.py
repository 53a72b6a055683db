"""Building CoinLink apps and real server processes for tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from coinlink.app import create_app
from coinlink.db import apply_migrations
from config import load_settings
from tests.support import log_guard
from tests.support.services import free_port, wait_for

TEST_SECRET = "k3Yq9vR2xT7mW4pL8nZ5bC1dF6gH0jS-test-only-Qa7Wd2Re5Ty8Ui1Op4As6Df9Gh"
TEST_ORIGIN = "https://app.coinlink.test"
RATE_LIMITS = (
    "rate_limit_anonymous",
    "rate_limit_user",
    "rate_limit_login_account",
    "rate_limit_login_ip",
    "rate_limit_register",
)
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def build_app(
    database_url: str, redis_url: str | None = None, *, migrate: bool = True, **overrides: Any
) -> Sanic:
    if migrate:
        asyncio.run(apply_migrations(database_url))
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "redis_url": redis_url,
        # Keys of this app only: tests sharing one Redis never see each other's state.
        "redis_prefix": f"t{uuid.uuid4().hex[:10]}:",
        "jwt_secret": TEST_SECRET,
        "cors_origins": TEST_ORIGIN,
        "access_log": False,
        # Generous unless a test is about limits: suites sign up many users from one address.
        **dict.fromkeys(RATE_LIMITS, "100000/60"),
    }
    settings = load_settings(**{**values, **overrides})
    return create_app(settings, name=f"coinlink_{uuid.uuid4().hex[:8]}")


def server_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINLINK_", "PROMETHEUS_"))}
    env.update(
        {
            "COINLINK_ENV": "test",
            "COINLINK_JWT_SECRET": TEST_SECRET,
            "COINLINK_LOG_FORMAT": "json",
            "COINLINK_CORS_ORIGINS": TEST_ORIGIN,
            "COINLINK_BCRYPT_ROUNDS": "4",
            # No load balancer to wait for: a test that stops a server means "now". The
            # drain's own tests set it.
            "COINLINK_SHUTDOWN_DRAIN_S": "0",
        }
    )
    env.update(values)
    return env


def start_migrators(env: dict[str, str], count: int) -> list[subprocess.Popen[str]]:
    """``count`` ``coinlink migrate`` processes started together (read with communicate())."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "coinlink", "migrate"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def instance_env(
    database_url: str, redis_url: str | None = None, **settings: str
) -> dict[str, str]:
    """The environment of one ``coinlink serve`` instance of a test: this database, Redis
    (when given) under a key prefix of the test's own, no market provider, migrations
    applied at start (instances share them safely), generous rate limits. ``settings`` are
    further ``COINLINK_*`` values by setting name: ``admin_ticks="true"``."""
    values = {
        "database_url": database_url,
        "provider": "none",
        "auto_migrate": "true",
        **dict.fromkeys(RATE_LIMITS, "100000/60"),
    }
    if redis_url is not None:
        values |= {"redis_url": redis_url, "redis_prefix": f"t{uuid.uuid4().hex[:10]}:"}
    values |= settings
    return server_env(**{f"COINLINK_{name.upper()}": value for name, value in values.items()})


class ServerProcess:
    """``coinlink serve`` as a real process; its JSON log lines are kept for assertions."""

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 1,
        log_path: Path | None = None,
        expected_errors: tuple[str, ...] = (),
        module: str = "coinlink",
        port: int | None = None,
    ) -> None:
        """``module``: what ``python -m`` runs (a test's own entry point can inject faults);
        ``port``: a stopped instance's, to restart it where a proxy expects it."""
        self.expected_errors = expected_errors
        self.env = env
        log_guard.STARTED.append(self)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Of this process alone: one restarted on the same port has a log of its own.
        self.log_path = log_path or Path(
            f"/tmp/coinlink-serve-{self.port}-{uuid.uuid4().hex[:8]}.log"
        )
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> ServerProcess:
        """Until ``/health`` answers; a server that does not is stopped, never left running.

        The deadline is generous: a loaded 2-core machine takes tens of seconds to start
        two workers, and a healthy start returns as soon as it answers."""

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                return httpx.get(self.base_url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(up, timeout, "coinlink serve")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # its workers too
            self.process.wait(5)
            self._log.close()
            raise
        return self

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def logged(self, event: str) -> bool:
        """Whether any of its processes has logged ``event`` (JSON log lines)."""
        return f'"event":"{event}"' in self.output()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            # Like a container runtime: the signal goes to the main process, which stops
            # its workers; the whole group is killed only if that fails.
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        """Every process of it, at once (a test's clean-up): killing the main process alone
        would leave its workers running."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)
        self._log.close()

    def stopped(self) -> bool:
        return self.process.poll() is not None and self._log.closed

    def worker_pids(self) -> set[int]:
        """Its serving workers, as their ``Worker ready`` log lines name them."""
        return {
            json.loads(line)["pid"]
            for line in self.output().splitlines()
            if line.startswith('{"event":"Worker ready')
        }

    def unexpected_errors(self) -> list[str]:
        """Error-level lines of its log that neither it nor the running test expects."""
        return log_guard.unexpected(self.output(), self.expected_errors)


@contextmanager
def running_server(env: dict[str, str], workers: int = 1) -> Iterator[ServerProcess]:
    server = ServerProcess(env, workers)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def serve_until(client: ReusableClient, check: Callable[[], T], timeout: float, what: str) -> T:
    """:func:`wait_for` for an in-process app: its loop runs only inside the client's calls,
    so between checks it is run, not frozen by a ``time.sleep`` (ingest, the bus, batches
    written once a second all live on it). Returns the check's truthy result."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        client._run(asyncio.sleep(0.05))


def metric(server: ServerProcess, name: str) -> float:
    """The value of an unlabelled metric on the instance's ``/metrics`` (0 when absent)."""
    try:
        text = httpx.get(server.base_url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def ingest_heartbeat(server: ServerProcess) -> bool:
    """Whether the instance's /readyz ingest check passes: a leader's heartbeat is there
    (from then on the admin tick API takes ticks; before, it answers 503) and its newest
    tick is recent (a test that injects old ticks must look at the heartbeat itself)."""
    try:
        checks = httpx.get(server.base_url + "/readyz", timeout=2).json()["checks"]
    except httpx.HTTPError:
        return False
    return bool(checks["ingest"]["status"] == "ok")


def leads(server: ServerProcess) -> bool:
    """Whether this instance runs the ingest leader (its ``ingest_leader`` gauge)."""
    return metric(server, "ingest_leader") >= 1


def alerts_loaded(servers: list[ServerProcess]) -> int:
    """Active alerts in the ingest leader's engine, wherever it runs."""
    return int(sum(metric(server, "alerts_loaded") for server in servers))


def start_pair(env: dict[str, str], module: str = "coinlink") -> list[ServerProcess]:
    """Two instances of two workers each, once one of them leads ingest and /readyz sees
    its heartbeat everywhere."""
    # The first migrates before the second starts.
    first = ServerProcess(env, workers=2, module=module).wait_ready()
    servers = [first, ServerProcess(env, workers=2, module=module).wait_ready()]
    wait_for(lambda: sum(leads(s) for s in servers) == 1, 30, "one ingest leader")
    wait_for(lambda: all(ingest_heartbeat(s) for s in servers), 30, "the leader's heartbeat")
    return servers
