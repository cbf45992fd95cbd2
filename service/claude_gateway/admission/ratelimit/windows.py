"""Fixed-window counters, in Redis (shared by every worker and pod) or in this process's memory.

Why a fixed window. A token limit charges thousands of units per request, must give back what a
request did not use, and a burst must never get past the limit:
- fixed window: one integer per limit and client; a cost is one INCRBY, a refund one DECRBY, and the
  check and the charge fit in one small Lua script (atomic in Redis, exact). Its known cost: a client
  can spend up to twice its amount around a window boundary (end of one window, start of the next).
- moving window (`limits`' exact strategy) stores one list entry per unit: a 200 000-token limit
  would mean lists of 200 000 timestamps per client, and a refund would have to remove entries.
- sliding window counter weights the previous window by time: an estimate, so "exactly the limit"
  does not hold, and a refund cannot be put back into a weighted past.

`limits` parses RATE_LIMIT into `RateLimitItem`s; the counters are ours. We do not use its strategies:
their `hit()` increments first and compares after, so a refused request still spends (a refused
5 000-token reservation would block the rest of the window), and the several limits of one client
(10/minute;500/day) cannot be charged all or nothing. Our script checks every limit of a call, then
charges all of them or none.

Keys (`window_key`), one string counter per limit and client, expiring with its window:

    claude-gateway:rl:LIMITER/<kind>/<client name>/<amount>/<multiples>/<unit>
    e.g. claude-gateway:rl:LIMITER/tokens/billing-service/200000/1/minute

Budget counters and usage records (`spend`, which documents their keys) ride in the same scripts: a budget is one
more window to check and charge, whose key names its calendar window's date; a settlement also records usage.

A client is named by its name, never by its key. The layout is the one earlier releases wrote through
`limits`' storage, kept so that old and new pods count into the same windows during a rolling upgrade.

A window starts at its first charge and lasts the limit's period. A window whose count went back to
zero (all refunded) is the same as no window: the next charge opens a fresh one.

In memory (no REDIS_URL, or the fallback while Redis is down) the same windows live in a dict, with
the same rules; every operation there runs without an await, so it is atomic on the event loop. This
replaced `limits`' MemoryStorage, around which check-then-charge needed a lock, and whose background
expiry task could only be stopped through an attribute outside its documented API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from limits import RateLimitItem
from redis.asyncio import Redis

from claude_gateway.admission.ratelimit.script_pipeline import ScriptPipeline
from claude_gateway.admission.ratelimit.spend import (
    USAGE_FIELDS,
    USAGE_PREFIX,
    CalendarWindow,
    UsageRecord,
    WindowUsage,
    usage_clients_key,
    usage_expires_at_s,
    usage_key,
    usage_models_key,
)

LimitKind = Literal["requests", "tokens", "budget"]

# Every key we write starts with this; see the module docstring for the rest.
KEY_PREFIX = "claude-gateway:rl"
# The segment earlier releases' keys had after the prefix (`limits`' namespace): kept for rolling upgrades.
KEY_NAMESPACE = "LIMITER"
MS_PER_S = 1000
# A refund goes back only into the window it was charged to. A window is known by its end (ms on the
# Redis server's clock, TIME + PTTL), computed again at settlement: the two differ by the time a script
# runs, well under this tolerance. Two windows of one key end a whole period (>= 1 s) apart, unless an
# operator deleted the key and it was opened again within this tolerance: then a refund may land in
# the new window, never more than the reservation itself.
WINDOW_MATCH_TOLERANCE_MS = 50
# How often the in-memory windows drop the ones that have ended (on the next call after it). Windows are
# few (clients x limits) and one that has ended is dropped whenever it is touched; this only bounds what
# a client that went quiet leaves behind.
MEMORY_SWEEP_INTERVAL_S = 60.0


def window_key(kind: LimitKind, client: str, item: RateLimitItem) -> str:
    """The counter of `client`'s window of `item`, e.g. ``claude-gateway:rl:LIMITER/requests/billing/10/1/minute``."""
    return f"{KEY_PREFIX}:{KEY_NAMESPACE}/{kind}/{client}/{item.amount}/{item.multiples}/{item.GRANULARITY.name}"


