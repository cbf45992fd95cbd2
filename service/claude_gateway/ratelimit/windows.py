"""Fixed-window counters on `limits`' storage: in Redis (shared by every worker and pod) or in memory.

Why a fixed window. A token limit charges thousands of units per request, must give back what a
request did not use, and a burst must never get past the limit:
- fixed window: one integer per limit and client; a cost is one INCRBY, a refund one DECRBY, and the
  check and the charge fit in one small Lua script (atomic in Redis, exact). Its known cost: a client
  can spend up to twice its amount around a window boundary (end of one window, start of the next).
- moving window (`limits`' exact strategy) stores one list entry per unit: a 200 000-token limit
  would mean lists of 200 000 timestamps per client, and a refund would have to remove entries.
- sliding window counter weights the previous window by time: an estimate, so "exactly the limit"
  does not hold, and a refund cannot be put back into a weighted past.

The counters are `limits`' own fixed-window keys
(``<prefix>:LIMITER/<kind>/<client name>/<amount>/<multiples>/<unit>``), so
`limits.aio.strategies.FixedWindowRateLimiter` over the same storage reads, hits and clears them too.
We do not call its `hit()`: it increments first and compares after, so a refused request still
spends (a refused 5 000-token reservation would block the rest of the window), and the several limits
of one client (10/minute;500/day) cannot be charged all or nothing. Our script checks every limit of
a call, then charges all of them or none.

A window starts at its first charge (as in `limits`) and lasts the limit's period. A window whose
count went back to zero (all refunded) is the same as no window: the next charge opens a fresh one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

LimitKind = Literal["requests", "tokens"]

# Every key we write starts with this (then ":LIMITER/..."); a client is named by its name, never by its key.
KEY_PREFIX = "claude-gateway:rl"
MS_PER_S = 1000
# A refund goes back only into the window it was charged to. A window is known by its end (ms on the
# Redis server's clock, TIME + PTTL), computed again at settlement: the two differ by the time a script
# runs, well under this tolerance. Two windows of one key end a whole period (>= 1 s) apart, unless an
# operator deleted the key and it was opened again within this tolerance: then a refund may land in
# the new window, never more than the reservation itself.
WINDOW_MATCH_TOLERANCE_MS = 50


@dataclass(frozen=True, slots=True)
class Slot:
    """One limit to charge in one call."""

    kind: LimitKind
    key: str  # limits' key for the item and identifiers, without the storage prefix
    amount: int
    period_s: int
    cost: int
    description: str  # "10 requests per 1 minute", for messages


@dataclass(frozen=True, slots=True)
class SlotState:
    used: int  # the window's count: after the charge when admitted, before it when refused
    reset_in_s: float  # until the window resets (a full period when there is no window yet)
    window_end: float  # the window's identity, on the storage's own clock, for a later refund


@dataclass(frozen=True, slots=True)
class Outcome:
    admitted: bool
    states: tuple[SlotState, ...]


@dataclass(frozen=True, slots=True)
class Charge:
    """A window a reservation was charged to, to settle later."""

    key: str
    period_s: int
    window_end: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a reservation's windows owe once its request has ended: `delta` = used - reserved."""

    charges: Sequence[Charge]
    delta: int


class Windows(Protocol):
    """Where the counters live."""

    name: str

    @property
    def storage(self) -> Storage:
        """`limits`' storage of the counters (its strategies can read and clear them too)."""
        ...

    async def acquire(self, slots: Sequence[Slot]) -> Outcome:
        """Charge every slot's cost if every window has room for it, else charge nothing."""
        ...

    async def adjust(self, settlements: Sequence[Settlement]) -> None:
        """Each settlement: refund (delta < 0) into its charged windows still open, or charge more (delta > 0) to
        the current ones. Many at once, so that settlements can be sent together."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


# KEYS[i]: a window's counter. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: its amount, its period (ms), the cost to
# charge. Reply: {admitted, now_ms, count_1, ttl_ms_1, ...}, counts after the charge when admitted, before it
# when refused. A key without a TTL is not one of ours as written: it is counted as empty and replaced, never
# left to live forever.
_ACQUIRE_LUA = """
local counts, ttls = {}, {}
local admitted = 1
for i = 1, #KEYS do
    local ttl = redis.call('PTTL', KEYS[i])
    local count = 0
    if ttl > 0 then
        count = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
    end
    counts[i] = count
    ttls[i] = ttl
    if count + tonumber(ARGV[3 * i]) > tonumber(ARGV[3 * i - 2]) then
        admitted = 0
    end
