"""Limits shared through one Redis by two production servers with several workers each."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import CLIENT_KEY
from tests.server.conftest import ServeFactory

LIMIT = 25


class TestSharedLimits:
    async def test_burst_over_two_servers_admits_exactly_the_limit(self, serve: ServeFactory, redis_url: str) -> None:
        env = {"REDIS_URL": redis_url, "RATE_LIMIT": f"{LIMIT}/minute"}
        servers = [serve(workers=2, **env), serve(workers=2, **env)]
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        clients = [
            httpx.AsyncClient(base_url=s.url, headers={"X-API-Key": CLIENT_KEY}, limits=no_reuse) for s in servers
        ]
        try:
            answers = await asyncio.gather(
                *(clients[i % 2].post("/chat", json={"message": "hi [[sim:tokens=2]]"}) for i in range(80))
            )
        finally:
            for client in clients:
                await client.aclose()
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(200) == LIMIT
        assert statuses.count(429) == 80 - LIMIT
