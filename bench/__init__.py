"""Benchmarks: they print figures, they do not pass or fail."""
