"""A relayed answer's life on the web side: the overhead header and settlement of a whole answer, and a stream's
set-up and end.

A streamed answer outlives its route's handler: `start_stream` holds the lease and opens the upstream call,
`stream_response` is the SSE response relaying it, and `finish_stream`, however the stream ends, settles the call,
frees its connection and gives back the lease (slot and unused tokens).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial

from starlette.background import BackgroundTask

from claude_gateway.admission.lease import UpstreamLease
from claude_gateway.context import RequestContext
from claude_gateway.telemetry import metrics
from claude_gateway.upstream.call import UpstreamCall
from claude_gateway.upstream.client import UpstreamClient
from claude_gateway.upstream.relay import NO_HEADERS, AnthropicStream, open_stream
from claude_gateway.web.event_stream import EventStreamResponse


def after_answer(settlement: asyncio.Future[None]) -> BackgroundTask:
    """What a whole answer runs once it is sent (`Response(background=...)`): waiting for its lease's settlement
    (`UpstreamLease.release_in_background`), so that the request ends, and a draining server stops, only once it is
    applied. Shielded: a cancelled request does not cancel the settlement."""
    return BackgroundTask(_shielded, settlement)


async def _shielded(settlement: asyncio.Future[None]) -> None:
    await asyncio.shield(settlement)


def overhead_header(context: RequestContext) -> dict[str, str]:
    """`X-Gateway-Overhead-Ms` on a whole answer: the request's time outside the upstream call."""
    return {"X-Gateway-Overhead-Ms": f"{context.overhead_s() * 1000:.3f}"}


async def start_stream(
    lease: UpstreamLease,
    new_call: Callable[[], UpstreamCall],
    upstream: UpstreamClient,
    body: bytes,
    headers: Mapping[str, str],
) -> AnthropicStream:
    """Hold `lease`, then open a streamed call (made by `new_call` only once the lease is held: a request refused
    never reached Anthropic, so it must not count as an upstream call). If the call cannot start, the lease is
    given back at once; otherwise the stream's end gives it back (`stream_response`)."""
    await lease.acquire()
    try:
        call = new_call()
        response = await open_stream(upstream, body, headers, call)  # ends `call` itself if it fails
    except BaseException:
        await lease.release()
        raise
    metrics.ACTIVE_STREAMS.inc()
    return AnthropicStream(response, call, lease.context.started)


def stream_response(
    stream: AnthropicStream, lease: UpstreamLease, chunks: AsyncIterator[bytes], headers: Mapping[str, str] = NO_HEADERS
) -> EventStreamResponse:
    """The SSE response relaying `chunks` of `stream`; its end, however it comes, settles the call and the lease."""
    return EventStreamResponse(
        chunks,
        on_close=partial(finish_stream, stream, lease),
        headers=[(name.encode(), value.encode()) for name, value in headers.items()],
    )


async def finish_stream(stream: AnthropicStream, lease: UpstreamLease, disconnected: bool) -> None:
    """However a stream ended: settle its call, free its connection, then give back its slot and unused tokens."""
    context = lease.context
    context.disconnected = disconnected and not stream.completed
    stream.close(cancelled=context.disconnected)
    lease.usage = stream.usage
    metrics.ACTIVE_STREAMS.dec()
    await lease.release()
