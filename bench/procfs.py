"""What a server costs, read from /proc: CPU seconds and resident memory of its whole process tree, machine CPU use.

A server here is a tree (Gunicorn's master and its workers, uvicorn's supervisor and its spawned workers), so every
figure sums the root and all its live descendants. Reading a few small files costs microseconds: cheap enough to
sample every tenth of a second during a run without disturbing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Fields of /proc/<pid>/stat after the parenthesised command name (man 5 proc, counted from `state` = 0).
_STAT_PPID = 1
_STAT_UTIME = 11
_STAT_STIME = 12


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[_STAT_PPID]), []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    children = _children_map()
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 once it has gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[_STAT_UTIME]) + int(fields[_STAT_STIME])) / CLOCK_TICKS_PER_S


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it has gone)."""
    try:
        resident_pages = int((PROC / str(pid) / "statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * PAGE_BYTES


@dataclass(frozen=True)
class TreeSample:
    """CPU seconds per process of a tree at one instant (processes are kept apart to show how work is spread)."""

    cpu_by_pid: dict[int, float]

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_pid.values())

    def since(self, before: TreeSample) -> dict[int, float]:
        return {pid: cpu - before.cpu_by_pid.get(pid, 0.0) for pid, cpu in self.cpu_by_pid.items()}


class ServerTree:
    """A server's process tree, found again at each reading (workers may be spawned after the root starts)."""

    def __init__(self, root: int) -> None:
        self.root = root

    def pids(self) -> list[int]:
        return process_tree(self.root)

    def cpu(self) -> TreeSample:
        return TreeSample({pid: cpu_seconds(pid) for pid in self.pids()})

    def rss(self, pids: list[int] | None = None) -> int:
        return sum(rss_bytes(pid) for pid in (pids if pids is not None else self.pids()))


@dataclass(frozen=True)
class MachineCpu:
    """Busy and total jiffies of the whole machine, from the first line of /proc/stat."""

    busy: int
    total: int

    @classmethod
    def read(cls) -> MachineCpu:
        fields = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal ...: idle and iowait are the not-busy ones.
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields[:8])
        return cls(busy=total - idle, total=total)

    def busy_fraction_since(self, before: MachineCpu) -> float:
        elapsed = self.total - before.total
        return (self.busy - before.busy) / elapsed if elapsed > 0 else 0.0

    def busy_seconds_since(self, before: MachineCpu) -> float:
        return (self.busy - before.busy) / CLOCK_TICKS_PER_S