@dataclass(frozen=True, slots=True)
class Slot:
    """One limit to charge in one call."""

    kind: LimitKind
    key: str  # `window_key`
    amount: int
    period_s: int
    cost: int
    description: str  # "10 requests per 1 minute", for messages
    # A budget's calendar window (its counter's key names its date); None for a fixed window (requests, tokens).
    calendar: CalendarWindow | None = None


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
    kind: LimitKind = "tokens"
    amount: int = 0  # the window's limit (for a budget's used ratio)
    calendar: CalendarWindow | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a reservation's windows owe once its request has ended, each charge with its own delta (used -
    reserved: tokens, or micro-USD for a budget), and the usage to add to the client's records."""

    adjustments: Sequence[tuple[Charge, int]]
    usage: UsageRecord | None = None


class Windows(Protocol):
    """Where the counters live."""

    name: str

    async def acquire(self, slots: Sequence[Slot]) -> Outcome:
        """Charge every slot's cost if every window has room for it, else charge nothing."""
        ...

    def adjust(self, settlement: Settlement) -> asyncio.Future[list[int]]:
        """Refund (delta < 0) into the charged windows still open, or charge more (delta > 0) to the current ones,
        even past their limits (a window in debt refuses until it resets); add the usage to the client's records.

        Under way before this returns, and carried out whether or not the future is awaited; the future is done once
        the settlement is applied (or has failed), with each charged window's count after it."""
        ...

    async def read_usage(self, window: CalendarWindow, client: str | None) -> WindowUsage:
        """The usage recorded in `window` for `client`, or for every client (None)."""
        ...

    async def count(self, key: str) -> int:
        """The count of the window open at `key` now (0 when none is)."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None:
        """Wait for the settlements under way, then let go of the storage."""
        ...


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

# One settlement. KEYS: the n charged windows. ARGV[1]: the tolerance (ms), ARGV[2]: n, then per window its delta
# (used - reserved), window end (ms) and period (ms). A refund goes only into the very window that was charged and
# never below zero: a window that has since reset owes nothing. An over-charge was spent now, so it lands in the
# current window, opening one if need be, past its limit if need be (the window is then in debt). Then, when there
# is usage to record: the usage key prefix, the model, the client, the USAGE_FIELDS counts, the number of calendar
# windows and per window its `<name>:<period>` and the time its keys expire (s); the usage keys (`spend`) are built
# here rather than sent, to keep a settlement small on the wire. Reply: each window's count after.
_SETTLE_LUA = """
local tolerance, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local counts = {}
for i = 1, n do
    local delta, window_end, period = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
    local ttl = redis.call('PTTL', KEYS[i])
    if delta < 0 then
        if ttl > 0 and math.abs(now + ttl - window_end) <= tolerance then
            local count = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
            local refund = math.min(-delta, count)
            if refund > 0 then
                redis.call('DECRBY', KEYS[i], refund)
            end
        end
    elseif delta > 0 then
        if ttl > 0 then
            redis.call('INCRBY', KEYS[i], delta)
        else
            redis.call('SET', KEYS[i], delta, 'PX', period)
        end
    end
    counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
end
local at = 3 * n + 3
if #ARGV >= at then
    local prefix, model, client = ARGV[at], ARGV[at + 1], ARGV[at + 2]
    local fields = {'input', 'output', 'cache_read', 'cache_write', 'cost_micro_usd', 'requests'}
    local windows_at = at + 3 + #fields
    for w = 0, tonumber(ARGV[windows_at]) - 1 do
        local window, expire_at = ARGV[windows_at + 1 + 2 * w], ARGV[windows_at + 2 + 2 * w]
        local base = prefix .. window .. ':'
        local hash, models, clients = base .. client .. ':' .. model, base .. client .. ':models', base .. 'clients'
        for f = 1, #fields do
            local count = tonumber(ARGV[at + 2 + f])
            if count ~= 0 then
                redis.call('HINCRBY', hash, fields[f], count)
            end
        end
        -- A window's keys all expire at its end (plus a week): set once, when the set first names the member.
        if redis.call('SADD', models, model) == 1 then
            redis.call('EXPIREAT', hash, expire_at)
            redis.call('EXPIREAT', models, expire_at)
        end
        if redis.call('SADD', clients, client) == 1 then
            redis.call('EXPIREAT', clients, expire_at)
        end
    end
