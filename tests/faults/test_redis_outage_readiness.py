"""Readiness through a real Redis outage under traffic, polled every 100 ms as a strict load balancer would.

`claude-gateway serve` (Gunicorn, uvicorn workers) on its own redis-server, which the test stops (connections
refused) or pauses (SIGSTOP: connections hang) and brings back while clients send requests. In fail-open mode
readiness never says 503 (requests are served throughout); in fail-closed mode it says 503 while Redis is down,
and 200 again once Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.faults.conftest import HEADERS
from tests.server.conftest import ServeFactory
from tests.support.servers import RedisServer

# How often readiness is asked: ten times a second, far more often than a kubelet, so that no window is missed.
POLL_S = 0.1
# A probe that does not answer within this counts as failed. The kubelet's default timeoutSeconds is 1 s; twice
# that absorbs a loaded 2-core test machine, and is still far below what a probe waiting on a hung Redis would take
# without READY_REDIS_WAIT_S.
PROBE_TIMEOUT_S = 2.0
# Polls to see with Redis down before bringing it back: about two seconds of outage.
POLLS_WHILE_DOWN = 20
# Upper bound for any state change to show; a healthy run takes a fraction of it.
DEADLINE_S = 30.0


@dataclass
class Probe:
    at: float
    status: str  # "200", "503", ... or "error:<Exception>"
    redis: str | None


@dataclass
class Poller:
    """Asks `/health/ready` every POLL_S and keeps every answer."""

    http: httpx.AsyncClient
    probes: list[Probe] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.probes.append(await self.once())
            await asyncio.sleep(POLL_S)

    async def once(self) -> Probe:
        at = time.monotonic()
        try:
            response = await self.http.get("/health/ready", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return Probe(at, f"error:{type(exc).__name__}", None)
        return Probe(at, str(response.status_code), response.json().get("redis"))

    async def wait_for(self, count: int, redis: str, since: float) -> None:
        """Until `count` probes made after `since` have seen Redis as `redis`."""
        deadline = time.monotonic() + DEADLINE_S
        while sum(p.at >= since and p.redis == redis for p in self.probes) < count:
            assert time.monotonic() < deadline, f"readiness did not report redis {redis!r}: {self.probes[-5:]}"
            await asyncio.sleep(POLL_S / 2)


@dataclass
class Traffic:
    """Clients sending `/chat` one request after another; statuses tallied."""

    http: httpx.AsyncClient
    statuses: dict[str, int] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event, clients: int = 4) -> None:
        async def client() -> None:
            while not stop.is_set():
                try:
                    status = str((await self.http.post("/chat", json={"message": "hi"})).status_code)
                except httpx.HTTPError as exc:
                    status = f"error:{type(exc).__name__}"
                self.statuses[status] = self.statuses.get(status, 0) + 1

        await asyncio.gather(*(client() for _ in range(clients)))


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it stops and starts at will."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


class Outage:
    def __init__(self, server: RedisServer, kind: str) -> None:
        self.server, self.kind = server, kind

    def begin(self) -> None:
        if self.kind == "stopped":
            self.server.stop()
        else:
            self.server.pause()

    def end(self) -> None:
        if self.kind == "stopped":
            self.server.start()
        else:
            self.server.resume()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fail_mode", "kind"), [("open", "stopped"), ("open", "hung"), ("closed", "stopped")], ids=lambda v: str(v)
)
async def test_readiness_through_a_redis_outage(
    serve: ServeFactory, own_redis: RedisServer, fail_mode: str, kind: str
) -> None:
    server = serve(workers=2, REDIS_URL=own_redis.url, RATE_LIMIT_FAIL_MODE=fail_mode, REDIS_TIMEOUT_S="0.3")
    stop = asyncio.Event()
    outage = Outage(own_redis, kind)
    async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=15) as http:
        poller, traffic = Poller(http), Traffic(http)
        running = [asyncio.create_task(poller.run(stop)), asyncio.create_task(traffic.run(stop))]
        try:
            await poller.wait_for(3, "up", since=0)
            went_down = time.monotonic()
            outage.begin()
            try:
                await poller.wait_for(POLLS_WHILE_DOWN, "down", since=went_down)
            finally:
                outage.end()
            came_back = time.monotonic()
            await poller.wait_for(3, "up", since=came_back)
        finally:
            stop.set()
            await asyncio.gather(*running)

    during = [p for p in poller.probes if went_down <= p.at < came_back and p.redis == "down"]
    after = [p for p in poller.probes if p.at >= came_back and p.redis == "up"]
    print(f"{fail_mode}/{kind}: {len(poller.probes)} probes, traffic {traffic.statuses}")
    assert len(during) >= POLLS_WHILE_DOWN
    assert {p.status for p in after} == {"200"}
    if fail_mode == "open":
        # Never out of service: every probe answered 200, and every request was served.
        assert {p.status for p in poller.probes} == {"200"}
        assert set(traffic.statuses) == {"200"}
    else:
        # Out of service while Redis is down (requests are refused then: 503 with Retry-After), back after.
        assert {p.status for p in during} == {"503"}
        assert set(traffic.statuses) <= {"200", "503"}
        assert traffic.statuses.get("503", 0) > 0
