"""Reading this process's Prometheus samples (what an operator's dashboard would show)."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 before the first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