end
if admitted == 1 then
    for i = 1, #KEYS do
        local cost = tonumber(ARGV[3 * i])
        if counts[i] <= 0 then
            local period = tonumber(ARGV[3 * i - 1])
            redis.call('SET', KEYS[i], cost, 'PX', period)
            counts[i] = cost
            ttls[i] = period
        else
            counts[i] = redis.call('INCRBY', KEYS[i], cost)
        end
    end
end
local now = redis.call('TIME')
local reply = {admitted, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}
for i = 1, #KEYS do
    reply[#reply + 1] = counts[i]
    reply[#reply + 1] = ttls[i]
end
return reply
"""

# A batch of settlements. ARGV[1]: tolerance (ms); then per settlement: its delta (used - reserved), its number of
# windows n, and n pairs of window end (ms) and period (ms); KEYS: the windows' counters, in the same order.
# A refund goes only into the very window that was charged and never below zero: a window that has since reset
# owes nothing. An over-charge was spent now, so it lands in the current window, opening one if need be.
_ADJUST_LUA = """
local tolerance = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local arg, key = 2, 1
while arg <= #ARGV do
    local delta = tonumber(ARGV[arg])
    local windows = tonumber(ARGV[arg + 1])
    arg = arg + 2
    for _ = 1, windows do
        local window_end, period = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
        local name = KEYS[key]
        arg, key = arg + 2, key + 1
        local ttl = redis.call('PTTL', name)
        if delta < 0 then
            if ttl > 0 and math.abs(now + ttl - window_end) <= tolerance then
                local count = tonumber(redis.call('GET', name) or '0') or 0
                local refund = math.min(-delta, count)
                if refund > 0 then
                    redis.call('DECRBY', name, refund)
                end
            end
        elseif ttl > 0 then
            redis.call('INCRBY', name, delta)
        else
            redis.call('SET', name, delta, 'PX', period)
        end
    end
end
return 1
"""


def limits_uri(redis_url: str) -> str:
    """REDIS_URL (``redis://``, ``rediss://``, ``unix://``) as a `limits.aio` storage URI (``async+redis://``...)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


# One call of a pipelined script: its keys, its arguments, and the future its caller awaits.
_Call = tuple[Sequence[str], Sequence[int], asyncio.Future[Any]]


class PipelinedScript:
    """A Lua script whose calls, made while one batch of them is in flight, go together in the next batch: one
    pipeline, one write and one read for all, over one pooled connection. Each call still runs alone and atomically
    in Redis, in the order made; each caller gets its own reply or error. Under a burst, a hundred admissions cost a
    round trip instead of a hundred (and as many new connections, each with its handshake)."""

    def __init__(self, redis: Redis, script: str) -> None:
        self.redis = redis
        self.script = redis.register_script(script)
        self._queued: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[int]) -> Any:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((keys, args, reply))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())
        return await reply

    async def _send(self) -> None:
        while self._queued:
            # A call whose caller already gave up (timed out) is not sent: nobody would settle what it reserved.
            batch = [call for call in self._queued if not call[2].done()]
            self._queued = []
            try:
                replies = await self._execute(batch)
                forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if forgotten:  # Redis restarted, or its scripts were flushed: load, then send those calls again
                    await self.redis.script_load(self.script.script)
                    again = await self._execute([batch[i] for i in forgotten])
                    for i, reply in zip(forgotten, again, strict=True):
                        replies[i] = reply
            except BaseException as exc:  # the connection failed: every caller of the batch hears it
                self._fail([*batch, *self._queued] if not isinstance(exc, Exception) else batch, exc)
                if not isinstance(exc, Exception):  # cancelled (shutting down): so are the calls still queued
                    self._queued = []
                    raise
                continue
            for (*_, reply), value in zip(batch, replies, strict=True):
                if reply.done():  # its caller gave up meanwhile
                    continue
                if isinstance(value, Exception):
                    reply.set_exception(value)
                else:
                    reply.set_result(value)

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        for *_, reply in calls:
            if reply.done():
                continue
            if isinstance(exc, Exception):
                reply.set_exception(exc)
            else:
                reply.cancel()

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipeline = self.redis.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipeline.execute_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
        return await pipeline.execute(raise_on_error=False)


class RedisWindows:
    """Counters in Redis, through `limits.aio`'s redis-py storage and its connection pool."""

    name = "redis"

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        # limits builds the redis-py client from the URI (password included, never logged); our scripts use it.
        self.redis = cast(Redis, cast(RedispyBridge, storage.bridge).get_connection())
        self._acquire = PipelinedScript(self.redis, _ACQUIRE_LUA)
        self._adjust = self.redis.register_script(_ADJUST_LUA)

    @classmethod
    def connect(cls, redis_url: str, *, timeout_s: float) -> RedisWindows:
        """A lazily connecting storage; each socket read, write and connect gives up after `timeout_s`."""
        storage = RedisStorage(
            limits_uri(redis_url),
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        return cls(storage)

    def _key(self, key: str) -> str:
        return self.storage.bridge.prefixed_key(key)

    async def acquire(self, slots: Sequence[Slot]) -> Outcome:
        args: list[int] = []
        for slot in slots:
            args += [slot.amount, slot.period_s * MS_PER_S, slot.cost]
        reply = await self._acquire([self._key(slot.key) for slot in slots], args)
        admitted, now_ms, *windows = (int(value) for value in reply)
        states = []
        for slot, count, ttl_ms in zip(slots, windows[0::2], windows[1::2], strict=True):
            if ttl_ms <= 0:  # no window yet: one would last a full period from its first charge
                ttl_ms = slot.period_s * MS_PER_S
            states.append(SlotState(used=count, reset_in_s=ttl_ms / MS_PER_S, window_end=float(now_ms + ttl_ms)))
        return Outcome(admitted=admitted == 1, states=tuple(states))

    async def adjust(self, settlements: Sequence[Settlement]) -> None:
        keys: list[str] = []
        args: list[int] = [WINDOW_MATCH_TOLERANCE_MS]
        for settlement in settlements:
            args += [settlement.delta, len(settlement.charges)]
            for charge in settlement.charges:
                keys.append(self._key(charge.key))
                args += [int(charge.window_end), charge.period_s * MS_PER_S]
        await self._adjust(keys=keys, args=args)

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self.redis.aclose()


class MemoryWindows:
    """Counters in this process (no REDIS_URL, or Redis down with RATE_LIMIT_FAIL_MODE=open), same semantics.

    `limits`' memory storage does each operation atomically; a lock makes our check-then-charge of
    several windows one step, as the Lua script is in Redis.
    """

    name = "memory"

    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self._lock = asyncio.Lock()

    async def acquire(self, slots: Sequence[Slot]) -> Outcome:
        async with self._lock:
            counts = [await self.storage.get(slot.key) for slot in slots]
            admitted = all(count + slot.cost <= slot.amount for slot, count in zip(slots, counts, strict=True))
            if admitted:
                counts = [await self.storage.incr(slot.key, slot.period_s, slot.cost) for slot in slots]
            now = time.time()
            states = []
            for slot, count in zip(slots, counts, strict=True):
                window_end = await self.storage.get_expiry(slot.key) if count > 0 else now + slot.period_s
                states.append(SlotState(used=count, reset_in_s=max(0.0, window_end - now), window_end=window_end))
            return Outcome(admitted=admitted, states=tuple(states))

    async def adjust(self, settlements: Sequence[Settlement]) -> None:
        async with self._lock:
            for settlement in settlements:
                delta = settlement.delta
                for charge in settlement.charges:
                    count = await self.storage.get(charge.key)  # also forgets a window that has ended
                    if delta > 0:
                        await self.storage.incr(charge.key, charge.period_s, delta)
                    elif count > 0 and await self.storage.get_expiry(charge.key) == charge.window_end:
                        await self.storage.decr(charge.key, min(-delta, count))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        timer = self.storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
