"""How long a full garbage collection holds a worker, before and after ``gc.freeze``.

Creates the app as a worker does (``coinlink.app.create_app``, the environment's settings),
then times ``gc.collect()`` in CPU time (median of ``--runs``) over everything alive, and
again once :func:`coinlink.serving.heap.freeze_start_up` has exempted it.

    COINLINK_JWT_SECRET=$(openssl rand -hex 32) .venv/bin/python -m bench.gc_pause
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from coinlink import app
from coinlink.serving.heap import freeze_start_up


def full_collection_ms(runs: int) -> float:
    took = []
    for _ in range(runs):
        began = time.process_time()
        gc.collect()
        took.append(time.process_time() - began)
    return statistics.median(took) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    app.create_app()
    gc.collect()
    tracked = len(gc.get_objects())
    before = full_collection_ms(args.runs)
    freeze_start_up()
    after = full_collection_ms(args.runs)
    print(
        f"{tracked:,} objects tracked after start-up; a full collection: {before:.1f} ms of "
        f"CPU before the freeze, {after:.2f} ms after ({gc.get_freeze_count():,} frozen)"
    )


if __name__ == "__main__":
    main()
