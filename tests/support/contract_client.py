"""A test client that holds every response to the OpenAPI document.

Each response of a documented route must carry a status the operation documents and, for
a JSON body, a body its schema accepts: the route-level suite's thousand requests check
the response models against what the handlers really render.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from sanic import Request, Sanic
from sanic_testing.reusable import ReusableClient
from sanic_testing.testing import TestingResponse

from coinlink.http.openapi import document, openapi_path


class ContractClient(ReusableClient):
    def __init__(self, app: Sanic, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        self._document: dict[str, Any] | None = None

    def _sanic_endpoint_test(
        self, *args: Any, **kwargs: Any
    ) -> tuple[Request | None, TestingResponse | None]:
        request, response = super()._sanic_endpoint_test(*args, **kwargs)
        if request is not None and response is not None and request.route is not None:
            self._check(request, response)
        return request, response

    def _check(self, request: Request, response: TestingResponse) -> None:
        if self._document is None:
            self._document = document(self.app, version="test", description="")
        path = openapi_path(request.route)  # type: ignore[arg-type]
        operation = self._document["paths"].get(path, {}).get(request.method.lower())
        if operation is None:  # not documented: the WebSocket, the docs, OPTIONS, HEAD
            return
        label = f"{request.method} {path} -> {response.status}"
        documented = operation["responses"].get(str(response.status))
        assert documented is not None, f"{label}: status not documented"
        content = documented.get("content", {})
        if not response.body:
            return
        media_type = (response.content_type or "").split(";")[0]
        assert media_type in content, f"{label}: undocumented body of type {media_type}"
        if media_type == "application/json":
            schema = content[media_type]["schema"]
            validator = Draft202012Validator({**schema, "components": self._document["components"]})
            errors = [error.message for error in validator.iter_errors(response.json)]
            assert not errors, f"{label}: body does not fit its schema: {errors[:3]}"
