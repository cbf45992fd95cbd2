"""Per-client caps on the bytes of `/analyze` documents queued or running: one client cannot fill Redis.

A job carries its whole document in Redis until it ends (14 submissions of a 1M-character document filled a 64 MB
Redis and refused every client's `/analyze`). Each client key may have at most JOBS_MAX_QUEUED_BYTES_PER_CLIENT
bytes (UTF-8) of documents in jobs not yet ended; past that, `POST /analyze` answers 429 with `Retry-After`.

With Redis, per client (keyed by its namespace, `keys.client_namespace`): a hash of its jobs (job id -> "bytes:ms",
the size and when it was reserved) and their total. One Lua script checks and reserves (`RESERVE`), so that
concurrent submissions from every pod cannot pass the cap together. The bytes come back when the job ends:
- the worker's `after_job_end` hook (complete, failed, or a try that will be retried: only a job whose ARQ job key
  is gone is released), and the API's cancel once the abort has landed (`RELEASE`, idempotent);
- whatever ends otherwise (expired before a worker took it, aborted before it started, a worker killed between
  recording the result and releasing): when a client reaches its cap, `RESERVE` first drops every entry whose ARQ job
  key no longer exists and counts the total again from what is left. The job key exists exactly while the job is
  queued or running (ARQ deletes it as the job ends, and it expires with the job), so the count is exact whenever
  it matters. An entry with neither a job key nor a result (`arq:result:<id>`, written as any job ends) may be a
  job being enqueued right now: it is kept until it is RESERVATION_GRACE_MS old.
- both keys expire QUEUED_BYTES_TTL_S after the client's last submission, by which time every job has ended.

The scripts read ARQ's job keys (`arq:job:<id>`), which they are not handed in KEYS: fine on a standalone Redis or
Valkey, which is all ARQ supports; a Redis Cluster would refuse them, as it refuses ARQ itself.

Without Redis (`MemoryQueuedBytes`), the same cap is held in the process, released as each task ends.
"""

from __future__ import annotations

from arq.constants import job_key_prefix, result_key_prefix
from redis.asyncio import Redis

from claude_gateway.errors import PayloadTooLarge, RateLimited
from claude_gateway.jobs.constants import JOB_EXPIRES_S, JOB_KEY_PREFIX

# A client at its cap is told to come back after this long: a job takes from seconds to a few minutes.
QUEUE_FULL_RETRY_AFTER_S = 30
# An entry whose job key does not exist yet may be one being enqueued (reserve, then enqueue: two round trips): it
# is not dropped before this long. Far longer than any enqueue takes.
RESERVATION_GRACE_MS = 60_000
# Both keys of a client outlive its last submission by this long: a job waits at most JOB_EXPIRES_S to start, and
# runs for minutes after.
QUEUED_BYTES_TTL_S = 2 * JOB_EXPIRES_S

# KEYS[1]: the client's total; KEYS[2]: its jobs (job id -> "bytes:reserved_ms").
# ARGV: job id, bytes, cap, ARQ's job key prefix, TTL in ms, grace in ms, ARQ's result key prefix.
# Returns {outcome, total}: outcome 1 reserved, 2 already reserved (the same job id: an Idempotency-Key), 0 refused.
RESERVE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
    return {2, tonumber(redis.call('GET', KEYS[1]) or '0')}
end
local size = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
if total + size > cap then
    total = 0
    local entries = redis.call('HGETALL', KEYS[2])
    for i = 1, #entries, 2 do
        local bytes, at = string.match(entries[i + 1], '^(%d+):(%d+)$')
        bytes = tonumber(bytes)
        local ended = redis.call('EXISTS', ARGV[4] .. entries[i]) == 0
            and (redis.call('EXISTS', ARGV[7] .. entries[i]) == 1 or now_ms - tonumber(at) > tonumber(ARGV[6]))
        if ended then
            redis.call('HDEL', KEYS[2], entries[i])
        else
            total = total + bytes
        end
    end
    redis.call('SET', KEYS[1], total, 'PX', ARGV[5])
    if total + size > cap then
        return {0, total}
    end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. now_ms)
