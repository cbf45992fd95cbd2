"""Task ids and the Redis keys derived from them.

A task is known to its client by a `task_id` (32 hex digits). Everything stored for it is keyed by the client's
namespace (a hash of the client's name) as well, so another client asking for the same `task_id` looks at keys that
do not exist: isolation by construction, with no ownership record to check.
"""

from __future__ import annotations

import hashlib
import socket
import uuid

from claude_gateway.jobs.constants import JOB_KEY_PREFIX, QUEUE_NAME

# 64 bits of the client's name hash: collision-free for any realistic number of clients, short in every key.
_NAMESPACE_HEX = 16
_TASK_ID_HEX = 32


def client_namespace(client: str) -> str:
    """The client's part of every key: a hash, so that key listings do not spell out client names."""
    return hashlib.sha256(client.encode()).hexdigest()[:_NAMESPACE_HEX]


def new_task_id(client: str, idempotency_key: str | None) -> str:
    """A fresh uuid4 hex; or, given an `Idempotency-Key`, the same id every time this client sends that key.

    Deriving the id makes a repeated submit land on the same ARQ job id, which ARQ refuses to enqueue twice: the
    idempotency check is ARQ's own atomic one, with no extra key to keep in step.
    """
    if idempotency_key is None:
        return uuid.uuid4().hex
    digest = hashlib.sha256(f"{client_namespace(client)}\x00{idempotency_key}".encode())
    return digest.hexdigest()[:_TASK_ID_HEX]


def job_id(client: str, task_id: str) -> str:
    """The ARQ job id of a client's task."""
    return f"{client_namespace(client)}-{task_id}"


def parts_key(job: str) -> str:
    """The hash of a job's finished partial summaries (kept across its tries)."""
    return f"{JOB_KEY_PREFIX}{job}:parts"


def health_check_key(host: str | None = None) -> str:
    """One health key per worker host (the pod name in Kubernetes).

    ARQ's default is one key per queue, which any live worker keeps fresh: every pod's liveness probe would then
    pass as long as one pod works. A per-host key makes `--check` speak for the pod it runs in.
    """
    return f"{QUEUE_NAME}:health-check:{host or socket.gethostname()}"
