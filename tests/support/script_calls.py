"""Counting Redis script calls (one EVALSHA round trip each) made in this process."""

from __future__ import annotations

from typing import Any

import pytest
from redis.commands.core import AsyncScript


class ScriptCalls:
    count = 0


def count_script_calls(monkeypatch: pytest.MonkeyPatch) -> ScriptCalls:
    calls = ScriptCalls()
    original = AsyncScript.__call__

    async def counting(self: AsyncScript, *args: Any, **kwargs: Any) -> Any:
        calls.count += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncScript, "__call__", counting)
    return calls
