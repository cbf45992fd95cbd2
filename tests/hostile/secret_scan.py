"""A pytest plugin: no client key, upstream key or prompt text in anything the test suite saw the gateway emit.

Enabled for the whole suite by `pytest_plugins = ["tests.hostile.secret_scan"]` in tests/conftest.py. It scans:

- every log record emitted in the test process (all of it: message, `extra` fields, exception text), as the
  gateway's JSON formatter would write it, failing the test during which a leak was logged (the access log's `path`
  is read for keys only, like a span's URL below);
- every span that ends once an SDK tracer provider is installed (name, attributes, events), except the GenAI content
  attributes an operator turns on with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`, and with the URL a
  request was sent to read for keys only (its path and query are the client's own choice);
- at the end of the session, the in-process `/metrics` text and the output of every subprocess the tests started
  (`claude-gateway serve`, workers, simulators: their `cgw-proc-*.log` files).

What counts as a secret: the test keys (`KEY_LITERALS`, `SECRET_PATTERNS`) and prompt markers: the simulator's
`[[sim:` directive, which most test prompts carry, and `PROMPT_MARKER`, for tests to put in prompts they send
(`PROMPT_LITERALS`).
The simulator is exempt: it stands in for Anthropic, which does see prompts. A failure names the secret's kind and
where it was seen, never the secret.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from claude_gateway.telemetry.logs import JsonFormatter
from tests.conftest import CLIENT_KEY, OTHER_KEY

# Put this in a prompt to have the scan prove it never reaches a log, span or metric.
PROMPT_MARKER = "canary-prompt-5e1f0b"
UPSTREAM_TEST_KEY = "sk-ant-test-upstream-0d9c4b"
KEY_LITERALS: dict[str, str] = {
    CLIENT_KEY: "a client key",
    OTHER_KEY: "a client key",
    UPSTREAM_TEST_KEY: "the upstream key",
}
PROMPT_LITERALS: dict[str, str] = {
    PROMPT_MARKER: "prompt text (PROMPT_MARKER)",
    "[[sim:": "prompt text (a simulator directive)",
}
SECRET_PATTERNS: dict[re.Pattern[str], str] = {
    # The shape of every client key the tests make up: cgw-test-alpha-7f3a9c, cgw-file-key-3b8e1f, ...
    re.compile(r"\bcgw-[a-z]+(?:-[a-z]+)?-[0-9a-f]{6}\b"): "a test client key",
    # Any but the client's placeholder (`PLACEHOLDER_KEY`), which is a package constant the fuzzer may draw.
    re.compile(r"\bsk-ant-(?!unset\b)[A-Za-z0-9_-]{2,}"): "an Anthropic key",
}
# The simulator plays Anthropic, which sees prompts by definition.
EXEMPT_LOGGERS = ("claude_gateway.simulator",)
# Libraries that log request bodies at debug level; `claude_gateway.telemetry.logs.configure_logging` holds them at WARNING
# in every process the gateway runs (tests that turn the root logger to DEBUG see what production never does).
QUIETED_LOGGERS = ("anthropic", "httpx", "httpx2", "httpcore", "httpcore2")
# Opt-in content capture: these attributes carry prompt and completion text on purpose.
CONTENT_ATTRIBUTES = frozenset({"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"})
# The URL a request was sent to, as its client wrote it (an id in a path is whatever the client chose, and the fuzzer
# draws strings from the package's own constants, the simulator's `[[sim:` among them): read for keys, not prompts.
URL_ATTRIBUTES = frozenset({"http.target", "http.url", "url.path", "url.query", "url.full"})
SUBPROCESS_LOGS = os.path.join(tempfile.gettempdir(), "cgw-proc-*.log")


def find_secret(text: str, *, prompts: bool = True) -> str | None:
    """The kind of the first secret in `text`, or None; prompt markers only with `prompts`."""
    literals = {**KEY_LITERALS, **PROMPT_LITERALS} if prompts else KEY_LITERALS
    for literal, kind in literals.items():
        if literal in text:
            return kind
    for pattern, kind in SECRET_PATTERNS.items():
        if pattern.search(text):
            return kind
    return None


@dataclass
class Findings:
    items: list[str] = field(default_factory=list)

    def add(self, kind: str, where: str) -> None:
        self.items.append(f"{kind} in {where}")

    def take(self) -> list[str]:
        items, self.items = self.items, []
        return items


class ScanningHandler(logging.Handler):
    """Formats each record as the gateway's JSON log line (every field) and looks for secrets in it."""

    def __init__(self, findings: Findings) -> None:
        super().__init__(level=logging.NOTSET)
        self.findings = findings
        self.formatter_ = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(EXEMPT_LOGGERS):
            return
        if record.name.split(".", 1)[0] in QUIETED_LOGGERS and record.levelno < logging.WARNING:
            return
        # The access log's `path` is the URL path as the client wrote it: read for keys only, as a span's URL is.
        path = getattr(record, "path", None)
        if isinstance(path, str):
            record = copy.copy(record)
            record.path = ""
        try:
            line = self.formatter_.format(record)
        except Exception:
            line = repr(record.__dict__)
        kind = find_secret(line) or (find_secret(path, prompts=False) if isinstance(path, str) else None)
        if kind is not None:
            self.findings.add(kind, f"a log record of {record.name!r} ({record.levelname.lower()}: {record.msg!r})")


