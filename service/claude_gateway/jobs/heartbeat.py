"""The worker's liveness: a local file its event loop touches, which `claude-gateway worker --check` reads.

A task on the worker's event loop touches WORKER_HEARTBEAT_FILE every HEARTBEAT_INTERVAL_S; the probe passes while
the file was touched within HEARTBEAT_STALE_S. A dead worker, or one whose loop is blocked (a job hogging the CPU, a
call that never yields), stops touching it, and the kubelet restarts the pod. Redis has no part in it: the worker
rides out a Redis outage (it waits for Redis while its loop goes on), so a Redis outage never restarts a worker.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from claude_gateway.jobs.constants import HEARTBEAT_INTERVAL_S, HEARTBEAT_STALE_S
from claude_gateway.settings import Settings

logger = logging.getLogger("claude_gateway.jobs")


async def beat(path: Path) -> None:
    """Touch `path` now and every HEARTBEAT_INTERVAL_S, until cancelled.

    Inline rather than in a thread on purpose: the touch must happen on the loop it vouches for (a metadata update
    of a local file, microseconds).
    """
    failing = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()  # noqa: ASYNC240 (on this loop on purpose: see the docstring)
        except OSError as exc:  # the probe will fail and say why; say it here too, once
            if not failing:
                logger.error("cannot touch the heartbeat file %s: %s", path, exc.strerror)
            failing = True
        else:
            failing = False
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


def stop(path: Path) -> None:
    """The worker is stopping: remove its heartbeat, so that the probe no longer vouches for it."""
    path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Verdict:
    alive: bool
    reason: str


def check(path: Path, *, now: float | None = None) -> Verdict:
    """Whether the worker touched `path` within HEARTBEAT_STALE_S (by the file's modification time)."""
    try:
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return Verdict(False, f"no heartbeat file at {path}: the worker has not started, or has stopped")
    except OSError as exc:
        return Verdict(False, f"cannot read the heartbeat file {path}: {exc.strerror}")
    age = (time.time() if now is None else now) - touched
    if age > HEARTBEAT_STALE_S:
        return Verdict(
            False,
            f"heartbeat {age:.0f} s old (at most {HEARTBEAT_STALE_S:.0f} s): the worker's event loop is stuck or gone",
        )
    return Verdict(True, f"heartbeat {max(age, 0.0):.1f} s old")


def check_worker(settings: Settings) -> int:
    """`claude-gateway worker --check`: 0 while this host's worker touched its heartbeat file lately, else 1, with
    one line saying why. Reads a local file only: whatever Redis does, a live worker passes."""
    verdict = check(settings.worker_heartbeat_file)
    print(f"worker check: {verdict.reason}", file=sys.stdout if verdict.alive else sys.stderr)
    return 0 if verdict.alive else 1
