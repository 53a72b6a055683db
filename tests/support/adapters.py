"""Checks shared by the tests of CoinLink's adapters to framework internals.

Each adapter module (``coinlink.http.header_encoding``, ``coinlink.realtime.transport``,
``coinlink.observability.multiprocess_values``, ``coinlink.serving.manager``,
``coinlink.serving.protocol``, ``coinlink.serving.request_heads``) declares
``CHECKED_VERSIONS``: the releases of each library whose internals it was checked against.
These helpers fail with a message naming the adapter, so an upgrade says at once which
module needs a look.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version
from types import ModuleType

from packaging.specifiers import SpecifierSet


def check_versions(adapter: ModuleType) -> None:
    """Every library the adapter relies on is installed at a version it was checked with."""
    checked: dict[str, str] = adapter.CHECKED_VERSIONS
    for distribution, supported in checked.items():
        installed = version(distribution)
        assert installed in SpecifierSet(supported), (
            f"{adapter.__name__} relies on internals of {distribution} and was checked "
            f"against {supported}, but {installed} is installed: re-check what its docstring "
            f"lists against {distribution} {installed}, then widen CHECKED_VERSIONS"
        )


def check_signature(adapter: ModuleType, internal: Callable[..., object], expected: str) -> None:
    """The internal the adapter calls or replaces still takes what it did."""
    found = str(inspect.signature(internal, eval_str=True))
    assert found == expected, (
        f"{adapter.__name__} relies on {internal.__module__}.{internal.__qualname__}"
        f"{expected}, which is now {found}: adapt the module to it"
    )
