"""A worker's start-up objects, kept out of the garbage collector's way.

A worker starts with ~150,000 long-lived objects (modules, classes, functions, the ORM's
and pydantic's metadata). CPython traverses all of them in every full collection: ~57 ms
of CPU for the ~116,000 of an app just created (``docs/performance.md``, "Soak"), during
which the worker's event loop answers nothing. And a full collection comes only once the
objects promoted into the oldest generation since the last one number a quarter of those
already there, so the cyclic garbage of requests that outlived two younger collections
piles up by tens of thousands of objects in between.

:func:`freeze_start_up` moves everything alive once the worker has started into the
permanent generation (``gc.freeze``), which collections skip: a full collection then
traverses what the worker gathered since, and comes after a quarter of that.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Collect the start-up's garbage, then exempt what survives from every collection."""
    gc.collect()
    gc.freeze()
    # The threshold for the next full collection is counted from the size of the oldest
    # generation at the last one: collected again (now almost empty, so at once), it
    # counts from what is left instead of waiting for a quarter of the frozen objects.
    gc.collect()
