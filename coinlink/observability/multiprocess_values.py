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
``tests/unit/test_multiprocess_values.py`` fails when an upgrade breaks what this relies on.
"""

from __future__ import annotations

import os

from prometheus_client import values

CHECKED_VERSIONS = {"prometheus-client": ">=0.26,<0.27"}
"""The releases this module was checked against; a test fails outside them."""


def install() -> None:
    """Make the metrics created from now on write this process's files without asking its
    pid again (call it before the first metric is created, in a process never forked)."""
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: pid)  # type: ignore[no-untyped-call]
