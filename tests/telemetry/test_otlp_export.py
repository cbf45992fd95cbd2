"""Traces leave a real `claude-gateway serve` over OTLP/HTTP: the production path (`setup_tracing` in each worker,
a batch span processor, the OTLP exporter), received here by a small OTLP/HTTP receiver that decodes what a
collector would. An app instruments itself only when spans are recorded, so this is also the test that a worker
with an endpoint has its request spans, and that one without still names its caller's trace in its logs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import CLIENT_KEY
from tests.server.conftest import ServeFactory, serve  # the production server factory, reused as is

__all__ = ["serve"]

MODEL = "claude-sonnet-4-6"
SPANS_DEADLINE_S = 15.0


class Receiver:
    """An OTLP/HTTP traces endpoint on a free port: every span posted to /v1/traces, decoded."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = 404
                if self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf":
                    receiver.add(ExportTraceServiceRequest.FromString(body))
                    status = 200
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)

    def wait_for(self, *names: str) -> dict[str, tuple[dict[str, Any], Span]]:
        deadline = time.monotonic() + SPANS_DEADLINE_S
        while time.monotonic() < deadline:
            with self.lock:
                found = {span.name: (resource, span) for resource, span in self.spans if span.name in names}
            if len(found) == len(names):
                return found
            time.sleep(0.05)
        raise AssertionError(f"spans {names} not received; got {[span.name for _, span in self.spans]}")


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(each) for each in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_a_served_request_exports_its_span_and_the_chat_span_with_tokens(
    serve: ServeFactory, receiver: Receiver
) -> None:
    gateway = serve(
        workers=1,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="gateway-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "x-claude-code-session-id": "s-1"},
        json={"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": "hi [[sim:tokens=7]]"}]},
        timeout=30.0,
    )
    assert response.status_code == 200
    answer = response.json()
    found = receiver.wait_for("POST /v1/messages", f"chat {MODEL}")
    resource, request = found["POST /v1/messages"]
    _, chat = found[f"chat {MODEL}"]
    assert resource["service.name"] == "gateway-under-test"
    assert request.kind == Span.SPAN_KIND_SERVER
    assert attributes(request.attributes)["claude_code.session_id"] == "s-1"
    assert chat.kind == Span.SPAN_KIND_CLIENT
    assert chat.trace_id == request.trace_id
    assert chat.parent_span_id == request.span_id
    chat_attributes = attributes(chat.attributes)
    assert chat_attributes["gen_ai.request.model"] == MODEL
    assert chat_attributes["gen_ai.response.id"] == answer["id"]
    assert chat_attributes["gen_ai.usage.output_tokens"] == answer["usage"]["output_tokens"] == 7
    assert chat_attributes["gen_ai.usage.input_tokens"] == answer["usage"]["input_tokens"]


def test_without_an_endpoint_log_lines_still_carry_the_callers_trace(serve: ServeFactory) -> None:
    """No span is recorded (nor the app instrumented) without an endpoint, but a caller's `traceparent` (a mesh's,
    an upstream service's) still names the trace on the request's log lines."""
    gateway = serve(workers=1, LOG_FORMAT="json")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={
            "x-api-key": CLIENT_KEY,
            "anthropic-version": "2023-06-01",
            "x-request-id": "traced-request-1",
            "traceparent": f"00-{trace_id}-{parent_id}-01",
        },
        json={"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": "hi [[sim:tokens=3]]"}]},
        timeout=30.0,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + SPANS_DEADLINE_S
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in gateway.output().splitlines() if "traced-request-1" in line]
        if lines:
            break
        time.sleep(0.05)
    (line,) = lines
    assert line["message"] == "request"
    assert line["trace_id"] == trace_id
