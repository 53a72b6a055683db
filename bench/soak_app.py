"""``python -m bench.soak_app serve ...``: ``coinlink serve`` for ``bench.soak``, which can
trace each worker's Python allocations (a debug hook of the bench, not of CoinLink).

With ``$SOAK_TRACE_DIR`` set, every worker starts ``tracemalloc`` and, every
``$SOAK_TRACE_EVERY_S`` seconds (default 60), appends to ``<dir>/<pid>.txt`` the traced total,
the sizes that grew most since its first snapshot (taken after ``$SOAK_TRACE_BASELINE_S``,
default 120, of warm-up), grouped by traceback of ``$SOAK_TRACE_FRAMES`` frames (default 4;
1 costs far less on a busy machine; 0 leaves tracemalloc off), the blocks pymalloc has
allocated (``sys.getallocatedblocks``) and the object types whose count grew most
(``gc.get_objects``), and where the memory sits: pymalloc's arenas with the bytes in their
used and free blocks (``sys._debugmallocstats``), and glibc's heap in use and free
(``mallinfo2``: Python's objects over 512 bytes, and C extensions' own allocations, which
tracemalloc does not see). What keeps
growing between reports is the leak; a bounded cache grows and then stops; arenas that grow
while their used bytes do not are fragmentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from sanic import Sanic

from coinlink import app, cli

TRACE_DIR_ENV = "SOAK_TRACE_DIR"
MODULE = "bench.soak_app"
TOP = 15


def _type_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _allocators() -> str:
    """pymalloc's arenas and blocks, glibc's heap: one line, KiB."""
    # _debugmallocstats writes to the C stderr: borrowed for the call (another thread's
    # stderr line in that instant would land in the file, and be ignored).
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")

    def figure(label: str) -> int:
        found = re.search(rf"^# {label}\s+=\s+([\d,]+)", text, re.MULTILINE)
        return int(found.group(1).replace(",", "")) if found else -1

    pools = re.search(r"^([\d,]+) unused pools \* (\d+) bytes", text, re.MULTILINE)
    unused = int(pools.group(1).replace(",", "")) * int(pools.group(2)) if pools else -1
    line = (
        f"pymalloc: arenas {figure('arenas allocated current')}, "
        f"used {figure('bytes in allocated blocks') // 1024} KiB, "
        f"free {figure('bytes in available blocks') // 1024} KiB, "
        f"in unused pools {unused // 1024} KiB"
    )
    with contextlib.suppress(OSError, AttributeError):  # glibc 2.33+
        mallinfo2 = ctypes.CDLL(None).mallinfo2
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        line += (
            f"; glibc: in use {info.uordblks // 1024} KiB, free {info.fordblks // 1024} KiB, "
            f"mmapped {info.hblkhd // 1024} KiB"
        )
    return line


def _filters() -> list[tracemalloc.Filter]:
    return [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    ]


async def _trace(out: Path, every_s: float, baseline_s: float) -> None:
    await asyncio.sleep(baseline_s)
    gc.collect()
    tracing = tracemalloc.is_tracing()
    base = tracemalloc.take_snapshot().filter_traces(_filters()) if tracing else None
    base_types = _type_counts()
    began = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        collections = " ".join(
            f"gen{n} {g['collections']}x/{g['collected']}" for n, g in enumerate(gc.get_stats())
        )
        gc.collect()
        types = _type_counts()
        # Blocks pymalloc has handed out and not got back: live small objects, whatever
        # the arenas' resident pages do (they only grow; see docs/performance.md).
        lines = [
            f"== {(time.monotonic() - began) / 60:.1f} min after the baseline: "
            f"{sys.getallocatedblocks()} allocated blocks, objects {sum(types.values())}"
        ]
        if base is not None:
            snapshot = tracemalloc.take_snapshot().filter_traces(_filters())
            traced, peak = tracemalloc.get_traced_memory()
            lines[0] += f", traced {traced / 1024:.0f} KiB (peak {peak / 1024:.0f} KiB)"
            for stat in snapshot.compare_to(base, "traceback")[:TOP]:
                lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
                lines += [f"      {frame}" for frame in stat.traceback.format()]
        lines.append(_allocators())
        # Since the start, before this report's own collection: how often each generation
        # was collected and how many objects that freed.
        lines.append(f"gc: {collections}")
        grown = Counter(types)
        grown.subtract(base_types)
        lines.append(
            "object types grown: " + ", ".join(f"{t} {n:+d}" for t, n in grown.most_common(12))
        )
        with out.open("a") as file:
            file.write("\n".join(lines) + "\n")


def create_app() -> Sanic[Any, Any]:
    """Called by Sanic in the main process and in each worker."""
    soak = app.create_app()
    trace_dir = os.environ.get(TRACE_DIR_ENV)
    if trace_dir:
        every_s = float(os.environ.get("SOAK_TRACE_EVERY_S", "60"))
        baseline_s = float(os.environ.get("SOAK_TRACE_BASELINE_S", "120"))

        async def start_tracing(running: Sanic[Any, Any]) -> None:
            frames = int(os.environ.get("SOAK_TRACE_FRAMES", "4"))
            if frames:  # 0: object counts only, no tracemalloc (cheap enough for an hour)
                tracemalloc.start(frames)
            out = Path(trace_dir) / f"{os.getpid()}.txt"
            running.add_task(_trace(out, every_s, baseline_s), name="soak-trace")

        async def stop_tracing(running: Sanic[Any, Any]) -> None:
            with contextlib.suppress(Exception):
                await running.cancel_task("soak-trace", raise_exception=False)

        soak.register_listener(start_tracing, "before_server_start")
        soak.register_listener(stop_tracing, "before_server_stop")
    return soak


if __name__ == "__main__":
    # Imported by its own name, so that workers find the factory (``__main__`` is not it).
    from bench import soak_app

    sys.exit(cli.main(sys.argv[1:], app_factory=soak_app.create_app))
