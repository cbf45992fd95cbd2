"""How jobs and their results are stored in Redis: JSON instead of ARQ's default pickle.

- Unpickling what Redis holds would run code for anyone able to write to Redis; JSON is only data.
- A result does not repeat its job's arguments: ARQ copies them into the result, which would keep every document
  in Redis for JOB_RESULT_TTL_S after its summary is done.
- A failure is stored as a kind and a message of ours (`JobFailed`), never an exception's own text, which may
  quote Anthropic's answer; on the way back it becomes an exception again, so ARQ's `Job.result()` and
  `Job.abort()` keep working (a cancellation comes back as `asyncio.CancelledError`, as ARQ expects).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import orjson
from arq.worker import JobExecutionFailed

ErrorKind = Literal["failed", "cancelled", "timeout", "interrupted", "expired", "internal"]

# The marker of a stored failure inside a result's `r` field.
_ERROR_MARK = "__job_error__"

MESSAGES: dict[ErrorKind, str] = {
    "failed": "Task failed",
    "cancelled": "Task was cancelled",
    "timeout": "Task took too long and was stopped",
    "interrupted": "Task was interrupted too many times (its worker stopped while running it)",
    "expired": "Task expired before a worker could run it",
    "internal": "Internal error",
}


class JobFailed(Exception):
    """A job that ended without a summary. `message` is ours and safe to show the client."""

    def __init__(self, message: str | None = None, kind: ErrorKind = "failed") -> None:
        self.message = message or MESSAGES[kind]
        self.kind: ErrorKind = kind
        super().__init__(self.message)


def describe_failure(exc: BaseException) -> JobFailed:
    """Any way a job can end badly, as a clean `JobFailed` (ARQ's own failures included)."""
    if isinstance(exc, JobFailed):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return JobFailed(kind="cancelled")
    if isinstance(exc, TimeoutError):  # ARQ's job_timeout
        return JobFailed(kind="timeout")
    if isinstance(exc, JobExecutionFailed):
        text = str(exc)
        if "retries exceeded" in text:  # started max_tries times without finishing: killed or shut down each time
            return JobFailed(kind="interrupted")
        if "expired" in text:
            return JobFailed(kind="expired")
    return JobFailed(kind="internal")


def serialize(data: dict[str, Any]) -> bytes:
    """ARQ's `job_serializer`, for jobs (`f`, `a`, `k`, ...) and results (the same plus `s`, `r`, ...)."""
    if "s" in data:
        data = {**data, "a": [], "k": {}}
        result = data.get("r")
        if isinstance(result, BaseException):
            failure = describe_failure(result)
            data["r"] = {_ERROR_MARK: failure.kind, "message": failure.message}
    return orjson.dumps(data)


def deserialize(raw: bytes) -> dict[str, Any]:
    """ARQ's `job_deserializer`: the inverse of `serialize`, failures rebuilt as exceptions."""
    data: dict[str, Any] = orjson.loads(raw)
    result = data.get("r")
    if "s" in data and isinstance(result, dict) and _ERROR_MARK in result:
        data["r"] = _failure(result)
    return data


def _failure(stored: dict[str, Any]) -> BaseException:
    kind = stored.get(_ERROR_MARK)
    if kind == "cancelled":
        return asyncio.CancelledError()
    if kind == "failed":
        return JobFailed(str(stored.get("message") or MESSAGES["failed"]))
    if kind in MESSAGES:
        return JobFailed(kind=kind)
    return JobFailed(kind="internal")


def failure_of(result: Any) -> JobFailed:
    """The clean failure behind an unsuccessful ARQ result, whatever it holds."""
    if isinstance(result, BaseException):
        return describe_failure(result)
    return JobFailed(kind="internal")
