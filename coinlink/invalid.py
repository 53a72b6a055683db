"""The one domain error for refused values, whatever the service: per field, what to fix.

Services raise it for what only they can judge (a symbol this instance does not serve, a
webhook URL into a private network, a change an alert's kind does not allow); the HTTP edge
renders it as the 422 ``validation_error`` with ``details.fields``, the same shape as a
request model's own refusals.
"""

from __future__ import annotations


class Invalid(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = fields
