"""What a module logs during a block, whatever ran before it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import structlog


@contextlib.contextmanager
def logged_by(module: ModuleType, *loggers: str) -> Iterator[list[dict[str, Any]]]:
    """The structlog events ``module`` logs inside the block, through its ``log`` or the
    loggers named.

    ``configure_logging`` caches each logger on first use, so once any test has logged
    through ``module.log``, ``capture_logs`` alone no longer sees it: the module gets a
    fresh logger for the block.
    """
    with structlog.testing.capture_logs() as logs, pytest.MonkeyPatch.context() as patch:
        for name in loggers or ("log",):
            patch.setattr(module, name, structlog.get_logger())
        yield logs