class ScanningSpanProcessor(SpanProcessor):
    def __init__(self, findings: Findings) -> None:
        self.findings = findings

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        texts = [span.name]
        urls: list[str] = []
        for key, value in (span.attributes or {}).items():
            if key in URL_ATTRIBUTES:
                urls.append(f"{key}={value!r}")
            elif key not in CONTENT_ATTRIBUTES:
                texts.append(f"{key}={value!r}")
        for event in span.events:
            texts.append(event.name)
            texts += [key + "=" + repr(value) for key, value in (event.attributes or {}).items()]
        kind = find_secret("\n".join(texts)) or find_secret("\n".join(urls), prompts=False)
        if kind is not None:
            self.findings.add(kind, f"the span {span.name!r}")


class SecretScan:
    def __init__(self) -> None:
        self.findings = Findings()
        self.handler = ScanningHandler(self.findings)
        self.span_processor = ScanningSpanProcessor(self.findings)
        self.span_provider: TracerProvider | None = None
        self.started = time.time()

    def attach_to_spans(self) -> None:
        """Once a test has installed the SDK's tracer provider (tests/conftest.py does, on first use), join it."""
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider) and provider is not self.span_provider:
            provider.add_span_processor(self.span_processor)
            self.span_provider = provider

    def scan_metrics(self) -> None:
        from claude_gateway.telemetry import metrics

        kind = find_secret(metrics.render().decode())
        if kind is not None:
            self.findings.add(kind, "the /metrics text")

    def scan_subprocess_logs(self) -> None:
        for path in glob.glob(SUBPROCESS_LOGS):
            try:
                if os.path.getmtime(path) < self.started:
                    continue
                with open(path, encoding="utf-8", errors="replace") as log:
                    for number, line in enumerate(log, 1):
                        if any(f'"logger":"{name}' in line for name in EXEMPT_LOGGERS):
                            continue
                        kind = find_secret(line)
                        if kind is not None:
                            self.findings.add(kind, f"line {number} of a subprocess's output ({path})")
            except OSError:
                continue


_scan = SecretScan()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_scan.handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_scan.handler)


@pytest.fixture(autouse=True)
def _no_secret_in_this_test() -> Iterator[None]:
    _scan.attach_to_spans()
    yield
    _scan.attach_to_spans()
    leaks = _scan.findings.take()
    if leaks:
        pytest.fail("secrets leaked while this test ran: " + "; ".join(sorted(set(leaks))), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_this_session() -> Iterator[None]:
    yield
    _scan.scan_metrics()
    _scan.scan_subprocess_logs()
    leaks = _scan.findings.take()
    if leaks:
        pytest.fail("secrets leaked during the session: " + "; ".join(sorted(set(leaks))), pytrace=False)
