"""Summarising a document with Claude: in one call when it fits in a chunk; otherwise each chunk is summarised,
then the chunk summaries are summarised (again in chunks, should they still be too long).

Every summary made is kept in a `PartStore` under a hash of its prompt, so that a job run again (after a transient
error, or after its worker died) pays only for the calls it had not finished.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import orjson
import pydantic
from anthropic.types import Message, MessageParam, TextBlock
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from claude_gateway import metrics, tracing
from claude_gateway.errors import UpstreamFailed
from claude_gateway.jobs.codec import JobFailed
from claude_gateway.jobs.constants import (
    CHUNK_BOUNDARY_FRACTION,
    CHUNK_CHARS,
    CHUNK_CONCURRENCY,
    MAX_SUMMARY_LEVELS,
    PARTS_TTL_S,
    SUMMARY_MAX_TOKENS,
)
from claude_gateway.relay import NO_HEADERS, complete
from claude_gateway.upstream_call import UpstreamCall
from claude_gateway.upstream_client import UpstreamClient
from claude_gateway.usage import Usage

logger = logging.getLogger("claude_gateway.jobs")

SYSTEM_PROMPT = (
    "You summarise documents for busy readers. Keep the names, numbers, decisions and conclusions; "
    "leave out repetition; never add facts that are not in the text."
)
# Paragraph, then line, then sentence, then word breaks: the first found in a chunk's last stretch ends it.
_BREAKS = ("\n\n", "\n", ". ", " ")


class PartStore(Protocol):
    """Summaries already made for one job, by prompt hash; and what its calls spent, over all its tries (`spend`
    settles the job's reservation to it)."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, summary: str, spent: Usage | None = None) -> None:
        """Keep a summary, and count what its call spent (`add_spent`) in the same write."""
        ...

    async def add_spent(self, usage: Usage) -> None: ...

    async def ledger(self) -> dict[str, int]: ...

    async def write_ledger(self, values: dict[str, int]) -> None: ...


# The job's spend ledger lives beside its parts, under names no prompt hash (32 hex digits) can take.
LEDGER_PREFIX = "ledger:"
SPENT_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


class MemoryParts:
    """Parts kept in the process (in-process jobs: a retry happens in the same process)."""

    def __init__(self) -> None:
        self._parts: dict[str, str] = {}
        self._ledger: dict[str, int] = {}

    async def get(self, key: str) -> str | None:
        return self._parts.get(key)

    async def put(self, key: str, summary: str, spent: Usage | None = None) -> None:
        self._parts[key] = summary
        if spent is not None:
            await self.add_spent(spent)

    async def add_spent(self, usage: Usage) -> None:
        for name in SPENT_FIELDS:
            self._ledger[f"spent:{name}"] = self._ledger.get(f"spent:{name}", 0) + getattr(usage, name)
        self._ledger["spent:calls"] = self._ledger.get("spent:calls", 0) + 1

    async def ledger(self) -> dict[str, int]:
        return dict(self._ledger)

    async def write_ledger(self, values: dict[str, int]) -> None:
        self._ledger.update(values)


class RedisParts:
    """Parts kept in a Redis hash, so that any worker that runs the job again finds them.

    Only a saving: when Redis fails here the part is made (or kept) without it, and the job goes on.
    """

    def __init__(self, redis: Redis, key: str) -> None:
        self._redis = redis
        self._key = key

    async def get(self, key: str) -> str | None:
        try:
            value = await self._redis.hget(self._key, key)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            _redis_failed("read", exc)
            return None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def put(self, key: str, summary: str, spent: Usage | None = None) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._key, key, summary)
                if spent is not None:
                    self._count_spent(pipe, spent)
                pipe.expire(self._key, PARTS_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            _redis_failed("write", exc)

    async def add_spent(self, usage: Usage) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                self._count_spent(pipe, usage)
                pipe.expire(self._key, PARTS_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            _redis_failed("count the spend of", exc)

    def _count_spent(self, pipe: Pipeline, usage: Usage) -> None:
        for name in SPENT_FIELDS:
            pipe.hincrby(self._key, f"{LEDGER_PREFIX}spent:{name}", getattr(usage, name))
        pipe.hincrby(self._key, f"{LEDGER_PREFIX}spent:calls", 1)

    async def mark_started(self) -> None:
        """The job's function has begun: from now on its worker settles it, and an abort is not refunded by the API."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._key, f"{LEDGER_PREFIX}started", "1")
                pipe.expire(self._key, PARTS_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.labels(operation="jobs").inc()
            logger.warning("could not mark a job started in Redis (%s); going on without", type(exc).__name__)

    async def started(self) -> bool:
        return bool(await self._redis.hexists(self._key, f"{LEDGER_PREFIX}started"))  # type: ignore[misc]

    async def ledger(self) -> dict[str, int]:
        """The job's spend ledger (raises on Redis trouble: the caller decides)."""
        stored = await self._redis.hgetall(self._key)  # type: ignore[misc]
        prefix = LEDGER_PREFIX.encode()
        return {name[len(prefix) :].decode(): int(value) for name, value in stored.items() if name.startswith(prefix)}

    async def write_ledger(self, values: dict[str, int]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping={f"{LEDGER_PREFIX}{name}": value for name, value in values.items()})
            pipe.expire(self._key, PARTS_TTL_S)
            await pipe.execute()

    async def clear(self) -> None:
        await self._redis.delete(self._key)


def _redis_failed(action: str, exc: BaseException) -> None:
    metrics.REDIS_ERRORS.labels(operation="jobs").inc()
    logger.warning("could not %s a partial summary in Redis (%s); going on without", action, type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Summary:
    text: str
    chunks: int  # chunks of the document itself (1: it fitted in one call)
    levels: int  # rounds of summarising (1: the document was summarised directly)
    calls: int  # upstream calls made by this run (parts found in the store are not counted)


def split_document(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut `text` into pieces of at most `size` characters, each ending at a natural break where there is one."""
    chunks: list[str] = []
    start = 0
    floor = max(1, int(size * CHUNK_BOUNDARY_FRACTION))
    while len(text) - start > size:
        end = start + size
        cut = end
        for mark in _BREAKS:
            found = text.rfind(mark, end - floor, end)
            if found != -1:
                cut = found + len(mark)
                break
        chunks.append(text[start:cut])
        start = cut
    chunks.append(text[start:])
    return chunks


def _prompt(text: str, *, level: int, index: int, count: int) -> str:
    if level == 0 and count == 1:
        return f"Summarize this document:\n\n<document>\n{text}\n</document>"
    if level == 0:
        return (
            f"This is part {index + 1} of {count} of a long document. Summarize this part; the summaries of all "
            f"parts are combined afterwards.\n\n<document_part>\n{text}\n</document_part>"
        )
    if count == 1:
        return (
            "These are summaries of consecutive parts of one document, in order. Write one summary of the whole "
            f"document from them.\n\n<part_summaries>\n{text}\n</part_summaries>"
        )
    return (
        f"These are summaries of consecutive parts of one document (group {index + 1} of {count}, in order). "
        f"Combine them into one summary.\n\n<part_summaries>\n{text}\n</part_summaries>"
    )


def _part_key(model: str, prompt: str) -> str:
    return hashlib.sha256(f"{model}\x00{prompt}".encode()).hexdigest()[:32]


async def _bounded(factories: list[Callable[[], Awaitable[str]]], limit: int) -> list[str]:
    """Run the calls `limit` at a time, in order; the first failure cancels the rest and is raised."""
    gate = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[str]]) -> str:
        async with gate:
            return await factory()

    tasks = [asyncio.create_task(run(factory)) for factory in factories]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def ask_for_summary(upstream: UpstreamClient, prompt: str, *, client: str, model: str) -> tuple[str, Usage]:
    """One summary from Claude: a `POST /v1/messages` made once (`retries=0`: the job retries by running again),
    accounted like every upstream call, its answer read with the SDK's types. Raises `GatewayError`."""
    messages: list[MessageParam] = [{"role": "user", "content": prompt}]
    body = orjson.dumps(
        {"model": model, "max_tokens": SUMMARY_MAX_TOKENS, "system": SYSTEM_PROMPT, "messages": messages}
    )
    call = UpstreamCall(model=model, max_tokens=SUMMARY_MAX_TOKENS, client=client, stream=False)
    tracing.record_input(call.span, messages, SYSTEM_PROMPT)
    completion = await complete(upstream, body, NO_HEADERS, call, retries=0)
    try:
        message = Message.model_validate(completion.message)
    except pydantic.ValidationError:
        raise UpstreamFailed("Claude API answered with something other than a message") from None
    text = "".join(block.text for block in message.content if isinstance(block, TextBlock)).strip()
    return text, call.usage


async def summarise(
    upstream: UpstreamClient,
    document: str,
    *,
    client: str,
    model: str,
    parts: PartStore,
    chunk_chars: int = CHUNK_CHARS,
) -> Summary:
    """Summarise `document`; raises `GatewayError` (from the upstream call) or `JobFailed`."""
    calls = 0

    async def summarise_part(prompt: str) -> str:
        nonlocal calls
        key = _part_key(model, prompt)
        cached = await parts.get(key)
        if cached is not None:
            return cached
        calls += 1
        text, spent = await ask_for_summary(upstream, prompt, client=client, model=model)
        if not text:
            await parts.add_spent(spent)
            raise JobFailed("Claude returned an empty summary")
        await parts.put(key, text, spent)
        return text

    text = document
    first_chunks = 0
    for level in range(MAX_SUMMARY_LEVELS + 1):
        chunks = split_document(text, chunk_chars)
        if level == 0:
            first_chunks = len(chunks)
        prompts = [_prompt(chunk, level=level, index=i, count=len(chunks)) for i, chunk in enumerate(chunks)]
        summaries = await _bounded([functools.partial(summarise_part, p) for p in prompts], CHUNK_CONCURRENCY)
        if len(summaries) == 1:
            return Summary(text=summaries[0], chunks=first_chunks, levels=level + 1, calls=calls)
        text = "\n\n".join(f"[Part {i + 1}]\n{summary}" for i, summary in enumerate(summaries))
    raise JobFailed("The document could not be summarised: its summaries did not get shorter")
