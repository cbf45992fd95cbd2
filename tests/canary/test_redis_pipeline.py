"""Canaries for `claude_gateway.jobs.redis_pipeline`, the one change the gateway makes to a library's behaviour.

A WATCHed pipeline cancelled while its reset waits for UNWATCH's reply loses its pooled connection in redis-py 5.x
(redis/redis-py#4121). Against a real Redis, paused so that the reply cannot come first: without the fix (in a fresh
interpreter) a pool of one connection has none left to lend; with it, the pool lends it again. When redis-py leaves
the pinned major version, or fixes this itself, a test here fails and says to drop the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from claude_gateway.jobs import redis_pipeline
from tests.support.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
# Long enough that UNWATCH's reply cannot arrive before the cancellation, short enough not to slow the suite.
PAUSE_MS = 300
# How long the pool waits for a connection to lend before it says it has none (a leaked one never comes back).
LEND_TIMEOUT_S = 2.0
SUBPROCESS_TIMEOUT_S = 60.0


async def lends_again_after_a_cancelled_unwatch(url: str) -> bool:
    """Cancel a WATCHed pipeline inside its reset, while Redis holds back UNWATCH's reply; then ask the pool of one
    connection for it: True when it is lent again, False when the pool has none left."""
    pool = BlockingConnectionPool.from_url(url, max_connections=1, timeout=LEND_TIMEOUT_S)
    client = Redis(connection_pool=pool)
    admin = Redis.from_url(url)
    in_reset = asyncio.Event()

    async def watched() -> None:
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("canary:watched")
            await admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
            in_reset.set()
        # Leaving the block resets the pipeline: it sends UNWATCH and waits for a reply the pause holds back.

    try:
        task = asyncio.create_task(watched())
        await in_reset.wait()  # `set` does not suspend the task: it is inside reset() by the time this resumes
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await client.ping()
        except RedisConnectionError:  # "No connection available."
            return False
        return True
    finally:
        await client.aclose()
        await admin.aclose()
        await pool.disconnect()


def test_redis_py_is_on_the_major_version_the_fix_is_written_for() -> None:
    major = int(redis.__version__.split(".")[0])
    assert major == redis_pipeline.PATCHED_MAJOR, (
        f"redis-py {redis.__version__}: check whether its Pipeline.reset releases its connection when cancelled "
        "(redis/redis-py#4123); if it does, drop claude_gateway/jobs/redis_pipeline.py and this file"
    )


def test_without_the_fix_the_connection_is_lost(redis_server: RedisServer) -> None:
    """The library still has the bug (in a fresh interpreter, where nothing has installed the fix)."""
    script = (
        "import asyncio, sys\n"
        "from tests.canary.test_redis_pipeline import lends_again_after_a_cancelled_unwatch\n"
        "from claude_gateway.jobs import redis_pipeline\n"
        "assert not redis_pipeline.installed()\n"
        "print(asyncio.run(lends_again_after_a_cancelled_unwatch(sys.argv[1])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, redis_server.url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    if result.stdout.strip() == "True":
        pytest.fail(
            "redis-py now gives the connection back by itself: drop claude_gateway/jobs/redis_pipeline.py and this file"
        )
    assert result.stdout.strip() == "False", result.stdout


async def test_with_the_fix_the_connection_is_lent_again(redis_server: RedisServer) -> None:
    redis_pipeline.install()
    assert await lends_again_after_a_cancelled_unwatch(redis_server.url)


async def test_the_fix_changes_nothing_when_reset_succeeds(redis_server: RedisServer) -> None:
    redis_pipeline.install()
    client = Redis.from_url(redis_server.url)
    try:
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("canary:plain")
            pipe.multi()
            pipe.set("canary:plain", "1")
            assert await pipe.execute() == [True]
        assert pipe.connection is None
        assert await client.get("canary:plain") == b"1"
    finally:
        await client.aclose()
