"""The client of one request, watched while its answer is paced: a departure is noticed at once, not at a write.

With pure ASGI, once the body is read `receive()` only returns when the client disconnects (or the response ends),
so a task awaiting it is the prompt signal; sleeps are futures that this signal resolves early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Peer:
    """The client of one request: notices it leaving while the answer is being paced."""

    __slots__ = ("_receive", "_waiter", "_watcher", "gone")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.gone = False

    def watch(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._waiter is not None:
            _resolve(self._waiter)

    async def sleep(self, delay: float) -> bool:
        """Wait `delay` seconds; False (at once) when the client has gone."""
        if delay > 0 and not self.gone:
            self.watch()
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(delay, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return not self.gone

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
