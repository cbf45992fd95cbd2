"""Prometheus metrics, summed over every worker process of a pod.

Series (INTERFACE.md, then docs/CONTRACTS.md's additions):

- ``claude_gateway_http_requests_total{route,method,status}``         requests answered
- ``claude_gateway_http_request_duration_seconds{route,method}``      request latency, to the last byte
- ``claude_gateway_upstream_requests_total{model,outcome}``           Anthropic calls by outcome (a stream's is its last event)
- ``claude_gateway_upstream_duration_seconds{model,stream}``          Anthropic call latency
- ``claude_gateway_time_to_first_token_seconds{model}``               time until the first text delta
- ``claude_gateway_tokens_total{model,direction,client}``             tokens (input, output, cache_read, cache_write)
- ``claude_gateway_cost_usd_total{client,model}``                     USD spent, from real usage at the active prices
- ``claude_gateway_unpriced_tokens_total{model}``                     tokens of models without a price (not costed)
- ``claude_gateway_budget_used_ratio{client,window}``                 share of a key's budget held (day, month)
- ``claude_gateway_active_streams``                                    SSE streams open now (sum over workers)
- ``claude_gateway_rate_limited_total{client,limit}``                 requests refused by our own limits
- ``claude_gateway_jobs_total{status}``                                jobs enqueued, complete, failed, retried
- ``claude_gateway_job_duration_seconds``                              job run time
- ``claude_gateway_client_disconnects_total{route}``                  clients gone before their answer ended
- ``claude_gateway_overhead_seconds{route}``                           time in the gateway outside the upstream call
- ``claude_gateway_redis_up``                                          1 when the last Redis call worked (min over workers)
- ``claude_gateway_redis_errors_total{operation}``                    failed or timed-out Redis calls
- ``claude_gateway_jobs_queued``                                       jobs waiting in the queue (max over workers)
- ``claude_gateway_upstream_inflight``                                 Anthropic calls in flight (sum over workers)
- ``claude_gateway_backpressure_rejected_total{route}``               503s because no upstream slot freed in time
- ``claude_gateway_build_info{version}``                              always 1
- ``claude_gateway_streams_total{model,outcome}``                     relayed streams by their last event
- ``claude_gateway_redis_configured``                                  1 when REDIS_URL is set, 0 without Redis

Under Gunicorn, `claude-gateway serve` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker
imports this module; `render()` then aggregates every worker's files. Label values are bounded: `model` is a
model of the price table (its canonical id, aliases and dated ids mapped to it) or ``other``, `route` is a route
template, `client` a configured key's name.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics import MetricWrapperBase

from claude_gateway import __version__, pricing

NAMESPACE = "claude_gateway"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Gateway-side latencies: from sub-millisecond (auth, health) to a minutes-long generation.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Time to first token: the simulator's default (50 ms) must land apart from a healthy upstream (0.3-1.5 s)
# and from a slow one (> 3 s), which the TTFT alert watches.
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
# Overhead: the gateway's own share is meant to be well under 2 ms at p50; resolve 0.1 ms to 100 ms.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# Jobs: a short document takes seconds, a chunked one minutes.
_JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests answered.", ["route", "method", "status"], namespace=NAMESPACE
)  # route: the route template ("/analyze/{task_id}") or "unmatched"
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency, to the last byte sent.",
    ["route", "method"],
    namespace=NAMESPACE,
    buckets=_REQUEST_BUCKETS,
)
UPSTREAM_REQUESTS = Counter(
    "upstream_requests", "Calls to Anthropic by outcome.", ["model", "outcome"], namespace=NAMESPACE
)  # outcome: ok, rate_limited, overloaded, timeout, unreachable, error
UPSTREAM_DURATION = Histogram(
    "upstream_duration_seconds",
    "Latency of calls to Anthropic (streams: until the last event).",
    ["model", "stream"],
    namespace=NAMESPACE,
    buckets=_REQUEST_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "time_to_first_token_seconds",
    "Time from the gateway receiving a request to the first text delta from Anthropic.",
    ["model"],
    namespace=NAMESPACE,
    buckets=_TTFT_BUCKETS,
)
TOKENS = Counter(
    "tokens",
    "Tokens used, by model, direction and client.",
    ["model", "direction", "client"],
    namespace=NAMESPACE,
)  # direction: input (uncached), output, cache_read, cache_write
COST_USD = Counter(
    "cost_usd", "USD spent, by client and model, from each call's real usage.", ["client", "model"], namespace=NAMESPACE
)  # model: see model_label
UNPRICED_TOKENS = Counter(
    "unpriced_tokens",
    "Tokens of models that have no price, so no cost (every direction).",
    ["model"],
    namespace=NAMESPACE,
)
BUDGET_USED_RATIO = Gauge(
    "budget_used_ratio",
    "Share of a key's spend budget used in its UTC calendar window (spent and reserved; above 1 in debt).",
    ["client", "window"],
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",  # the last value any worker learned from the shared counter is the current one
)  # window: day, month; for alerts at 0.8 and 1
ACTIVE_STREAMS = Gauge("active_streams", "SSE streams open now.", namespace=NAMESPACE, multiprocess_mode="livesum")
RATE_LIMITED = Counter(
    "rate_limited", "Requests refused by the gateway's own limits.", ["client", "limit"], namespace=NAMESPACE
)  # limit: requests, tokens
JOBS = Counter("jobs", "Background jobs by status.", ["status"], namespace=NAMESPACE)
# status: enqueued, complete, failed, retried
JOB_DURATION = Histogram("job_duration_seconds", "Background job run time.", namespace=NAMESPACE, buckets=_JOB_BUCKETS)
CLIENT_DISCONNECTS = Counter(
    "client_disconnects", "Clients that went away before their answer ended.", ["route"], namespace=NAMESPACE
)
# A stream the client began receiving (a 200 and events), counted when it ends by its last event: `ok` for
# message_stop, else the failure's outcome; a client that left is not counted. Its failures are 200s that the
# availability SLO must still count (observability/alerts), and the stream-success SLO's denominator.
STREAMS = Counter(
    "streams", "Relayed streams by their last event.", ["model", "outcome"], namespace=NAMESPACE
)  # outcome: ok, rate_limited, overloaded, timeout, unreachable, error
OVERHEAD = Histogram(
    "overhead_seconds",
    "Time spent in the gateway outside the upstream call.",
    ["route"],
    namespace=NAMESPACE,
    buckets=_OVERHEAD_BUCKETS,
)


class Children:
    """A metric's labelled children, each looked up once: the request path asks for the same few on every request,
    and `labels()` checks its arguments and takes a lock each time. Call it with the label values in the metric's
    label order. Only for labels of bounded cardinality (all of ours are: see `model_label`)."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


