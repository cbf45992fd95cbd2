"""`results_url` under the production server (`claude-gateway serve`): the gateway's scheme and host as the client
reached it, the scheme taken from `X-Forwarded-Proto` as uvicorn resolves it behind a TLS-terminating proxy."""

from __future__ import annotations

import time

import httpx

from tests.conftest import CLIENT_KEY
from tests.server.conftest import ServeFactory

BATCH_END_TIMEOUT_S = 30.0
REQUESTS = [
    {
        "custom_id": "one",
        "params": {"model": "claude-sonnet-4-6", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]},
    }
]


def test_results_url_takes_the_scheme_and_host_the_client_reached(serve: ServeFactory) -> None:
    server = serve(workers=1)
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        batch_id = http.post("/v1/messages/batches", json={"requests": REQUESTS}).json()["id"]
        deadline = time.monotonic() + BATCH_END_TIMEOUT_S
        while http.get(f"/v1/messages/batches/{batch_id}").json()["processing_status"] != "ended":
            assert time.monotonic() < deadline
            time.sleep(0.05)

        proxied = http.get(
            f"/v1/messages/batches/{batch_id}",
            headers={"host": "gateway.example.com", "x-forwarded-proto": "https"},
        ).json()
        direct = http.get(f"/v1/messages/batches/{batch_id}").json()
        results = http.get(direct["results_url"])

    assert proxied["results_url"] == f"https://gateway.example.com/v1/messages/batches/{batch_id}/results"
    assert direct["results_url"] == f"{server.url}/v1/messages/batches/{batch_id}/results"
    assert results.status_code == 200
    assert results.text.startswith('{"custom_id":"one"')
