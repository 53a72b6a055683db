"""Review: migrators starting together through PgBouncer (transaction mode, two server
sessions, as in test_pgbouncer). A migrator waiting for the lock holds a server session in
an open transaction; the lock's holder then has none left for its migration."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support.apps import server_env, start_migrators
from tests.support.pgbouncer import pgbouncer_in_front_of

pytestmark = pytest.mark.timeout(240)


def test_two_migrators_through_a_two_session_pgbouncer_both_finish(
    pg_server_url: str, fresh_pg_url: str
) -> None:
    with pgbouncer_in_front_of(pg_server_url, pool_size=2) as bouncer:
        env = server_env(
            COINLINK_DATABASE_URL=bouncer.url(fresh_pg_url),
            COINLINK_DATABASE_POOL_MODE="transaction",
        )
        started = time.monotonic()
        runs = start_migrators(env, 2)
        outputs = []
        for run in runs:
            try:
                outputs.append(run.communicate(timeout=200))
            except subprocess.TimeoutExpired:
                run.kill()
                outputs.append(run.communicate())
        took = time.monotonic() - started
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert took < 60, f"{took:.0f} s: {outputs}"
