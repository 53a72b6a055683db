"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.support.fuzz_auth``): every case signs in afresh.

Fuzzing revokes sessions (``DELETE /api/v2/auth/sessions/{id}`` with an id from the list,
``POST /api/v2/auth/logout``), so a token fixed at the start would turn every later case
into a 401. The account comes from ``FUZZ_BASE_URL``, ``FUZZ_EMAIL`` and ``FUZZ_PASSWORD``.
"""

from __future__ import annotations

import os

import httpx
import schemathesis
from schemathesis import AuthContext, Case


@schemathesis.auth(refresh_interval=1)
class SignIn:
    def get(self, case: Case, ctx: AuthContext) -> str:
        response = httpx.post(
            os.environ["FUZZ_BASE_URL"] + "/api/v2/auth/login",
            json={"email": os.environ["FUZZ_EMAIL"], "password": os.environ["FUZZ_PASSWORD"]},
        )
        response.raise_for_status()
        token: str = response.json()["tokens"]["access_token"]
        return token

    def set(self, case: Case, data: str, ctx: AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
