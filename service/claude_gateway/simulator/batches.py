"""Message Batches: created at once, answered when created, `ended` after the configured delay (or when canceled).

Each request's result is what `/v1/messages` would have answered (made by the app's `answer` function when the
batch is created): `succeeded` with the message, or `errored` with the error (a body the API refuses, or a
simulated fault from a directive in the request's last user message). A batch canceled before it ended reports
every request `canceled`. Batches expire 24 hours after creation, as the API's do; none is kept that long here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from claude_gateway.simulator.errors import SimError, invalid_request
from claude_gateway.simulator.ids import new_id
from claude_gateway.simulator.timestamps import rfc3339

JSONObject = dict[str, Any]
# (params, betas) -> a `result` object: {"type": "succeeded", "message": ...} or {"type": "errored", "error": ...}.
Answer = Callable[[object], JSONObject]

# Anthropic's bounds on one batch.
MAX_BATCH_REQUESTS = 100_000
BATCH_LIFETIME_S = 24 * 3600.0
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass(slots=True)
class Batch:
    id: str
    created_at: float
    ends_at: float
    results: list[tuple[str, JSONObject]]
    cancel_initiated_at: float | None = None

    def ended(self, now: float) -> bool:
        return now >= self.ends_at

    def final_results(self) -> Iterator[tuple[str, JSONObject]]:
        if self.cancel_initiated_at is not None:
            for custom_id, _ in self.results:
                yield custom_id, {"type": "canceled"}
        else:
            yield from self.results

    def as_json(self, now: float, base_url: str, *, canceling: bool = False) -> JSONObject:
        ended = self.ended(now) and not canceling
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for _, result in self.final_results():
                counts[result["type"]] += 1
        else:
            counts["processing"] = len(self.results)
        if ended:
            status = "ended"
        elif self.cancel_initiated_at is not None:
            status = "canceling"
        else:
            status = "in_progress"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": rfc3339(self.ends_at) if ended else None,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + BATCH_LIFETIME_S),
            "archived_at": None,
            "cancel_initiated_at": None if self.cancel_initiated_at is None else rfc3339(self.cancel_initiated_at),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }

    def result_lines(self) -> Iterator[bytes]:
        for custom_id, result in self.final_results():
            yield orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"


def not_found(batch_id: str) -> SimError:
    return SimError(404, "not_found_error", f"Message batch not found: {batch_id}")


class BatchStore:
    """Batches by id, oldest first; `delay_s` is how long one stays `in_progress`."""

    def __init__(self, delay_s: float, clock: Callable[[], float] = time.time) -> None:
        self.delay_s = delay_s
        self.clock = clock
        self._batches: dict[str, Batch] = {}

    def create(self, body: object, answer: Answer) -> Batch:
        requests = _requests(body)
        results = [(custom_id, answer(params)) for custom_id, params in requests]
        now = self.clock()
        batch = Batch(new_id("msgbatch"), now, now + self.delay_s, results)
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found(batch_id)
        return batch

    def newest_first(self, base_url: str) -> list[JSONObject]:
        now = self.clock()
        return [batch.as_json(now, base_url) for batch in reversed(self._batches.values())]

    def cancel(self, batch_id: str) -> Batch:
        """Cancels a batch still in progress: it is `canceling` now and `ended` from the next look on."""
        batch = self.get(batch_id)
        now = self.clock()
        if batch.cancel_initiated_at is None and not batch.ended(now):
            # Nothing has been answered yet (results show only at the end): every request is canceled.
            batch.cancel_initiated_at = now
            batch.ends_at = now
        return batch

    def delete(self, batch_id: str) -> None:
        batch = self.get(batch_id)
        if not batch.ended(self.clock()):
            raise invalid_request(f"Batch {batch_id} cannot be deleted while it is still in progress. Cancel it first.")
        del self._batches[batch_id]

    def results(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if not batch.ended(self.clock()):
            raise invalid_request(f"Batch {batch_id} has not finished processing; its results are not available yet.")
        return batch


def _requests(body: object) -> list[tuple[str, object]]:
    if not isinstance(body, dict):
        raise invalid_request("Request body must be a JSON object")
    if "requests" not in body:
        raise invalid_request("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise invalid_request("requests: Input should be a valid list")
    if not requests:
        raise invalid_request("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise invalid_request(f"requests: List should have at most {MAX_BATCH_REQUESTS} items")
    seen: set[str] = set()
    parsed: list[tuple[str, object]] = []
    for index, item in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(item, dict):
            raise invalid_request(f"{where}: Input should be a valid dictionary")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str):
            raise invalid_request(f"{where}.custom_id: Field required")
        if not _CUSTOM_ID.fullmatch(custom_id):
            raise invalid_request(f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise invalid_request(f"{where}.custom_id: Duplicate custom_id: {custom_id}")
        seen.add(custom_id)
        if "params" not in item:
            raise invalid_request(f"{where}.params: Field required")
        parsed.append((custom_id, item["params"]))
    return parsed
