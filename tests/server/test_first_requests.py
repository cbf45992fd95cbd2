"""A new worker's first requests import nothing: what serving needs is loaded while the worker starts, not on the
event loop while its first clients (and every request that arrives meanwhile) wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import CLIENT_KEY
from tests.support.servers import Process, free_port

# A worker as `serve` runs it, in a fresh interpreter: the app from the environment, uvicorn on a real port, the
# lifespan started; then one request of each kind, each reporting the modules it imported.
WORKER = """
import asyncio
import json
import sys

import httpx
import uvicorn

from claude_gateway.web.app import app_from_env

PORT = int(sys.argv[1])
KEY = sys.argv[2]
BODY = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
REQUESTS = {
    "POST /v1/messages": ("/v1/messages", BODY),
    "POST /v1/messages, streamed": ("/v1/messages", {**BODY, "stream": True}),
    "POST /chat": ("/chat", {"message": "hi"}),
    "POST /chat/stream": ("/chat/stream", {"message": "hi"}),
    "POST /v1/messages/count_tokens": ("/v1/messages/count_tokens", BODY),
}


async def main() -> None:
    server = uvicorn.Server(uvicorn.Config(app_from_env(), port=PORT, loop="none", lifespan="on", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    imported = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", headers=HEADERS) as client:
        for name, (path, body) in REQUESTS.items():
            before = set(sys.modules)
            answer = await client.post(path, json=body)
            assert answer.status_code == 200, (name, answer.status_code, answer.text)
            imported[name] = sorted(set(sys.modules) - before)
    server.should_exit = True
    await serving
    print(json.dumps(imported))


asyncio.run(main())
"""


def test_a_new_workers_first_requests_import_nothing(simulator: Process) -> None:
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": simulator.url,
        "VALID_API_KEYS": CLIENT_KEY,
        "LOG_LEVEL": "warning",
        "METRICS_ENABLED": "false",
    }
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(free_port()), CLIENT_KEY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported: dict[str, list[str]] = json.loads(done.stdout.splitlines()[-1])
    assert len(imported) == 5
    late = {name: modules for name, modules in imported.items() if modules}
    assert not late, f"imported by a worker's first requests: {late}"
