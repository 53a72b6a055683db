"""A worker gives freed heap pages back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from coinlink.serving import heap
from tests.support.services import until

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


def test_trimming_gives_back_the_pages_of_memory_freed_between_live_blocks() -> None:
    trim = heap.trimmer()
    assert trim is not None  # glibc: the systems CoinLink ships on (Debian)
    # 64 KiB blocks (under glibc's mmap threshold: from the heap), every other one freed:
    # holes between live blocks, which glibc's own trimming of the heap's top never reaches.
    kept, freed = [], []
    for n in range(400):
        kept.append(bytes([n % 256]) * 65536)
        freed.append(bytes([n % 256]) * 65536)
    del freed
    before = resident_bytes()
    trim(0)
    given_back = before - resident_bytes()
    assert given_back > 10 * 2**20  # of the ~25 MiB freed
    assert len(kept) == 400


async def test_the_worker_task_trims_at_its_pace_until_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "trimmer", lambda: calls.append)
    task = asyncio.create_task(heap.trim_forever(interval_s=0.01))
    await until(lambda: len(calls) >= 3, 5, "three trims")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and calls[:3] == [0, 0, 0]
