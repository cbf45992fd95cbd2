"""Ctrl-C or `kill` on a running `python -m bench` stops the servers it started (Redis, the simulator, the gateway
and its workers) before it exits: left running, they would disturb the next run's figures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.procfs import process_tree

from tests.support.programs import require_program

REPO = Path(__file__).resolve().parents[2]
# Redis, the simulator and the gateway started, on a loaded machine.
STARTED_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0
# The line the run prints once the gateway is up and the first load starts.
STARTED_MARKER = "closed loop:"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(STARTED_TIMEOUT_S + EXIT_TIMEOUT_S + 30)]


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, reaped by nobody yet, has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda signum: signum.name)
def test_a_signal_stops_every_server_the_run_started(tmp_path: Path, signum: signal.Signals) -> None:
    require_program("wrk", "the bench's closed-loop load generator")
    require_program("redis-server", "the gateway's limits live in Redis")
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--out-dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    servers: list[int] = []
    try:
        assert bench.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + STARTED_TIMEOUT_S
        for line in bench.stdout:
            seen.append(line)
            if STARTED_MARKER in line or time.monotonic() > deadline:
                break
        assert any(STARTED_MARKER in line for line in seen), "".join(seen)
        servers = [pid for pid in process_tree(bench.pid) if pid != bench.pid]
        # redis-server, the simulator, the gateway's arbiter and its two workers at least.
        assert len(servers) >= 5, servers

        bench.send_signal(signum)
        rest, _ = bench.communicate(timeout=EXIT_TIMEOUT_S)

        assert bench.returncode == 128 + signum, "".join(seen) + rest
        assert f"stopped by {signum.name}" in rest
        assert "Traceback" not in rest, rest
        assert [pid for pid in servers if _alive(pid)] == []
    finally:  # whatever the assertions found: the servers run in sessions of their own
        for pid in [bench.pid, *servers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        bench.wait()
