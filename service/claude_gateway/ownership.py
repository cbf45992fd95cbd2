"""Who created which message batch and which file: the client key (by its name) that may see it.

Anthropic's Batches and Files APIs belong to the gateway's one Anthropic key, so every client's batches and files
sit side by side upstream. The gateway records the creator of each when it is created, and answers another key as
if it did not exist (Anthropic's 404 `not_found_error`, absent from its lists). A batch or file the gateway has no
record of (made outside the gateway, or before it recorded owners) is nobody's: every key gets 404 for it.

With `REDIS_URL`, records live in Redis (shared by every worker and pod), one string per object, holding the
client's name:

    claude-gateway:owner:batch:<batch id>   expires BATCH_OWNER_TTL_S after creation
    claude-gateway:owner:file:<file id>     no expiry (a file lives until deleted); removed when deleted
    claude-gateway:batch-usage:<batch id>   set once the batch's results were counted (`first_count`), same TTL

Without Redis they live in this process (one worker, lost on restart), as the rate limits do then.

A Redis failure on a lookup is an error (the caller answers 503): a record that cannot be read never shows one
client's batch to another.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from claude_gateway.errors import Overloaded
from claude_gateway.logs import get_logger

log = get_logger("claude_gateway.ownership")

Kind = Literal["batch", "file"]

OWNER_KEY_PREFIX = "claude-gateway:owner:"
COUNTED_KEY_PREFIX = "claude-gateway:batch-usage:"
# Anthropic keeps a batch, and its results, 29 days after creation; a record that outlives it by a day is never
# the reason a batch that still exists turns into nobody's.
BATCH_OWNER_TTL_S = 30 * 24 * 3600
# Files are kept by Anthropic until deleted, so their records are too.
TTLS: dict[Kind, int | None] = {"batch": BATCH_OWNER_TTL_S, "file": None}
# In process: expired records are swept every this many new ones, so that the dictionary does not only grow.
LOCAL_SWEEP_EVERY = 1024


class OwnershipUnavailable(Overloaded):
    default_message = "The gateway cannot check who owns this resource right now. Try again shortly."


def owner_key(kind: Kind, resource_id: str) -> str:
    return f"{OWNER_KEY_PREFIX}{kind}:{resource_id}"


class Ownership(Protocol):
    async def record(self, kind: Kind, resource_id: str, client: str) -> None:
        """`client` created `resource_id`."""

    async def owners(self, kind: Kind, resource_ids: Sequence[str]) -> list[str | None]:
        """The creator of each of `resource_ids` (None: unknown), in order."""

    async def forget(self, kind: Kind, resource_id: str) -> None:
        """`resource_id` was deleted."""

    async def first_count(self, batch_id: str) -> bool:
        """True the first time it is asked for `batch_id`: its results are to be counted now, and never again."""


async def owner(ownership: Ownership, kind: Kind, resource_id: str) -> str | None:
    return (await ownership.owners(kind, [resource_id]))[0]


class RedisOwnership:
    """Records in Redis (see the module docstring for the keys); one round trip per call."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def record(self, kind: Kind, resource_id: str, client: str) -> None:
        try:
            await self.redis.set(owner_key(kind, resource_id), client, ex=TTLS[kind])
        except RedisError as exc:
            raise OwnershipUnavailable() from exc

    async def owners(self, kind: Kind, resource_ids: Sequence[str]) -> list[str | None]:
        if not resource_ids:
            return []
        try:
            values = await self.redis.mget([owner_key(kind, resource_id) for resource_id in resource_ids])
        except RedisError as exc:
            log.warning("ownership lookup failed", extra={"error": type(exc).__name__})
            raise OwnershipUnavailable() from exc
        return [value.decode() if isinstance(value, bytes) else value for value in values]

    async def forget(self, kind: Kind, resource_id: str) -> None:
        try:
            await self.redis.delete(owner_key(kind, resource_id))
        except RedisError as exc:
            # Deleted upstream already: a record left behind names a resource nobody can reach any more.
            log.warning("ownership record not removed", extra={"error": type(exc).__name__, "kind": kind})

    async def first_count(self, batch_id: str) -> bool:
        try:
            claimed = await self.redis.set(f"{COUNTED_KEY_PREFIX}{batch_id}", b"1", nx=True, ex=BATCH_OWNER_TTL_S)
        except RedisError as exc:
            # Not counted rather than perhaps counted twice; the next download counts it.
            log.warning("batch usage not counted", extra={"error": type(exc).__name__})
            return False
        return bool(claimed)


class LocalOwnership:
    """Records in this process, with the same expiry as in Redis."""

    def __init__(self) -> None:
        # (kind, id) -> (client, expires at, or None for never)
        self._owners: dict[tuple[Kind, str], tuple[str, float | None]] = {}
        self._counted: dict[str, float] = {}
        self._added = 0

    async def record(self, kind: Kind, resource_id: str, client: str) -> None:
        ttl = TTLS[kind]
        self._owners[kind, resource_id] = (client, None if ttl is None else time.monotonic() + ttl)
        self._added += 1
        if self._added % LOCAL_SWEEP_EVERY == 0:
            self._sweep()

    async def owners(self, kind: Kind, resource_ids: Sequence[str]) -> list[str | None]:
        now = time.monotonic()
        found: list[str | None] = []
        for resource_id in resource_ids:
            entry = self._owners.get((kind, resource_id))
            found.append(entry[0] if entry is not None and (entry[1] is None or entry[1] > now) else None)
        return found

    async def forget(self, kind: Kind, resource_id: str) -> None:
        self._owners.pop((kind, resource_id), None)

    async def first_count(self, batch_id: str) -> bool:
        now = time.monotonic()
        expires = self._counted.get(batch_id)
        if expires is not None and expires > now:
            return False
        self._counted[batch_id] = now + BATCH_OWNER_TTL_S
        return True

    def _sweep(self) -> None:
        now = time.monotonic()
        self._owners = {key: entry for key, entry in self._owners.items() if entry[1] is None or entry[1] > now}
        self._counted = {key: expires for key, expires in self._counted.items() if expires > now}
