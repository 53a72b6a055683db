"""A worker's process gauges (``coinlink.observability.process``) against this very process:
its resident memory as the kernel reports it in /proc/self/status, the files it opens and
the CPU it burns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator

from coinlink.observability import process
from tests.support.metrics import sample
from tests.support.services import until

MIB = 1024 * 1024


def kernel_rss_bytes() -> int:
    """VmRSS of /proc/self/status: another of the kernel's accounts than statm's."""
    with open("/proc/self/status") as status:
        (line,) = [line for line in status if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


@contextlib.contextmanager
def open_files(count: int) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(tempfile.TemporaryFile())
        yield


def test_memory_is_the_resident_set_the_kernel_reports_and_follows_allocations() -> None:
    process.sample()
    before = sample("coinlink_process_resident_memory_bytes")
    assert abs(before - kernel_rss_bytes()) < 4 * MIB
    block = b"x" * (64 * MIB)  # written, so resident
    process.sample()
    grown = sample("coinlink_process_resident_memory_bytes")
    assert abs(grown - kernel_rss_bytes()) < 4 * MIB
    assert grown - before > 60 * MIB
    del block


def test_open_descriptors_count_the_files_this_process_opens() -> None:
    process.sample()
    before = sample("coinlink_process_open_fds")
    with open_files(5):
        process.sample()
        assert sample("coinlink_process_open_fds") == before + 5
    process.sample()
    assert sample("coinlink_process_open_fds") == before


def test_cpu_seconds_grow_by_the_cpu_this_process_burns() -> None:
    process.sample()
    before = sample("coinlink_process_cpu_seconds")
    times = os.times()
    assert before <= times.user + times.system + 0.05
    started = time.process_time()
    while time.process_time() - started < 0.3:
        pass
    process.sample()
    assert sample("coinlink_process_cpu_seconds") - before >= 0.3


async def test_the_worker_task_samples_at_once_then_again_until_cancelled() -> None:
    process.sample()
    before = sample("coinlink_process_open_fds")
    with open_files(3):
        task = asyncio.create_task(process.sample_forever(interval_s=0.05))
        try:
            await until(lambda: sample("coinlink_process_open_fds") == before + 3)
            with open_files(2):  # the same task, a later round
                await until(lambda: sample("coinlink_process_open_fds") == before + 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
