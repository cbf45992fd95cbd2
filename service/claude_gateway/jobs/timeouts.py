"""How long a job may run, derived from the upstream settings (so that a slower UPSTREAM_TIMEOUT_S stretches it)."""

from __future__ import annotations

import math

from claude_gateway.jobs.constants import (
    CHUNK_BOUNDARY_FRACTION,
    CHUNK_CHARS,
    CHUNK_CONCURRENCY,
    MAX_SUMMARY_LEVELS,
    SUMMARY_MAX_CHARS,
)
from claude_gateway.settings import Settings


def call_budget_s(settings: Settings) -> float:
    """The longest one upstream call of a job can take: one try (a job's calls are not retried in place; the job
    is run again instead) at the full timeout."""
    return settings.upstream_timeout_s


def planned_rounds(document_chars: int) -> int:
    """Rounds of upstream calls a document of this size needs at most (chunks go CHUNK_CONCURRENCY at a time)."""
    rounds = 0
    chars = document_chars
    shortest_chunk = CHUNK_CHARS * (1 - CHUNK_BOUNDARY_FRACTION)
    for _ in range(MAX_SUMMARY_LEVELS + 1):
        chunks = 1 if chars <= CHUNK_CHARS else math.ceil(chars / shortest_chunk)
        rounds += math.ceil(chunks / CHUNK_CONCURRENCY)
        if chunks == 1:
            break
        chars = chunks * SUMMARY_MAX_CHARS
    return rounds


def job_timeout_s(settings: Settings) -> float:
    """One try of the largest document allowed (MAX_DOCUMENT_CHARS), every call at its longest.

    Defaults: 1M characters = 12 chunks (3 rounds of 4) + 1 combine = 4 rounds of 30 s = 120 s.
    """
    return planned_rounds(settings.max_document_chars) * call_budget_s(settings)