end
return counts
"""


class RedisWindows:
    """Counters in Redis, through redis-py's asyncio client; admissions and settlements pipelined together."""

    name = "redis"

    def __init__(self, redis: Redis, *, owns_client: bool = False) -> None:
        """Over `redis` (the process's client, shared); `owns_client`: close it with `aclose`."""
        self.redis = redis
        self._owns_client = owns_client
        self._scripts = ScriptPipeline(redis)
        self._acquire = self._scripts.script(_ACQUIRE_LUA)
        self._settle = self._scripts.script(_SETTLE_LUA)

    @classmethod
    def connect(cls, redis_url: str, *, timeout_s: float) -> RedisWindows:
        """A client of its own, connecting lazily; each socket read, write and connect gives up after `timeout_s`."""
        redis = Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(redis, owns_client=True)

    async def acquire(self, slots: Sequence[Slot]) -> Outcome:
        args: list[int] = []
        for slot in slots:
            args += [slot.amount, slot.period_s * MS_PER_S, slot.cost]
        reply = await self._acquire([slot.key for slot in slots], args)
        admitted, now_ms, *windows = (int(value) for value in reply)
        states = []
        for slot, count, ttl_ms in zip(slots, windows[0::2], windows[1::2], strict=True):
            if ttl_ms <= 0:  # no window yet: one would last a full period from its first charge
                ttl_ms = slot.period_s * MS_PER_S
            states.append(SlotState(used=count, reset_in_s=ttl_ms / MS_PER_S, window_end=float(now_ms + ttl_ms)))
        return Outcome(admitted=admitted == 1, states=tuple(states))

    def adjust(self, settlement: Settlement) -> asyncio.Future[list[int]]:
        keys = [charge.key for charge, _ in settlement.adjustments]
        args: list[int | str] = [WINDOW_MATCH_TOLERANCE_MS, len(keys)]
        for charge, delta in settlement.adjustments:
            args += [delta, int(charge.window_end), charge.period_s * MS_PER_S]
        usage = settlement.usage
        if usage is not None:
            args += [f"{USAGE_PREFIX}:", usage.model, usage.client, *usage.counts, len(usage.windows)]
            for window in usage.windows:
                args += [f"{window.name}:{window.period}", usage_expires_at_s(window)]
        return self._settle.submit(keys, args)

    async def read_usage(self, window: CalendarWindow, client: str | None) -> WindowUsage:
        await self._scripts.sent()  # this worker's settlements first: a client reads back what it just spent
        if client is not None:
            clients = [client]
        else:
            clients = sorted(member.decode() for member in await self.redis.smembers(usage_clients_key(window)))  # type: ignore[misc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in clients:
                pipe.smembers(usage_models_key(window, name))
            model_sets: list[set[bytes]] = await pipe.execute()
        pairs = [(name, model.decode()) for name, models in zip(clients, model_sets, strict=True) for model in models]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, model in pairs:
                pipe.hgetall(usage_key(window, name, model))
            hashes: list[dict[bytes, bytes]] = await pipe.execute()
        found: WindowUsage = {}
        for (name, model), fields in zip(pairs, hashes, strict=True):
            counts = {field: int(fields.get(field.encode(), 0)) for field in USAGE_FIELDS}
            found.setdefault(name, {})[model] = counts
        return found

    async def count(self, key: str) -> int:
        await self._scripts.sent()
        return int(await self.redis.get(key) or 0)

    async def ping(self) -> None:
        await self.redis.ping()

    async def aclose(self) -> None:
        await self._scripts.drain()
        if self._owns_client:
            await self.redis.aclose()


