"""A redis-py fix ARQ cannot have yet: a WATCHed pipeline gives its connection back however its reset is interrupted.

redis-py 5.x, the line ARQ allows (`redis<6`), loses a pooled connection when a pipeline that WATCHes a key is
interrupted while its `reset()` waits for UNWATCH's reply, by a cancellation or a socket timeout: `reset()` catches
only `ConnectionError` there, so the release that follows never runs, the connection stays checked out for good, and
the pipeline warns ("Unclosed client session") when it is collected (redis/redis-py#4121, fixed upstream in #4123).
ARQ WATCHes in `enqueue_job` (every `/analyze`) and in the worker's `start_jobs`, on every poll while a job is in
flight, so a worker stopped by cancellation (as ARQ stops it) or a Redis slow enough to time a read out lands there.

`install()` wraps `Pipeline.reset` so that, when it raises before releasing, the connection is closed (its UNWATCH
reply may be unread) and released, shielded from a second cancellation. Nothing changes when `reset()` succeeds.
It is the only place the gateway changes a library's own class (rather than subclassing it):
`tests/canary/test_redis_pipeline.py` reproduces the leak against a real Redis and fails when redis-py moves past the
pin, so that this module is dropped then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection, ConnectionPool

# The redis-py major version whose `Pipeline.reset` this wraps; the pin in pyproject.toml keeps it (`redis<6`).
PATCHED_MAJOR = 5

_installed = False


def install() -> None:
    """Wrap `Pipeline.reset`, once per process: `arq_queue.connect` (the API's pool) and `worker.worker_settings` call it."""
    global _installed
    if _installed:
        return
    _installed = True
    original: Callable[[Pipeline], Awaitable[None]] = Pipeline.reset

    async def reset(self: Pipeline) -> None:
        connection = self.connection
        try:
            await original(self)
        except BaseException:
            if connection is not None and self.connection is connection:
                self.connection = None
                self.watching = False
                await asyncio.shield(_discard(self.connection_pool, connection))
            raise

    Pipeline.reset = reset  # type: ignore[method-assign]


def installed() -> bool:
    return _installed


async def _discard(pool: ConnectionPool, connection: AbstractConnection) -> None:
    """Close a connection whose last reply may be unread, then give it back: it reconnects when next lent."""
    try:
        await connection.disconnect(nowait=True)
    finally:
        await pool.release(connection)
