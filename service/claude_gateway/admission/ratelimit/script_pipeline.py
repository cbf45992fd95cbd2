"""`ScriptPipeline`: calls of Redis Lua scripts, made while a batch is in flight, go together in the next batch.

redis-py sends one command per connection at a time and waits for its reply, and its pool lends a connection per
waiting caller: 200 concurrent admissions cost 200 round trips, in turn, and as many new connections under a burst.
Here they cost one pipeline: one write and one read for the whole batch, over one pooled connection. The rate
limiter's admissions and settlements share one `ScriptPipeline`, so a batch carries both, in the order made.

Each call still runs alone and atomically in Redis (one EVALSHA each), in the order made, and each caller gets its own
reply or error. A call whose caller gave up before its batch was sent (its future is done: cancelled by a timeout) is
not sent: an admission nobody waits for would reserve budget nobody settles. After NOSCRIPT (Redis restarted, or its
scripts were flushed) the scripts are loaded and only the calls that got NOSCRIPT are sent again.

    pipeline = ScriptPipeline(redis)
    acquire, adjust = pipeline.script(ACQUIRE_LUA), pipeline.script(ADJUST_LUA)
    reply = await acquire(keys, args)        # queued, sent with the next batch, its reply awaited
    applied = adjust.submit(keys, args)      # queued now; sent even if nobody awaits the future
    await pipeline.sent()                    # every call made so far answered: a read after it sees them
    await pipeline.drain()                   # at shutdown: every queued call sent and answered
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


class PipelinedScript:
    """One Lua script of a `ScriptPipeline`."""

    def __init__(self, pipeline: ScriptPipeline, source: str) -> None:
        self.pipeline = pipeline
        self.script: AsyncScript = pipeline.redis.register_script(source)

    def submit(self, keys: Sequence[str], args: Sequence[int | str]) -> asyncio.Future[Any]:
        """Queue a call now; the future gets its reply (or error). Cancelling the future before it is sent drops it."""
        return self.pipeline.submit(self.script, keys, args)

    async def __call__(self, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        return await self.submit(keys, args)


# One call: its script, its keys, its arguments, and the future its caller awaits.
_Call = tuple[AsyncScript, Sequence[str], Sequence[int | str], asyncio.Future[Any]]


class ScriptPipeline:
    """The batches of calls of one Redis client's scripts: one sender task at a time; while a batch is in flight,
    new calls queue for the next one."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queued: list[_Call] = []
        # The batch in flight: `sent()` waits for it as well as for the queue.
        self._in_flight: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    def script(self, source: str) -> PipelinedScript:
        return PipelinedScript(self, source)

    def submit(self, script: AsyncScript, keys: Sequence[str], args: Sequence[int | str]) -> asyncio.Future[Any]:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((script, keys, args, reply))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())
        return reply

    async def sent(self) -> None:
        """Return once every call made so far has been answered (or failed), whatever is queued after it: a read of
        what they write, made afterwards on another connection, then sees it (a settlement whose answer was sent
        before its Redis reply came, `UpstreamLease.release_in_background`)."""
        replies = [call[3] for call in (*self._in_flight, *self._queued) if not call[3].done()]
        if replies:
            await asyncio.wait(replies)

    async def drain(self) -> None:
        """Return once every call queued so far has been sent and answered (or failed)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender})

    async def _send(self) -> None:
        while self._queued:
            batch = self._in_flight = [call for call in self._queued if not call[3].done()]
            self._queued = []
            if not batch:
                continue
            try:
                replies = await self._execute(batch)
                forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if forgotten:
                    for script in {id(batch[i][0]): batch[i][0] for i in forgotten}.values():
                        await self.redis.script_load(script.script)
                    again = await self._execute([batch[i] for i in forgotten])
                    for i, reply in zip(forgotten, again, strict=True):
                        replies[i] = reply
            except Exception as exc:  # the connection failed: every caller of the batch hears it
                self._fail(batch, exc)
                continue
            except BaseException:  # cancelled (the loop is shutting down): so is every call still queued
                self._fail([*batch, *self._queued], None)
                self._queued = []
                raise
            for (*_, reply), value in zip(batch, replies, strict=True):
                if reply.done():  # its caller gave up meanwhile
                    continue
                if isinstance(value, Exception):
                    reply.set_exception(value)
                else:
                    reply.set_result(value)

    @staticmethod
    def _fail(calls: list[_Call], exc: Exception | None) -> None:
        for *_, reply in calls:
            if reply.done():
                continue
            if exc is None:
                reply.cancel()
            else:
                reply.set_exception(exc)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipeline = self.redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipeline.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return await pipeline.execute(raise_on_error=False)
