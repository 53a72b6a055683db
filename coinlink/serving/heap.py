"""A worker's freed heap pages, given back to the system once a minute.

What a worker holds stays level after warm-up, but its resident memory crept up through
the soak's hour (``docs/performance.md``, "Soak"): pages glibc's allocator and pymalloc's
arenas touched at some peak and kept. glibc keeps freed memory in its arenas (the main heap,
and one per executor thread, where bcrypt runs) until something trims them, and it trims
on its own only the top of the main heap. ``malloc_trim(0)`` gives back every whole free
page of every arena (``MADV_DONTNEED``). pymalloc's arenas are out of its reach: it unmaps
one only once all of it is free.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from coinlink.beat import sleep_to_beat

INTERVAL_S = 60.0


def trimmer() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


async def trim_forever(interval_s: float = INTERVAL_S) -> None:
    """Until cancelled: trim every ``interval_s``, on a thread of its own. A trim walks
    every arena (~2 ms over a 160 MiB heap, more the first time), and ctypes lets go of the
    GIL meanwhile: the loop goes on serving, and the executor threads' password hashing is
    not queued behind it."""
    trim = trimmer()
    if trim is None:
        return
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="heap-trim") as thread:
        while True:
            await sleep_to_beat(interval_s)
            await loop.run_in_executor(thread, trim, 0)
