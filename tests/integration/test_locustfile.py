"""bench/locustfile.py, as an operator runs it: Locust headless against a live server."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.support.apps import instance_env, running_server

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
REST_USERS, WS_USERS = 3, 1  # the locustfile's weights: 4 users are 3 REST and 1 WebSocket


def test_a_headless_run_exercises_rest_and_websocket_users_without_failures(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = instance_env(pg_url, redis_url, provider="simulator")
    with running_server(env, workers=2) as server:
        done = subprocess.run(
            [
                str(LOCUST),
                "-f",
                "bench/locustfile.py",
                "--headless",
                "--host",
                server.base_url,
                "--users",
                str(REST_USERS + WS_USERS),
                "--spawn-rate",
                str(REST_USERS + WS_USERS),
                "--run-time",
                "8s",
                "--stop-timeout",
                "5",
                "--csv",
                str(tmp_path / "run"),
                "--only-summary",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    with (tmp_path / "run_stats.csv").open() as stats:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}
    assert rows[("", "Aggregated")]["Failure Count"] == "0", done.stderr[-4000:]
    assert rows[("POST", "register")]["Request Count"] == str(REST_USERS)
    assert rows[("WS", "connect")]["Request Count"] == str(WS_USERS)
    assert int(rows[("WS", "ticker update")]["Request Count"]) > 0
    rest = sum(int(r["Request Count"]) for (kind, _), r in rows.items() if kind in ("GET", "POST"))
    assert rest > REST_USERS  # the users went on past signing up
