"""What `UpstreamClient` needs of an HTTP client, and the setting that chooses one (`UPSTREAM_HTTP_CLIENT`).

Two implementations keep the same contract, held to the same tests (tests/gateway/test_http_client.py,
test_hostile_upstream.py, test_egress_proxy.py, where what one cannot do is marked with its reason):
`http_client.ConnectionPool` (our own, on httptools, the default) and `aiohttp_pool.AiohttpPool` (on aiohttp's public
API). docs/http-client.md compares them and says why the default is ours.

The contract: `head()` prepares a request (opaque to the caller: bytes for ours, a request for aiohttp's),
`request()` sends it and returns once the status and headers arrived, `send()` does both; an answer has `status`,
the headers the gateway reads (`http_client.KEPT_HEADERS`), the declared `content_length`, its body as it arrives
(`chunks()`) or whole and bounded (`read()`), and `release()`. Every failure is one of `http_client`'s
`HTTPClientError` subclasses, which `errors.classify` maps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, Protocol, TypeVar

from claude_gateway.egress import EgressProxies
from claude_gateway.http_client import MAX_RESPONSE_BODY_BYTES, ConnectionPool, StreamedBody

HTTPClientKind = Literal["builtin", "aiohttp"]
Head = TypeVar("Head")


class UpstreamResponse(Protocol):
    """An answer whose status and headers have arrived (see the module's docstring)."""

    status: int
    headers: dict[str, str]
    content_length: int | None

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int = MAX_RESPONSE_BODY_BYTES) -> bytes: ...

    def release(self) -> None: ...


class UpstreamPool(Protocol[Head]):
    """Keep-alive connections to one origin, through the egress proxy its URL goes through."""

    def head(self, method: str, path: str, headers: Iterable[tuple[str, str]], content_length: int | None) -> Head: ...

    async def request(self, head: Head, body: bytes | StreamedBody) -> UpstreamResponse: ...

    async def send(
        self, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes | StreamedBody = b""
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def make_pool(
    kind: HTTPClientKind,
    url: str,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    keepalive_s: float,
    max_idle: int,
    head_timeout_s: float | None = None,
    proxies: EgressProxies | None = None,
) -> UpstreamPool[Any]:
    """The pool of `kind`, built on the running event loop (both belong to the loop they are made on)."""
    if kind == "aiohttp":
        from claude_gateway.aiohttp_pool import AiohttpPool  # imported only by the processes that choose it

        return AiohttpPool(
            url,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            keepalive_s=keepalive_s,
            max_idle=max_idle,
            head_timeout_s=head_timeout_s,
            proxies=proxies,
        )
    return ConnectionPool(
        url,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        keepalive_s=keepalive_s,
        max_idle=max_idle,
        head_timeout_s=head_timeout_s,
        proxies=proxies,
    )
