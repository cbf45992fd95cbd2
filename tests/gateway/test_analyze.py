"""`/analyze` over HTTP: in-process jobs, and ARQ jobs run by a real `claude-gateway worker` process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEY, OTHER_KEY, Gateway
from tests.support.servers import Process, free_port, start_command

MakeGateway = Callable[..., Gateway]
JOB_DEADLINE_S = 30.0


async def wait_for_status(http: httpx.AsyncClient, task_id: str, *, not_status: str = "processing") -> dict[str, Any]:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        body: dict[str, Any] = (await http.get(f"/analyze/{task_id}")).json()
        if body.get("status") != not_status or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


class TestAnalyzeInProcess:
    async def test_submit_then_complete(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            accepted = await http.post("/analyze", json={"document": "A report about gateways. " * 20})
            assert accepted.status_code == 202
            task = accepted.json()
            assert task["status"] == "processing"
            done = await wait_for_status(http, task["task_id"])
        assert done["status"] == "complete"
        assert done["task_id"] == task["task_id"]
        assert done["result"].strip()

    async def test_other_keys_cannot_see_or_cancel(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            task = (await http.post("/analyze", json={"document": "mine"}, headers={"X-API-Key": CLIENT_KEY})).json()
            seen = await http.get(f"/analyze/{task['task_id']}", headers={"X-API-Key": OTHER_KEY})
            cancelled = await http.delete(f"/analyze/{task['task_id']}", headers={"X-API-Key": OTHER_KEY})
            unknown = await http.get("/analyze/0123456789abcdef", headers={"X-API-Key": CLIENT_KEY})
        assert (seen.status_code, cancelled.status_code, unknown.status_code) == (404, 404, 404)
        assert seen.json() == {"detail": "Task not found"}

    async def test_idempotency_key_returns_the_same_task(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            first = await http.post(
                "/analyze", json={"document": "doc"}, headers=gateway.headers(**{"Idempotency-Key": "k1"})
            )
            again = await http.post(
                "/analyze", json={"document": "doc"}, headers=gateway.headers(**{"Idempotency-Key": "k1"})
            )
            other = await http.post(
                "/analyze", json={"document": "doc"}, headers={"X-API-Key": OTHER_KEY, "Idempotency-Key": "k1"}
            )
        assert first.json()["task_id"] == again.json()["task_id"]
        assert other.json()["task_id"] != first.json()["task_id"]

    async def test_oversized_document_is_413_and_nothing_is_queued(self, make_gateway: MakeGateway) -> None:
        gateway = make_gateway(max_document_chars=100)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            response = await http.post("/analyze", json={"document": "x" * 101})
            fine = await http.post("/analyze", json={"document": "x" * 100})
        assert response.status_code == 413
        assert fine.status_code == 202

    async def test_a_key_past_its_queued_bytes_gets_429_with_retry_after(self, make_gateway: MakeGateway) -> None:
        gateway = make_gateway(jobs_max_queued_bytes_per_client=2000, upstream_timeout_s=60)
        slow = "slow [[sim:ttft_ms=30000]] ".ljust(999, "x")  # still running when the third one comes
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            accepted = [await http.post("/analyze", json={"document": slow + str(i)}) for i in range(2)]
            refused = await http.post("/analyze", json={"document": slow})
            other = await http.post("/analyze", json={"document": slow}, headers={"X-API-Key": OTHER_KEY})
        assert [response.status_code for response in accepted] == [202, 202]
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "queued" in refused.json()["detail"]
        assert other.status_code == 202

    async def test_cancel_a_running_task(self, gateway: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            task = (await http.post("/analyze", json={"document": "slow [[sim:ttft_ms=5000]]"})).json()
            cancelled = await http.delete(f"/analyze/{task['task_id']}")
            after = await wait_for_status(http, task["task_id"])
        assert cancelled.status_code == 200
        assert after["status"] == "failed"

    @pytest.mark.parametrize("body", [{}, {"document": ""}, {"document": 5}, {"doc": "x"}])
    async def test_bad_bodies_are_422(self, gateway: Gateway, body: dict[str, object]) -> None:
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            response = await http.post("/analyze", json=body)
        assert response.status_code == 422


@pytest.fixture
def worker_process(redis_url: str, simulator: Process) -> Iterator[Process]:
    env = {
        "REDIS_URL": redis_url,
        "ANTHROPIC_BASE_URL": simulator.url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "METRICS_ENABLED": "false",
    }
    process = start_command(["worker"], port=free_port(), env=env, wait=False)
    yield process
    process.stop()


class TestAnalyzeOnWorkers:
    async def test_worker_process_runs_the_job(
        self, make_gateway: MakeGateway, redis_url: str, worker_process: Process
    ) -> None:
        gateway = make_gateway(redis_url=redis_url)
        async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers()) as http:
            task = (await http.post("/analyze", json={"document": "A document for the worker. " * 10})).json()
            done = await wait_for_status(http, task["task_id"])
        assert done["status"] == "complete", worker_process.output()
        assert done["result"]
        check = subprocess.run(
            [sys.executable, "-m", "claude_gateway", "worker", "--check"],
            env={**os.environ, "REDIS_URL": redis_url},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stderr

    def test_worker_without_redis_says_so_in_one_line(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "claude_gateway", "worker"],
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert "REDIS_URL" in result.stderr