total = redis.call('INCRBY', KEYS[1], size)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, total}
"""

# KEYS as RESERVE's. ARGV: job id, ARQ's job key for it ('' to release whatever the job's state). The bytes
# released (0 when the job has no entry, or its job key still exists: queued again for a retry).
RELEASE = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry then
    return 0
end
if ARGV[2] ~= '' and redis.call('EXISTS', ARGV[2]) == 1 then
    return 0
end
local bytes = tonumber(string.match(entry, '^(%d+):'))
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('DECRBY', KEYS[1], bytes) < 0 then
    redis.call('SET', KEYS[1], 0, 'KEEPTTL')
end
return bytes
"""


class JobQueueFull(RateLimited):
    """The client's documents in jobs not yet ended are at JOBS_MAX_QUEUED_BYTES_PER_CLIENT."""

    def __init__(self, cap_bytes: int) -> None:
        super().__init__(
            f"Too many document bytes queued for this API key (at most {cap_bytes} bytes in jobs not yet finished): "
            "wait for its tasks to finish, or cancel some",
            headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
        )


def document_bytes(document: str) -> int:
    """What a document weighs against the cap: its UTF-8 size (what the job stores, give or take JSON escaping)."""
    return len(document.encode("utf-8", "surrogatepass"))


def check_fits(size: int, cap_bytes: int) -> None:
    """A document that alone exceeds the cap could never be queued: 413, not a 429 to retry."""
    if size > cap_bytes:
        raise PayloadTooLarge(f"Document larger than this API key's queued-bytes allowance ({cap_bytes} bytes)")


def _keys(namespace: str) -> list[str]:
    return [f"{JOB_KEY_PREFIX}queued-bytes:{namespace}", f"{JOB_KEY_PREFIX}queued-jobs:{namespace}"]


def namespace_of(job_id: str) -> str:
    """The client namespace a job id starts with (`keys.job_id`)."""
    return job_id.split("-", 1)[0]


class RedisQueuedBytes:
    """The cap held in Redis, shared by every API process and pod."""

    def __init__(self, redis: Redis, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self._reserve = redis.register_script(RESERVE)
        self._release = redis.register_script(RELEASE)

    async def reserve(self, job_id: str, size: int) -> bool:
        """Count `size` bytes for this job: True if newly counted, False if already (the same job id); raises
        `JobQueueFull` past the cap."""
        check_fits(size, self.cap_bytes)
        ttl_ms = QUEUED_BYTES_TTL_S * 1000
        args: list[str | int] = [job_id, size, self.cap_bytes, job_key_prefix, ttl_ms, RESERVATION_GRACE_MS]
        args.append(result_key_prefix)
        outcome, _total = await self._reserve(keys=_keys(namespace_of(job_id)), args=args)
        if int(outcome) == 0:
            raise JobQueueFull(self.cap_bytes)
        return int(outcome) == 1

    async def release_if_ended(self, job_id: str) -> int:
        """Give back the job's bytes if it has ended (its ARQ job key is gone); the bytes given back."""
        return int(await self._release(keys=_keys(namespace_of(job_id)), args=[job_id, job_key_prefix + job_id]))

    async def release(self, job_id: str) -> int:
        """Give back the job's bytes whatever its state: for a reservation whose enqueue did not happen."""
        return int(await self._release(keys=_keys(namespace_of(job_id)), args=[job_id, ""]))


class MemoryQueuedBytes:
    """The cap held in this process (no REDIS_URL): per client, the bytes of its tasks still processing."""

    def __init__(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self._totals: dict[str, int] = {}

    def reserve(self, client: str, size: int) -> None:
        check_fits(size, self.cap_bytes)
        total = self._totals.get(client, 0)
        if total + size > self.cap_bytes:
            raise JobQueueFull(self.cap_bytes)
        self._totals[client] = total + size

    def release(self, client: str, size: int) -> None:
        left = self._totals.get(client, 0) - size
        if left > 0:
            self._totals[client] = left
        else:
            self._totals.pop(client, None)
