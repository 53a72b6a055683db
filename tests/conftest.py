"""Suite-wide fixtures: real PostgreSQL and Redis, a fresh database per run."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support import log_guard, services
from tests.support.redis_cluster import RedisCluster, running_cluster
from tests.support.script_calls import ScriptCalls, count_script_calls

# The suite's own defaults; a test that needs other values passes them explicitly.
os.environ.setdefault("COINLINK_ENV", "test")
os.environ.setdefault("COINLINK_BCRYPT_ROUNDS", "4")
# A cancelled CI job sends SIGTERM: unwind like Ctrl-C so fixtures stop throwaway servers.
signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with services.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    with services.fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test module's own (market data it writes is its own)."""
    with services.fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture
def fresh_pg_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own."""
    with services.fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with services.redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of the session's own: 3 masters, 3 replicas (tests/support)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture
def bus_prefix() -> str:
    """A key and channel prefix of this test's own, so tests sharing a Redis never meet."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def script_calls(monkeypatch: pytest.MonkeyPatch) -> ScriptCalls:
    return count_script_calls(monkeypatch)


@pytest.fixture(autouse=True)
def expected_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tell server processes what the test expects at error level (see log_guard)."""
    marker = request.node.get_closest_marker("expected_errors")
    log_guard.EXPECTED = set(marker.args) if marker else set()
    yield
    bad = log_guard.check_stopped()  # the servers this test started and stopped
    log_guard.EXPECTED = set()
    if bad:
        pytest.fail("unexpected error-level log lines:\n" + "\n".join(bad[:10]), pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def module_servers_log_nothing_unexpected() -> Iterator[None]:
    """The same for servers a module's fixtures stopped after its last test."""
    yield
    bad = log_guard.check_stopped()
    if bad:
        pytest.fail("unexpected error-level log lines:\n" + "\n".join(bad[:10]), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """A phase that passed fails when its captured output has an unexpected error-level log
    line (in-process apps log to the captured stdout)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.passed:
        return
    marker = item.get_closest_marker("expected_errors")
    expected = tuple(marker.args) if marker else ()
    captured = "".join(
        content for name, content in report.sections if name.endswith(f" {call.when}")
    )
    bad = log_guard.unexpected(captured, expected)
    if bad:
        report.outcome = "failed"
        report.longrepr = "unexpected error-level log lines:\n" + "\n".join(bad[:10])
