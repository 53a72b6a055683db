"""A worker's start-up objects leave the collector's generations; its garbage does not."""

from __future__ import annotations

import gc
import weakref

from coinlink.serving.heap import freeze_start_up


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_start_up_objects_are_frozen_and_start_up_garbage_is_freed_not_frozen() -> None:
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    try:
        freeze_start_up()
        assert gone() is None  # collected first: frozen garbage would be kept for good
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # out of every generation
    finally:
        gc.unfreeze()
    assert any(obj is kept for obj in gc.get_objects())
