"""ARQ's in-progress mark, held as a lease by the worker running the job: a dead worker's job is free within seconds.

ARQ marks a job in progress (`arq:in-progress:<job id>`) as a worker starts it, for job_timeout + 10 s, and no other
worker starts it while the mark exists. When the worker dies (SIGKILL, OOMKill, a lost node) nothing deletes the
mark, so the job would wait that long (minutes) before another worker may run it. Instead the worker running a job
takes the mark over as it starts (its own id in it, expiring after IN_PROGRESS_LEASE_S) and renews it every
IN_PROGRESS_RENEW_S for exactly the jobs it is running. A live job, however slow, keeps its mark, so it is never run
twice; a dead worker's mark lapses within IN_PROGRESS_LEASE_S and the next worker to poll runs the job again,
resuming from the partial summaries kept in Redis.

Races, and why each step is one compare-and-set script:
- Taking over: ARQ's mark holds "1" (what arq 0.28 writes). Between ARQ setting it and our hook taking it over
  (milliseconds) no other worker can set it, so a "1" we find then is ours. Should ARQ ever write something else,
  the take-over finds no "1" and changes nothing: the job keeps ARQ's own long mark, as before this module.
- Renewing: only a mark that holds our id is renewed. A mark that is gone (it lapsed while Redis or our loop was
  stuck for longer than the lease, or ARQ deleted it as the job ended) is not created again: another worker may
  have started the job meanwhile, and a blind SET would give the job two owners that both believe they hold it.
  We log it and stop renewing. We do not cancel our run either: ARQ would then finish the job as "cancelled" and
  delete the mark, which may by then be the other worker's. Both runs produce the same summary from the same
  stored parts; only this lost-lease case (a worker unable to reach Redis for IN_PROGRESS_LEASE_S) can run twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from claude_gateway.jobs.constants import IN_PROGRESS_LEASE_S, IN_PROGRESS_RENEW_S, IN_PROGRESS_RENEW_TIMEOUT_S
from claude_gateway.telemetry import metrics

logger = logging.getLogger("claude_gateway.jobs")

# What ARQ's `Worker.start_jobs` writes into the mark (arq 0.28): the one value a take-over may replace.
ARQ_IN_PROGRESS_VALUE = "1"

# KEYS[1]: the mark. ARGV[1]: our id; ARGV[2]: the lease in ms; ARGV[3]: "1" while ARQ's own mark may be taken over.
# Sets the lease when the mark is ours (or ARQ's, on take-over); never creates a mark that is gone. 1 if set, else 0.
_HOLD = (
    """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] or (ARGV[3] == '1' and held == '"""
    + ARQ_IN_PROGRESS_VALUE
    + """') then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
)

_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def holder_id() -> str:
    """This worker's id in the marks it holds: its host (the pod) and pid, which an operator can read in Redis."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InProgressLeases:
    """The in-progress marks of the jobs this worker runs: taken over as each starts, renewed until it ends.

    `started(job_id)` and `ended(job_id)` are ARQ's `on_job_start` and `on_job_end` hooks; `run()` is the renewing
    task, started with the worker. None of them raises: a Redis failure here only shortens or lengthens a lease.
    """

    def __init__(self, redis: Redis, *, holder: str | None = None) -> None:
        self._redis = redis
        self._hold = redis.register_script(_HOLD)
        self.holder = holder or holder_id()
        # Job id -> whether the mark is ours yet (False until the take-over succeeded).
        self._jobs: dict[str, bool] = {}

    @property
    def jobs(self) -> frozenset[str]:
        return frozenset(self._jobs)

    async def started(self, job_id: str) -> None:
        self._jobs[job_id] = False
        await self._renew(job_id)

    def ended(self, job_id: str) -> None:
        """Stop renewing: ARQ deletes the mark as it records the outcome, right after this."""
        self._jobs.pop(job_id, None)

    async def run(self) -> None:
        """Renew every IN_PROGRESS_RENEW_S, until cancelled (with the worker)."""
        while True:
            await asyncio.sleep(IN_PROGRESS_RENEW_S)
            await self.renew_all()

    async def renew_all(self) -> None:
        """One round: the lease of each job this worker runs, renewed at once (a job's renewal waits for no other)."""
        await asyncio.gather(*(self._renew(job_id) for job_id in list(self._jobs)))

    async def _renew(self, job_id: str) -> None:
        taking_over = not self._jobs.get(job_id, True)
        try:
            async with asyncio.timeout(IN_PROGRESS_RENEW_TIMEOUT_S):
                held = await self._hold(
                    keys=[in_progress_key(job_id)],
                    args=[self.holder, int(IN_PROGRESS_LEASE_S * 1000), "1" if taking_over else "0"],
                )
        except _REDIS_FAILURES as exc:
            metrics.REDIS_ERRORS.labels(operation="jobs").inc()
            logger.warning("job %s: its in-progress lease was not renewed (%s)", job_id, type(exc).__name__)
            return
        if job_id not in self._jobs:  # it ended while we waited: whatever we did, ARQ deletes the mark now
            return
        if held:
            self._jobs[job_id] = True
            return
        self._jobs.pop(job_id, None)
        if taking_over:
            logger.warning(
                "job %s: its in-progress mark is not ARQ's as expected (gone, another worker's, or a new ARQ's); "
                "not renewed, so it keeps ARQ's own expiry",
                job_id,
            )
        else:
            logger.warning(
                "job %s: its in-progress mark is gone or not ours; not renewed, so another worker may run it too",
                job_id,
            )


async def on_job_start(ctx: dict[str, Any]) -> None:
    leases: InProgressLeases | None = ctx.get("in_progress")
    if leases is not None:
        await leases.started(ctx["job_id"])


async def on_job_end(ctx: dict[str, Any]) -> None:
    leases: InProgressLeases | None = ctx.get("in_progress")
    if leases is not None:
        leases.ended(ctx["job_id"])
