"""The API process reaches Redis through one connection pool: rate limits and jobs share its connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from redis.asyncio import Redis

from claude_gateway.jobs.arq_queue import API_CLIENT_NAME
from tests.conftest import Gateway


async def connections(admin: Redis) -> dict[str, str]:
    """The server's client connections but `admin`'s own: id -> name."""
    own = await admin.client_id()
    return {str(client["id"]): client["name"] for client in await admin.client_list() if client["id"] != str(own)}


async def test_rate_limits_and_jobs_share_one_connection(make_gateway: Callable[..., Gateway], redis_url: str) -> None:
    """One request after another, each using the limiter (an admission, a token settlement) and then the jobs' client:
    one pool lends them all the same connection; a pool each would open one each."""
    gateway = make_gateway(redis_url=redis_url, rate_limit="1000/minute", token_rate_limit="100000/minute")
    async with Redis.from_url(redis_url, decode_responses=True) as admin:
        before = await connections(admin)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as client:
            for _ in range(3):
                chat = await client.post("/chat", json={"message": "hi [[sim:tokens=3]]", "max_tokens": 100})
                assert chat.status_code == 200, chat.text
                assert "x-ratelimit-remaining-tokens" in chat.headers
                submitted = await client.post("/analyze", json={"document": "A short document."})
                assert submitted.status_code == 202, submitted.text
                task: dict[str, Any] = submitted.json()
                polled = await client.get(f"/analyze/{task['task_id']}")
                assert polled.status_code == 200
                assert polled.json()["status"] == "processing"  # queued: no worker runs here
        opened = {id_: name for id_, name in (await connections(admin)).items() if id_ not in before}
    assert list(opened.values()) == [API_CLIENT_NAME]
