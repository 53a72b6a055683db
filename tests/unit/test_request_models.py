"""What a worker validates from requests does not stay in its memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from blueprints.alerts import AlertChange, AlertsQuery
from blueprints.users import ProfileUpdate


@pytest.mark.parametrize(
    ("validate", "field"),
    [
        (lambda: AlertChange.model_validate({"note": " a note "}), "note"),
        (lambda: ProfileUpdate.model_validate({"display_name": " Ada "}), "display_name"),
        (lambda: AlertsQuery.model_validate({"cursor": " abc "}), "cursor"),
    ],
    ids=["alert note", "display name", "query"],
)
def test_validated_strings_are_not_cached(validate: Callable[[], Any], field: str) -> None:
    # pydantic-core's string cache handed out one kept copy of a stripped value (up to
    # 16,384 of them per process: users' notes and names, held for the process's life).
    first, second = validate(), validate()
    assert getattr(first, field) == getattr(second, field)
    assert getattr(first, field) is not getattr(second, field)
