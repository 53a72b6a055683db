"""A worker's start-up objects, kept out of the garbage collector's way.

CPython collects its oldest generation once the objects promoted into it since the last
full collection number a quarter of those already there. A worker starts with ~150,000
long-lived objects (modules, classes, functions, the ORM's and pydantic's metadata), so
the cyclic garbage of requests that lived through two younger collections (one awaiting
the database, say) piled up by tens of thousands of objects before a full collection took
it. Each such peak makes pymalloc carve pools it has not used before, and a touched page
stays resident: the soak's slow climb of a worker's memory after warm-up, with the live
objects flat (docs/performance.md, "Soak").

:func:`freeze_start_up` moves everything alive once the worker has started into the
permanent generation (``gc.freeze``), which collections skip: full collections then come
after a quarter of what the worker has gathered since, so more often, each far cheaper.
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
