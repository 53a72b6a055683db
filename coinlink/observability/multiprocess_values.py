"""prometheus-client's multi-process values for a process whose pid never changes.

Relies on internals of prometheus-client 0.26: the module global ``values.ValueClass``,
which every metric's constructor reads to make its values, and ``values.MultiProcessValue``
(``process_identifier``), which builds that class for multi-process mode. The class that
prometheus-client installs asks ``os.getpid()`` on every sample, to notice a fork and start
files of its own; the one installed here asks nothing.

Why: a system call on every sample; in the ingest benchmark a multi-process counter
increment cost ~0.9 us against 0.3 us in single-process mode, and under the ticker load
the values took 2-10 % of a worker's CPU (``docs/performance.md``). Sanic's workers are
spawned, not forked, and import the metrics afresh: the pid is fixed per process.

For the same reason :class:`HeldObservations` keeps a histogram's observations as Python
numbers and writes them in bulk, one write per bucket that changed; it relies on the
histogram child's ``_upper_bounds``, ``_sum`` and ``_buckets``.
``tests/unit/test_multiprocess_values.py`` fails when an upgrade breaks what this relies on.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

from prometheus_client import values

CHECKED_VERSIONS = {"prometheus-client": ">=0.26,<0.27"}
"""The releases this module was checked against; a test fails outside them."""


def install() -> None:
    """Make the metrics created from now on write this process's files without asking its
    pid again (call it before the first metric is created, in a process never forked)."""
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)  # type: ignore[no-untyped-call]


class HeldObservations:
    """Observations of one (labelled) histogram, held until :meth:`write` adds them: what
    ``observe`` would have written for these (finite: durations) amounts, in one write per
    bucket instead of two per observation."""

    __slots__ = ("_bounds", "_counts", "_histogram", "_sum")

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        self._bounds: list[float] = histogram._upper_bounds  # ascending, +Inf last
        self._sum = 0.0
        self._counts = [0] * len(self._bounds)

    def add(self, amount: float) -> None:
        self._sum += amount
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount

    def write(self) -> None:
        """Add what is held to the histogram (once: then drop this holder)."""
        self._histogram._sum.inc(self._sum)
        for index, count in enumerate(self._counts):
            if count:
                self._histogram._buckets[index].inc(count)