http_requests = Children(HTTP_REQUESTS)
http_duration = Children(HTTP_DURATION)
upstream_requests = Children(UPSTREAM_REQUESTS)
upstream_duration = Children(UPSTREAM_DURATION)
time_to_first_token = Children(TIME_TO_FIRST_TOKEN)
tokens = Children(TOKENS)
cost_usd = Children(COST_USD)
unpriced_tokens = Children(UNPRICED_TOKENS)
overhead = Children(OVERHEAD)
client_disconnects = Children(CLIENT_DISCONNECTS)
streams = Children(STREAMS)


REDIS_UP = Gauge(
    "redis_up",
    "1 when the last Redis call succeeded, else 0.",
    namespace=NAMESPACE,
    multiprocess_mode="livemin",
)
# Whether the process uses Redis at all: without REDIS_URL, redis_up is held at 1 and the dashboards show Redis
# as "off" from this gauge rather than "up".
REDIS_CONFIGURED = Gauge(
    "redis_configured",
    "1 when REDIS_URL is set, 0 when limits and jobs are in-process.",
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
REDIS_ERRORS = Counter(
    "redis_errors", "Redis calls that failed or timed out.", ["operation"], namespace=NAMESPACE
)  # operation: ratelimit, jobs, health
JOBS_QUEUED = Gauge("jobs_queued", "Jobs waiting in the queue.", namespace=NAMESPACE, multiprocess_mode="livemax")
UPSTREAM_INFLIGHT = Gauge(
    "upstream_inflight", "Calls to Anthropic in flight.", namespace=NAMESPACE, multiprocess_mode="livesum"
)
BACKPRESSURE_REJECTED = Counter(
    "backpressure_rejected",
    "Requests refused because no upstream slot freed in time.",
    ["route"],
    namespace=NAMESPACE,
)
BUILD_INFO = Gauge(
    "build_info",
    "Always 1; the version is a label.",
    ["version"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
BUILD_INFO.labels(version=__version__).set(1)

OTHER_MODEL = "other"


def model_label(model: str) -> str:
    """A bounded label for a model name: its canonical id in the active price table, else ``other`` (never a name
    a client made up, however many it sends)."""
    return pricing.active().canonical(model) or OTHER_MODEL


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> bytes:
    """The exposition text: every worker's series when running multiprocess, else this process's."""
    directory = multiprocess_dir()
    if directory is None:
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """Gunicorn's `child_exit` hook: drop a dead worker's live gauges."""
    if multiprocess_dir() is not None:
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
