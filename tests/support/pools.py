"""Both upstream HTTP clients under the same pool-level tests (the conformance suite, docs/http-client.md): the
`pool_class` fixture (tests/gateway/conftest.py) runs a test once with each, and `lacking` records, with its reason,
where one client cannot do what the test asks. Such a test still runs for that client, as a strict xfail: it must
fail there, so that a gap closed by an upgrade shows up."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pytest

from claude_gateway.aiohttp_pool import AiohttpPool
from claude_gateway.egress import Proxy
from claude_gateway.http_client import ConnectionPool
from claude_gateway.upstream_pool import UpstreamPool


class AnyPool(UpstreamPool[Any], Protocol):
    """Either pool, with what the tests look at besides the contract."""

    ssl: ssl.SSLContext | None
    proxy: Proxy | None
    head_timeout_s: float


PoolClass = Callable[..., AnyPool]
POOLS: dict[str, PoolClass] = {"builtin": ConnectionPool, "aiohttp": AiohttpPool}
Test = TypeVar("Test", bound=Callable[..., Any])


def kind_of(pool_class: PoolClass) -> str:
    return next(kind for kind, cls in POOLS.items() if cls is pool_class)


def lacking(**reasons: str) -> Callable[[Test], Test]:
    """`@lacking(aiohttp="why")`: the test shows something that client does not do."""

    def mark(test: Test) -> Test:
        test.lacking = reasons  # type: ignore[attr-defined]
        return test

    return mark


def expect_gap(request: pytest.FixtureRequest, test: Callable[..., Any], kind: str) -> None:
    """A strict xfail for `kind` if `test` is marked `lacking` it."""
    reason = getattr(test, "lacking", {}).get(kind)
    if reason:
        request.applymarker(pytest.mark.xfail(reason=f"{kind}: {reason}", strict=True))
