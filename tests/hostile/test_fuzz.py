"""Property-based fuzzing of every operation in the gateway's own OpenAPI document (schemathesis), with a valid key.

Schema-valid requests (positive) and schema-violating ones (negative) go to a real gateway over HTTP, backed by the
simulator. Every answer must be documented: no 5xx, a documented status, content type and body schema; invalid
input must be refused with a 4xx. Bounded by `MAX_EXAMPLES` per operation and mode (about 500 requests in all).

schemathesis's own pytest entry point (`from_fixture`) does not run under pytest 9 (it reads `Function._nodeid`),
so each operation's Hypothesis strategy is driven here directly, which is what that entry point does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import CLIENT_KEY, Gateway
from tests.hostile.conftest import start_hardened_gateway
from tests.support.servers import Process

MAX_EXAMPLES = 25
REQUEST_TIMEOUT_S = 30
# Every operation the document must describe; a route missing from it, or one added unnoticed, fails the suite.
OPERATIONS = {
    "POST /chat": True,
    "POST /chat/stream": True,
    # A /v1 body is relayed for Anthropic to judge (the gateway reads only what it acts on: issue 13), so what the
    # document calls invalid may pass, as it would at Anthropic (`"system": null`): positive only. The gateway's own
    # refusals of such bodies (not JSON, no model, a duplicated field) are tested in tests/gateway.
    "POST /v1/messages": False,
    "POST /v1/messages/count_tokens": False,
    # The list's query is relayed for Anthropic to judge, as the batches' and files' lists below: positive only.
    "GET /v1/models": False,
    # Any string is a model id (an unknown one is Anthropic's 404): nothing schema-invalid to send.
    "GET /v1/models/{model_id}": False,
    "POST /analyze": True,
    "GET /analyze/{task_id}": True,
    "DELETE /analyze/{task_id}": True,
    "POST /v1/messages/batches": False,
    "POST /v1/files": True,
    # A list's query is relayed for Anthropic to judge, and Anthropic takes what the document would not (an empty
    # `limit`); an id is any string: positive only.
    "GET /v1/messages/batches": False,
    "GET /v1/files": False,
    "GET /v1/messages/batches/{batch_id}": False,
    "POST /v1/messages/batches/{batch_id}/cancel": False,
    "DELETE /v1/messages/batches/{batch_id}": False,
    "GET /v1/messages/batches/{batch_id}/results": False,
    "GET /v1/files/{file_id}": False,
    "DELETE /v1/files/{file_id}": False,
    "GET /v1/files/{file_id}/content": False,
    "GET /v1/gateway/usage": True,
    # No input to corrupt: positive only.
    "GET /health/live": False,
    "GET /health/ready": False,
    "GET /health": False,
}
METRICS_PORT_OPERATIONS = {"GET /health"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CASES = [
    pytest.param(label, mode, id=f"{mode.value}-{label}")
    for label, has_input in OPERATIONS.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_input or mode is GenerationMode.POSITIVE
]


@pytest.fixture(scope="module")
def fuzzed_gateway(simulator: Process) -> Iterator[Gateway]:
    # Limits far above what the fuzzer sends: a 429 is documented, but it would hide the routes behind it.
    gateway = start_hardened_gateway(simulator.url, rate_limit="1000000/minute")
    yield gateway
    gateway.server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_gateway: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_gateway.url}/openapi.json")


def test_the_document_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    results = list(api_schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), "the document has an operation schemathesis cannot read"
    labels = {result.ok().label for result in results if isinstance(result, Ok)}
    assert labels == set(OPERATIONS)


@pytest.mark.slow
@pytest.mark.parametrize(("label", "mode"), CASES)
def test_answers_stay_within_the_document(
    api_schema: schemathesis.BaseSchema, fuzzed_gateway: Gateway, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    # The deep check answers on METRICS_PORT only (404 on the app port, like a route that does not exist).
    base_url = fuzzed_gateway.metrics_url if label in METRICS_PORT_OPERATIONS else None
    assert operation is not None
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def fuzz(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers={"X-API-Key": CLIENT_KEY}, checks=checks, timeout=REQUEST_TIMEOUT_S
        )
        statuses.append(response.status_code)

    statuses: list[int] = []
    fuzz()
    assert statuses, "no request was sent"
    print(f"{label} {mode.value}: {len(statuses)} requests, statuses {sorted(set(statuses))}")
