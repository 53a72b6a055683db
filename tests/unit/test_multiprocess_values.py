"""The multi-process values adapter (``coinlink.observability.multiprocess_values``), for real.

Worker-like processes import CoinLink's metrics with ``PROMETHEUS_MULTIPROC_DIR`` set (the
adapter installs itself there, as under ``coinlink serve``), write samples, and this test
merges their files with prometheus-client's own collector. If one of these fails after a
prometheus-client upgrade, the adapter relies on something that changed: read its
docstring, compare, adapt.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess, values
from prometheus_client.parser import text_string_to_metric_families

from coinlink.observability import multiprocess_values
from tests.support.adapters import check_versions
from tests.support.apps import ROOT

SAMPLES = 200

# One worker-like process: its samples, and how often os.getpid() was called for them.
# ``control`` uses prometheus-client's own value class instead, to show what is counted.
WORKER = f"""
import json, os, sys
calls = 0
def count(frame, event, arg):
    global calls
    if event == "c_call" and arg is os.getpid:
        calls += 1
if sys.argv[1] == "control":
    from prometheus_client import Counter
    counter = Counter("control_total", "prometheus-client's own value class")
else:
    from coinlink.observability import metrics
    counter = metrics.WS_MESSAGES_SENT
    metrics.HTTP_IN_FLIGHT.inc(2)
    metrics.HTTP_DURATION.labels("GET", "/x").observe(0.1)
sys.setprofile(count)
for _ in range({SAMPLES}):
    counter.inc()
sys.setprofile(None)
print(json.dumps({{"pid": os.getpid(), "getpid_calls": calls}}))
"""


def worker(directory: Path, kind: str = "coinlink") -> dict[str, Any]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, kind],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def collected(directory: Path) -> dict[str, float]:
    """Every sample prometheus-client's multi-process collector merges from ``directory``."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_prometheus_client_is_a_version_the_adapter_was_checked_against() -> None:
    check_versions(multiprocess_values)


def test_what_the_adapter_replaces_is_still_there() -> None:
    assert hasattr(values, "ValueClass"), (
        "coinlink.observability.multiprocess_values replaces "
        "prometheus_client.values.ValueClass, which is gone"
    )
    assert "process_identifier" in inspect.signature(values.MultiProcessValue).parameters, (
        "coinlink.observability.multiprocess_values builds its value class with "
        "prometheus_client.values.MultiProcessValue(process_identifier=...), which changed"
    )


def test_samples_no_longer_ask_the_pid(tmp_path: Path) -> None:
    control = worker(tmp_path, "control")
    assert control["getpid_calls"] >= SAMPLES  # what the adapter exists to save
    ours = worker(tmp_path)
    assert ours["getpid_calls"] == 0, (
        "coinlink.observability.multiprocess_values: samples ask os.getpid() again "
        f"({ours['getpid_calls']} calls for {SAMPLES}); prometheus-client no longer uses "
        "the value class the adapter installs"
    )


def test_workers_files_merge_and_a_dead_workers_live_gauge_drops_out(tmp_path: Path) -> None:
    first, second = worker(tmp_path), worker(tmp_path)
    assert first["pid"] != second["pid"]
    for pid in (first["pid"], second["pid"]):  # files named by the real pid, as before
        assert (tmp_path / f"counter_{pid}.db").exists()
        assert (tmp_path / f"gauge_livesum_{pid}.db").exists()

    merged = collected(tmp_path)
    assert merged["ws_messages_sent_total{}"] == 2 * SAMPLES
    assert merged['http_request_duration_seconds_count{"method": "GET", "route": "/x"}'] == 2
    assert merged["http_requests_in_flight{}"] == 4

    multiprocess.mark_process_dead(first["pid"], path=str(tmp_path))  # type: ignore[no-untyped-call]
    after = collected(tmp_path)
    assert after["http_requests_in_flight{}"] == 2  # livesum: only the live worker
    assert after["ws_messages_sent_total{}"] == 2 * SAMPLES  # counters keep the dead's


def test_held_observations_write_what_observe_would() -> None:
    bounds = (0.005, 0.01, 0.1, 1.0)
    amounts = [0.0, 0.004, 0.005, 0.0051, 0.01, 0.05, 0.1, 0.99, 1.0, 1.5, 30.0, 0.005]
    observed, held = CollectorRegistry(), CollectorRegistry()
    one = Histogram("d", "one by one", ["route"], buckets=bounds, registry=observed)
    other = Histogram("d", "held", ["route"], buckets=bounds, registry=held)
    holder = multiprocess_values.HeldObservations(other.labels("/x"))
    for amount in amounts:
        one.labels("/x").observe(amount)
        holder.add(amount)
    assert samples(held) != samples(observed)  # nothing until written
    holder.write()
    assert samples(held) == samples(observed)


def samples(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
