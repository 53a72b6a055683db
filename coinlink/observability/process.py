"""A worker's own CPU time, resident memory and open file descriptors, as metrics.

Read from ``/proc/self`` (Linux; elsewhere only the CPU time) every few seconds by a task
each worker runs: a scrape sees values at most that old, and no scrape pays for reading them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from coinlink.beat import sleep_to_beat
from coinlink.observability.metrics import PROCESS_CPU, PROCESS_FDS, PROCESS_MEMORY

INTERVAL_S = 5.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc/self")


def sample() -> None:
    """Set the process gauges to this process's figures now."""
    PROCESS_CPU.set(time.process_time())
    if not _PROC.is_dir():
        return
    resident_pages = int((_PROC / "statm").read_bytes().split()[1])
    PROCESS_MEMORY.set(resident_pages * _PAGE_BYTES)
    PROCESS_FDS.set(len(os.listdir(_PROC / "fd")))


async def sample_forever(interval_s: float = INTERVAL_S) -> None:
    """Until cancelled: :func:`sample` at once (the first scrape finds values), then every
    ``interval_s``."""
    while True:
        sample()
        await sleep_to_beat(interval_s)
