"""`Drain`: whether a server process is draining, and the requests it has in flight.

Imports nothing of the gateway's: `claude_gateway.server.gunicorn` uses it in the Gunicorn master, which must not import
prometheus_client (see `server`).
"""

from __future__ import annotations

import asyncio


class Drain:
    """Whether this server process is draining, and how many requests it has in flight.

    `start()` is called once, on SIGTERM, by the server (`server.DrainingServer`); it is never undone. From then on
    readiness answers 503 (`{"status": "draining"}`) so that load balancers stop sending new requests, while every
    request that still arrives is served; the server shuts down once `in_flight` is 0 (or its grace period is
    nearly over). `create_app` puts one on `app.state.drain`; `GatewayMiddleware` counts every HTTP request in it,
    from its head to its last byte (a stream's whole life).
    """

    def __init__(self) -> None:
        self._active = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    def start(self) -> None:
        self._active = True

    @property
    def active(self) -> bool:
        return self._active

    def request_started(self) -> None:
        self._in_flight += 1

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Until nothing is in flight (True), or `timeout_s` has passed (False)."""
        self._idle = asyncio.Event()
        if self._in_flight == 0:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    @property
    def in_flight(self) -> int:
        return self._in_flight
