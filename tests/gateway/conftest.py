"""Fixtures of the gateway's own tests."""

from __future__ import annotations

import pytest

from tests.support.pools import POOLS, PoolClass, expect_gap


@pytest.fixture(params=list(POOLS))
def pool_class(request: pytest.FixtureRequest) -> PoolClass:
    """Each upstream HTTP client in turn (the conformance suite): `http_client.ConnectionPool`, `AiohttpPool`."""
    expect_gap(request, request.function, request.param)
    return POOLS[request.param]