@dataclass(slots=True)
class _Window:
    count: int
    ends_at: float  # time.time()


class MemoryWindows:
    """Counters in this process (no REDIS_URL, or Redis down with RATE_LIMIT_FAIL_MODE=open), same rules as the
    scripts. No method awaits anything while it reads and writes the windows: each is one atomic step."""

    name = "memory"

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        # Usage by calendar window (keyed as its clients set is in Redis): when it expires, and its counts.
        self._usage: dict[str, tuple[float, WindowUsage]] = {}
        self._sweep_at = time.monotonic() + MEMORY_SWEEP_INTERVAL_S

    def _open(self, key: str, now: float) -> _Window | None:
        """The window at `key` unless it has ended (then it is forgotten)."""
        window = self._windows.get(key)
        if window is not None and window.ends_at <= now:
            del self._windows[key]
            return None
        return window

    def _sweep(self, now: float) -> None:
        if time.monotonic() < self._sweep_at:
            return
        self._sweep_at = time.monotonic() + MEMORY_SWEEP_INTERVAL_S
        for key in [key for key, window in self._windows.items() if window.ends_at <= now]:
            del self._windows[key]

    async def acquire(self, slots: Sequence[Slot]) -> Outcome:
        now = time.time()
        self._sweep(now)
        windows = [self._open(slot.key, now) for slot in slots]
        counts = [window.count if window is not None else 0 for window in windows]
        admitted = all(count + slot.cost <= slot.amount for slot, count in zip(slots, counts, strict=True))
        if admitted:
            for i, slot in enumerate(slots):
                window = windows[i]
                if window is None or window.count <= 0:  # none, or all refunded: a fresh window
                    window = self._windows[slot.key] = _Window(slot.cost, now + slot.period_s)
                else:
                    window.count += slot.cost
                windows[i], counts[i] = window, window.count
        states = []
        for slot, window, count in zip(slots, windows, counts, strict=True):
            window_end = window.ends_at if window is not None else now + slot.period_s
            states.append(SlotState(used=count, reset_in_s=window_end - now, window_end=window_end))
        return Outcome(admitted=admitted, states=tuple(states))

    def adjust(self, settlement: Settlement) -> asyncio.Future[list[int]]:
        now = time.time()
        counts = []
        for charge, delta in settlement.adjustments:
            window = self._open(charge.key, now)
            if delta < 0:
                if window is not None and window.ends_at == charge.window_end:
                    window.count -= min(-delta, window.count)
            elif delta > 0:
                if window is not None:
                    window.count += delta
                else:
                    window = self._windows[charge.key] = _Window(delta, now + charge.period_s)
            counts.append(window.count if window is not None else 0)
        if settlement.usage is not None:
            self._record(settlement.usage, now)
        applied: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        applied.set_result(counts)
        return applied

    def _record(self, usage: UsageRecord, now: float) -> None:
        for window in usage.windows:
            _, clients = self._usage.get(usage_clients_key(window), (0.0, {}))
            models = clients.setdefault(usage.client, {})
            fields = models.setdefault(usage.model, dict.fromkeys(USAGE_FIELDS, 0))
            for field, count in zip(USAGE_FIELDS, usage.counts, strict=True):
                fields[field] += count
            self._usage[usage_clients_key(window)] = (float(usage_expires_at_s(window)), clients)
        # Windows whose keys would have expired in Redis go here too (checked when usage is recorded).
        for key in [key for key, (expires_at, _) in self._usage.items() if expires_at <= now]:
            del self._usage[key]

    async def read_usage(self, window: CalendarWindow, client: str | None) -> WindowUsage:
        _, clients = self._usage.get(usage_clients_key(window), (0.0, {}))
        chosen = clients if client is None else {client: clients[client]} if client in clients else {}
        return {name: {model: dict(fields) for model, fields in models.items()} for name, models in chosen.items()}

    async def count(self, key: str) -> int:
        window = self._open(key, time.time())
        return window.count if window is not None else 0

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
