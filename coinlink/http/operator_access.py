"""What only operators may read: ``/metrics`` (login failures, token reuse, per-route
traffic) and the ingest leader's host and pid in ``/readyz``.

With ``COINLINK_METRICS_TOKEN`` set, they need it as a bearer token (what Prometheus sends
with ``authorization.credentials_file``). Unset, they are open in development and off in
production.
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from sanic import Request

from coinlink.http.auth import Unauthorized
from coinlink.http.errors import NotFound


class OperatorAccess:
    """Checks a request's credential against ``COINLINK_METRICS_TOKEN`` in constant time."""

    def __init__(self, token: SecretStr | None, *, production: bool) -> None:
        self._token = None if token is None else token.get_secret_value().encode()
        self._production = production

    def granted(self, request: Request) -> bool:
        if self._token is None:
            return not self._production
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        # Sanic decodes header bytes that are not UTF-8 to surrogates: encode them back.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(errors="surrogateescape"), self._token
        )

    def require(self, request: Request) -> None:
        """Refuse a request without access, saying what would grant it."""
        if self.granted(request):
            return
        if self._token is None:
            raise NotFound("metrics are off in production until COINLINK_METRICS_TOKEN is set")
        raise Unauthorized("send the bearer token set in COINLINK_METRICS_TOKEN")
