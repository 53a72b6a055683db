"""Route-level tests: one app per module on the run's PostgreSQL and Redis, via ReusableClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from tests.support.apps import build_app
from tests.support.contract_client import ContractClient
from tests.support.services import free_port


@pytest.fixture(scope="module")
def app(pg_url: str, redis_url: str) -> Sanic:
    return build_app(pg_url, redis_url)


@pytest.fixture(scope="module")
def client(app: Sanic) -> Iterator[ReusableClient]:
    # Every response is checked against the OpenAPI document (status and body).
    with ContractClient(app, port=free_port()) as client:
        yield client
