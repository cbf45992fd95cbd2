"""Write the Grafana dashboards in this folder from one description, so that every panel shares its datasource,
variables and selectors.

    python observability/dashboards/generate.py          # (re)write overview.json and usage.json
    python observability/dashboards/generate.py --check  # exit 1 when a file differs from what would be written

Edit this file, not the JSON (`make dashboards` regenerates; `make lint-observability` checks they agree).
Every query reads only the series of docs/CONTRACTS.md / INTERFACE.md, the recording rules of
observability/alerts/claude-gateway.rules.yaml, `up`, and for the Kubernetes row the series of kube-state-metrics and
cAdvisor; tests/observability checks that. A panel that needs a source besides the gateway says so with `requires=`
(one of REQUIREMENTS): `requirements()` lists them, and the live test skips exactly those.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
TAG = "claude-gateway"
OVERVIEW_UID = "claude-gateway-overview"
USAGE_UID = "claude-gateway-usage"
# The runbooks' path in the repository and in the packaged chart (observability/alerts/parameters.yaml's default
# runbookBaseUrl): not a URL Grafana can open, so the dashboards name it in their description rather than link it.
RUNBOOK_BASE = "observability/runbooks/"
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
# Traces and logs of a slow or failing request: the Tempo and Loki data sources the data links open in Explore.
SERVICE_NAME = "claude-gateway"  # the spans' service.name (OTEL_SERVICE_NAME's default in the gateway)
API_CONTAINER = "api"  # the chart's container names: the ServiceMonitor's `container` label tells pods apart
WORKER_CONTAINER = "worker"
API_PODS = f'container="{API_CONTAINER}"'
WORKER_PODS = f'container="{WORKER_CONTAINER}"'
# The latency SLO's default threshold (observability/alerts/parameters.yaml): the trace link finds slower requests.
SLOW_REQUEST = "10s"
SLOW_REQUEST_MS = 10000

# Panels whose series come from outside the gateway, or from gateway metrics not exported yet: without that source
# they are empty. tests/server/test_live_dashboards.py (a real Prometheus scraping a real gateway) skips exactly
# these panels, with this reason.
KUBE_STATE_METRICS = "kube-state-metrics"
CADVISOR = "cadvisor"
REQUIREMENTS = {
    KUBE_STATE_METRICS: "kube-state-metrics (v2) scraped by the same Prometheus (kube-prometheus-stack has it)",
    CADVISOR: "the kubelets' cAdvisor metrics scraped by the same Prometheus (kube-prometheus-stack has them)",
}
GRAFANA_SCHEMA_VERSION = 39  # Grafana 10.4 / 11; older Grafanas migrate it on import
GRID_COLUMNS = 24
STAT_HEIGHT = 4
GRAPH_HEIGHT = 8

# Selectors shared by the panels. `=~"$var"` with the variables' "All" value `.*` also matches series
# without that label (Prometheus outside Kubernetes has no namespace or pod).
SCOPE = ('namespace=~"$namespace"', 'pod=~"$pod"')
SERVING = 'route!~"/health.*|/metrics"'  # the routes the availability SLO counts
NON_STREAMING = 'route=~"/chat|/analyze.*|/v1/messages/count_tokens|/v1/models.*"'  # the latency SLO's routes
USAGE_SCOPE = ('namespace=~"$namespace"', 'model=~"$model"', 'client=~"$client"')
GATEWAY_JOB = 'job="claude-gateway"'
FAILED = 'status="failed"'
FINISHED = 'status=~"complete|failed"'
NOT_OK = 'outcome!="ok"'
RATE = "$__rate_interval"
PRICE_JOIN = "* on (price_model, direction) group_left () claude_gateway:token_price:usd_per_mtok"
# Same price_model as the claude_gateway:tokens:rate5m recording rule: the model without a date or -latest.
PRICE_MODEL = '"price_model", "$1", "model", "(.+?)(?:-[0-9]{8}|-latest)?"'


def series(metric: str, *matchers: str) -> str:
    """`metric{a, b}`: a selector from matcher strings, to keep the braces out of f-strings."""
    return f"{metric}{{{', '.join(matchers)}}}"


def target(expr: str, legend: str = "", *, instant: bool = False) -> Json:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": "table" if instant else "time_series",
    }


def quantiles(histogram: str, *matchers: str, levels: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[Json]:
    return [target(quantile_by(q, histogram, "", *matchers), f"p{round(q * 100)}") for q in levels]


def needs(description: str, requires: str | None) -> str:
    return f"{description} Needs {REQUIREMENTS[requires]}." if requires else description


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    *,
    width: int = 12,
    stack: bool = False,
    links: list[Json] | None = None,
    requires: str | None = None,
) -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": needs(description, requires),
        "_requires": requires,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 30 if stack else 10,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
                "links": links or [],
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "gridPos": {"w": width, "h": GRAPH_HEIGHT},
    }


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str,
    steps: list[tuple[float | None, str]],
    *,
    width: int = 4,
    mappings: list[Json] | None = None,
    requires: str | None = None,
) -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": needs(description, requires),
        "_requires": requires,
        "datasource": DATASOURCE,
        "targets": [target(expr)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "mappings": mappings or [],
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": color, "value": value} for value, color in steps],
                },
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
        "gridPos": {"w": width, "h": STAT_HEIGHT},
    }


def table(
    title: str, description: str, expr: str, *, width: int = 12, unit: str = "none", requires: str | None = None
) -> Json:
    return {
        "type": "table",
        "title": title,
        "description": needs(description, requires),
        "_requires": requires,
        "datasource": DATASOURCE,
        "targets": [target(expr, instant=True)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        "gridPos": {"w": width, "h": GRAPH_HEIGHT},
    }


def row(title: str) -> Json:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "datasource": DATASOURCE,
        "panels": [],
        "gridPos": {"w": GRID_COLUMNS, "h": 1},
    }


def lay_out(panels: list[Json]) -> list[Json]:
    """Give each panel an id and a place: left to right, wrapping at the grid's width, rows full width."""
    x = y = line_height = 0
    for panel_id, panel in enumerate(panels, start=1):
        pos = panel["gridPos"]
        if x + pos["w"] > GRID_COLUMNS or panel["type"] == "row":
            x, y, line_height = 0, y + line_height, 0
        pos["x"], pos["y"] = x, y
        x += pos["w"]
        line_height = max(line_height, pos["h"])
        panel["id"] = panel_id
        for ref, query in zip("ABCDEFGH", panel.get("targets", []), strict=False):
            query["refId"] = ref
    return panels


def query_variable(name: str, label: str, query: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
    }


def datasource_variable(name: str = "datasource", label: str = "Data source", kind: str = "prometheus") -> Json:
    return {
        "type": "datasource",
        "name": name,
        "label": label,
        "query": kind,
        "regex": "",
        "current": {},
        "refresh": 1,
        "hide": 0,
    }


def explore_link(title: str, datasource: str, kind: str, query: Json) -> Json:
    """A data link opening Grafana's Explore on `datasource` (a variable) with `query`, over the panel's time range.

    Grafana fills `${...}` variables into the URL before it opens it, so they stay unencoded.
    """
    pane = {
        "datasource": f"${{{datasource}}}",
        "queries": [{"refId": "A", "datasource": {"type": kind, "uid": f"${{{datasource}}}"}, **query}],
        "range": {"from": "${__from}", "to": "${__to}"},
    }
    panes = json.dumps({"a": pane}, separators=(",", ":"))
    return {
        "title": title,
        "url": "/explore?schemaVersion=1&panes=" + urllib.parse.quote(panes, safe="${}:,[]_-."),
        "targetBlank": True,
    }


def trace_links(traceql: str) -> Json:
    return explore_link("Traces in Tempo", "tempo", "tempo", {"queryType": "traceql", "query": traceql, "limit": 20})


def log_links(logql: str) -> Json:
    return explore_link("Logs in Loki (with trace_id)", "loki", "loki", {"expr": logql, "queryType": "range"})


# The API pods' request log lines (JSON, one per request, with `trace_id`), and spans of the gateway's service.
API_LOGS = f'{{namespace=~"$namespace", container="{API_CONTAINER}"}} | json | trace_id != ""'
SLOW_LINKS = [
    trace_links(f'{{resource.service.name="{SERVICE_NAME}" && kind=server && duration > {SLOW_REQUEST}}}'),
    log_links(f"{API_LOGS} | duration_ms > {SLOW_REQUEST_MS}"),
]
ERROR_LINKS = [
    trace_links(f'{{resource.service.name="{SERVICE_NAME}" && status=error}}'),
    log_links(f"{API_LOGS} | status_code >= 500"),
]
STREAM_LINKS = [
    trace_links(f'{{resource.service.name="{SERVICE_NAME}" && name=~"chat .*" && status=error}}'),
    log_links(f'{API_LOGS} | route=~"/chat/stream|/v1/messages"'),
]


def links(other_uid: str, other_title: str) -> list[Json]:
    return [
        {
            "title": other_title,
            "type": "link",
            "url": f"/d/{other_uid}",
            "icon": "dashboard",
            "keepTime": True,
            "includeVars": True,
            "targetBlank": False,
            "asDropdown": False,
            "tags": [],
            "tooltip": "",
        },
    ]


def dashboard(uid: str, title: str, description: str, variables: list[Json], panels: list[Json]) -> Json:
    other_uid, other_title = (
        (USAGE_UID, "Claude Gateway / Usage") if uid == OVERVIEW_UID else (OVERVIEW_UID, "Claude Gateway / Overview")
    )
    return {
        "uid": uid,
        "title": title,
        "description": f"{description} Runbooks: {RUNBOOK_BASE} in the repository and the chart package.",
        "tags": [TAG],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": GRAFANA_SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "version": 1,
        "links": links(other_uid, other_title),
        "annotations": {"list": []},
        "templating": {
            "list": [
                datasource_variable(),
                datasource_variable("tempo", "Traces", "tempo"),
                datasource_variable("loki", "Logs", "loki"),
                *variables,
            ]
        },
        "panels": lay_out(panels),
    }


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE}])"


def error_ratio(by: str = "", *, streams: bool = False) -> str:
    """5xx share of serving requests (with `streams`, plus streams broken after their first byte, as the
    availability SLI counts them); 0 (not "No data") while nothing of it was ever counted."""
    total_by = f"sum by ({by}) " if by else "sum"
    errors = series("claude_gateway_http_requests_total", *SCOPE, SERVING, 'status=~"5.."')
    total = f"{total_by}({rate(series('claude_gateway_http_requests_total', *SCOPE, SERVING))})"
    failed = f"({total_by}({rate(errors)}) or {total} * 0)"
    if streams:
        broken = series("claude_gateway_streams_total", *SCOPE, NOT_OK)
        failed = f"({failed} + ({total_by}({rate(broken)}) or {total} * 0))"
    return f"{failed} / {total}"


def quantile_by(q: float, histogram: str, by: str, *matchers: str) -> str:
    """The q-quantile of a histogram's rate, per `by` labels ("" for one series)."""
    buckets = series(f"{histogram}_bucket", *matchers)
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(buckets)}))"


def overview() -> Json:
    requests = series("claude_gateway_http_requests_total", *SCOPE, SERVING)
    budget = "scalar(1 - claude_gateway:slo_availability:objective)"
    burn = [
        target(
            f"{series(f'claude_gateway:http_requests:error_ratio_rate{window}', SCOPE[0])} / {budget}",
            f"{{{{namespace}}}} {window}",
        )
        for window in ("1h", "6h", "1d", "3d")
    ]
    scraped = "Gateway targets answering Prometheus's scrapes (ClaudeGatewayTargetDown fires when none do)"
    redis_up = f"min({series('claude_gateway_redis_up', *SCOPE)})"
    redis_configured = f"max({series('claude_gateway_redis_configured', *SCOPE)})"
    panels = [
        row("At a glance"),
        stat(
            "Requests per second",
            "Requests answered on the serving routes (every route but /health* and /metrics).",
            f"sum({rate(requests)})",
            "reqps",
            [(None, "blue")],
        ),
        stat(
            "Error ratio (5xx and broken streams)",
            "Share of serving requests answered with a 5xx or streams broken after their first byte (the "
            "availability SLI). Orange above the 0.1% error budget, red above 14.4 times it "
            "(ClaudeGatewayErrorBudgetBurn pages there).",
            error_ratio(streams=True),
            "percentunit",
            [(None, "green"), (0.001, "orange"), (0.0144, "red")],
        ),
        stat(
            "p95 latency, non-streaming",
            "95th percentile duration of the non-streaming routes (/chat, /analyze*, count_tokens, models): the "
            "latency SLO wants 99% within 10 s.",
            quantile_by(0.95, "claude_gateway_http_request_duration_seconds", "", *SCOPE, NON_STREAMING),
            "s",
            [(None, "green"), (5, "orange"), (10, "red")],
        ),
        stat(
            "Active streams",
            "SSE streams open now, over every selected pod.",
            f"sum({series('claude_gateway_active_streams', *SCOPE)})",
            "short",
            [(None, "blue")],
            width=3,
        ),
        stat(
            "API pods scraped",
            f"{scraped}: the API pods (container `{API_CONTAINER}`).",
            f"sum({series('up', GATEWAY_JOB, *SCOPE, API_PODS)})",
            "short",
            [(None, "red"), (1, "green")],
            width=3,
        ),
        stat(
            "Worker pods scraped",
            f"{scraped}: the background job workers (container `{WORKER_CONTAINER}`).",
            f"sum({series('up', GATEWAY_JOB, *SCOPE, WORKER_PODS)})",
            "short",
            [(None, "red"), (1, "green")],
            width=3,
        ),
        stat(
            "Redis",
            "up when every pod's last Redis call succeeded, down when one failed (ClaudeGatewayRedisDown); off when "
            "the gateway runs without REDIS_URL (redis.mode: none), by design.",
            # 0 down, 1 up, 3 off: redis_up is held at 1 when no Redis is configured.
            f"({redis_up} + 2 * (1 - {redis_configured})) or {redis_up}",
            "short",
            [(None, "red"), (1, "green"), (2, "blue")],
            width=3,
            mappings=[{"type": "value", "options": {"0": {"text": "down"}, "1": {"text": "up"}, "3": {"text": "off"}}}],
        ),
        row("Traffic and errors"),
        timeseries(
            "Requests per second by route",
            "Every route, probes included; `route` is the route template.",
            [target(f"sum by (route) ({rate(series('claude_gateway_http_requests_total', *SCOPE))})", "{{route}}")],
            "reqps",
            stack=True,
        ),
        timeseries(
            "Responses by status",
            "Serving routes by HTTP status: 429 our rate limits or Anthropic's, 503 overloaded/backpressure, "
            "504 upstream timeout, 502 other upstream failures. Links: failing requests' traces and logs.",
            [target(f"sum by (status) ({rate(requests)})", "{{status}}")],
            "reqps",
            stack=True,
            links=ERROR_LINKS,
        ),
        timeseries(
            "Error ratio against the error budget",
            "The share of serving requests that failed (5xx, or a stream broken after its first byte), and the "
            "budget the availability SLO allows (1 - objective). Links: failing requests' traces and logs.",
            [
                target(error_ratio(streams=True), "error ratio"),
                target("1 - max(claude_gateway:slo_availability:objective)", "error budget"),
            ],
            "percentunit",
            links=ERROR_LINKS,
        ),
        timeseries(
            "Error budget burn rate",
            "Error ratio over each alert window divided by the budget: 1 spends the 30-day budget in 30 days. "
            "ClaudeGatewayErrorBudgetBurn pages at 14.4 (1h) and 6 (6h), opens a ticket at 3 (1d) and 1 (3d).",
            burn,
            "short",
        ),
        row("Latency"),
        timeseries(
            "Request latency, non-streaming (p50, p95, p99)",
            "Duration of the non-streaming routes' requests, to the last byte (ClaudeGatewayLatencyBudgetBurn). "
            "Links: traces and logs of requests slower than the latency SLO's 10 s.",
            quantiles("claude_gateway_http_request_duration_seconds", *SCOPE, NON_STREAMING),
            "s",
            links=SLOW_LINKS,
        ),
        timeseries(
            "p95 latency by route",
            "Streams last as long as their answer: read /chat/stream and /v1/messages with that in mind. "
            "Links: traces and logs of slow requests.",
            [
                target(
                    quantile_by(0.95, "claude_gateway_http_request_duration_seconds", "route", *SCOPE, SERVING),
                    "{{route}}",
                )
            ],
            "s",
            links=SLOW_LINKS,
        ),
        timeseries(
            "Time to first token (p50, p95, p99)",
            "From the gateway receiving a request to the first text from Anthropic "
            "(the time-to-first-token SLO: ClaudeGatewayTimeToFirstTokenBudgetBurn). Links: streams' traces and logs.",
            quantiles("claude_gateway_time_to_first_token_seconds", *SCOPE),
            "s",
            links=STREAM_LINKS,
        ),
        timeseries(
            "Time to first token p95 by model",
            "A single slow model points at Anthropic; every model slow points at the gateway or the network.",
            [target(quantile_by(0.95, "claude_gateway_time_to_first_token_seconds", "model", *SCOPE), "{{model}}")],
            "s",
        ),
        timeseries(
            "Upstream call duration p95 by model",
            "Calls to Anthropic; streams until their last event.",
            [
                target(
                    quantile_by(0.95, "claude_gateway_upstream_duration_seconds", "model, stream", *SCOPE),
                    "{{model}} stream={{stream}}",
                )
            ],
            "s",
        ),
        timeseries(
            "Gateway overhead (p50, p99)",
            "Time spent in the gateway outside the upstream call: auth, rate limits, Redis, waiting for a slot "
            "(ClaudeGatewayOverheadHigh fires when the p99 stays above 100 ms).",
            quantiles("claude_gateway_overhead_seconds", *SCOPE, levels=(0.5, 0.99)),
            "s",
        ),
        row("Streams"),
        timeseries(
            "Streams by last event",
            "Streams the gateway relayed, counted when they end: ok when Anthropic sent message_stop, otherwise the "
            "failure that ended them after their first byte (ClaudeGatewayStreamErrorBudgetBurn). Clients that "
            "hang up are not counted. Links: broken streams' traces and logs.",
            [target(f"sum by (outcome) ({rate(series('claude_gateway_streams_total', *SCOPE))})", "{{outcome}}")],
            "reqps",
            stack=True,
            width=8,
            links=STREAM_LINKS,
        ),
        timeseries(
            "Stream success ratio",
            "Share of streams ending with message_stop over 5 minutes (the stream-success SLI), and the SLO's "
            "objective.",
            [
                target(f"1 - {series('claude_gateway:streams:error_ratio_rate5m', SCOPE[0])}", "{{namespace}}"),
                target("max(claude_gateway:slo_stream_success:objective)", "objective"),
            ],
            "percentunit",
            width=8,
        ),
        timeseries(
            "Time to first token over the SLO threshold",
            "Share of streams whose first token came later than the time-to-first-token SLO's threshold (5 s by "
            "default), over 5 minutes, and the budget the SLO allows (1 - objective).",
            [
                target(series("claude_gateway:time_to_first_token:slow_ratio_rate5m", SCOPE[0]), "{{namespace}}"),
                target("1 - max(claude_gateway:slo_time_to_first_token:objective)", "budget"),
            ],
            "percentunit",
            width=8,
            links=STREAM_LINKS,
        ),
        row("Upstream (Anthropic)"),
        timeseries(
            "Upstream calls by outcome",
            "Every call to Anthropic by outcome; a stream's outcome is its last event, not its status code.",
            [
                target(
                    f"sum by (outcome) ({rate(series('claude_gateway_upstream_requests_total', *SCOPE))})",
                    "{{outcome}}",
                )
            ],
            "reqps",
            stack=True,
        ),
        timeseries(
            "Upstream errors by outcome and model",
            "overloaded: Anthropic's 529 (ClaudeGatewayUpstreamOverloaded); rate_limited: its 429 "
            "(ClaudeGatewayUpstreamRateLimited; both together page as ClaudeGatewayUpstreamRefusingCalls); "
            "timeout, unreachable, error: ClaudeGatewayUpstreamErrors. Empty while every call succeeds. "
            "Links: failing requests' traces and logs.",
            [
                target(
                    "sum by (model, outcome) "
                    f"({rate(series('claude_gateway_upstream_requests_total', *SCOPE, NOT_OK))})",
                    "{{model}} {{outcome}}",
                )
            ],
            "reqps",
            links=ERROR_LINKS,
        ),
        timeseries(
            "Upstream calls in flight by pod",
            "Calls to Anthropic in progress; backpressure starts at MAX_INFLIGHT_UPSTREAM per worker process.",
            [target(f"sum by (pod) ({series('claude_gateway_upstream_inflight', *SCOPE)})", "{{pod}}")],
            "short",
        ),
        timeseries(
            "Backpressure rejections by route",
            "Requests refused with 503 because no upstream slot freed in time "
            "(ClaudeGatewayBackpressureRejecting). Empty while none are.",
            [
                target(
                    f"sum by (route) ({rate(series('claude_gateway_backpressure_rejected_total', *SCOPE))})",
                    "{{route}}",
                )
            ],
            "reqps",
        ),
        row("Clients"),
        timeseries(
            "Rate-limit rejections by client and limit",
            "Requests the gateway refused with 429 under its own per-key limits (RATE_LIMIT, TOKEN_RATE_LIMIT, "
            "the keys file). Empty while nobody is limited.",
            [
                target(
                    f"sum by (client, limit) ({rate(series('claude_gateway_rate_limited_total', *SCOPE))})",
                    "{{client}} {{limit}}",
                )
            ],
            "reqps",
        ),
        timeseries(
            "Client disconnects by route",
            "Clients that went away before their answer ended (their upstream call is cancelled).",
            [
                target(
                    f"sum by (route) ({rate(series('claude_gateway_client_disconnects_total', *SCOPE))})",
                    "{{route}}",
                )
            ],
            "reqps",
        ),
        row("Background jobs"),
        timeseries(
            "Jobs by status",
            "/analyze jobs enqueued, complete, failed (after every attempt) and retried.",
            [target(f"sum by (status) ({rate(series('claude_gateway_jobs_total', *SCOPE))})", "{{status}}")],
            "ops",
        ),
        timeseries(
            "Job backlog",
            "Jobs waiting in the queue (ClaudeGatewayJobBacklogGrowing fires above 10 while it grows).",
            [target(f"max({series('claude_gateway_jobs_queued', *SCOPE)})", "queued")],
            "short",
        ),
        timeseries(
            "Job failure ratio",
            "Share of finished jobs that failed (ClaudeGatewayJobFailures fires above 10%).",
            [
                target(
                    f"(sum({rate(series('claude_gateway_jobs_total', *SCOPE, FAILED))}) or vector(0))"
                    f" / sum({rate(series('claude_gateway_jobs_total', *SCOPE, FINISHED))})",
                    "failed",
                )
            ],
            "percentunit",
        ),
        timeseries(
            "Job duration (p50, p95, p99)",
            "Run time of a job, retries excluded.",
            quantiles("claude_gateway_job_duration_seconds", *SCOPE),
            "s",
        ),
        row("Pods"),
        timeseries(
            "Requests per second by pod",
            "Serving routes; an uneven split points at the load balancer or long-lived connections.",
            [target(f"sum by (pod) ({rate(requests)})", "{{pod}}")],
            "reqps",
        ),
        timeseries(
            "Error ratio (5xx) by pod",
            "One pod far above the others: read its logs first, then delete it.",
            [target(error_ratio("pod"), "{{pod}}")],
            "percentunit",
        ),
        timeseries(
            "Active streams by pod",
            "SSE streams open on each pod (what a graceful shutdown waits for).",
            [target(f"sum by (pod) ({series('claude_gateway_active_streams', *SCOPE)})", "{{pod}}")],
            "short",
        ),
        timeseries(
            "Redis reachable by pod",
            "1 when the pod's last Redis call succeeded.",
            [target(f"min by (pod) ({series('claude_gateway_redis_up', *SCOPE)})", "{{pod}}")],
            "short",
        ),
        timeseries(
            "Redis errors by operation",
            "Failed or timed-out Redis calls: ratelimit, jobs, health. Empty while Redis answers.",
            [
                target(
                    f"sum by (operation) ({rate(series('claude_gateway_redis_errors_total', *SCOPE))})",
                    "{{operation}}",
                )
            ],
            "ops",
        ),
        table(
            "Versions by pod",
            "The gateway version each pod runs (claude_gateway_build_info).",
            f"max by (pod, version) ({series('claude_gateway_build_info', *SCOPE)})",
        ),
        *kubernetes_row(),
    ]
    return dashboard(
        OVERVIEW_UID,
        "Claude Gateway / Overview",
        "On-call view of claude-gateway: traffic, errors, latency, Anthropic, limits, jobs, pods.",
        [
            query_variable("namespace", "Namespace", "label_values(claude_gateway_build_info, namespace)"),
            query_variable("pod", "Pod", f"label_values({series('claude_gateway_build_info', SCOPE[0])}, pod)"),
            query_variable(
                "deployment",
                "Deployment",
                f"label_values({series('kube_deployment_spec_replicas', SCOPE[0], *GATEWAY_DEPLOYMENTS)}, deployment)",
            ),
        ],
        panels,
    )


# The chart's gateway Deployments (`<release>-claude-gateway` and `-worker`), not its Redis or simulator.
GATEWAY_DEPLOYMENTS = ('deployment=~".*claude-gateway.*"', 'deployment!~".*-(redis|simulator)"')
# A Deployment's pods are `<deployment>-<replicaset hash>-<suffix>`; containers as the chart names them.
K8S_POD = ('namespace=~"$namespace"', 'pod=~"($deployment)-[a-z0-9]+-[a-z0-9]+"')
K8S_CONTAINER = f'container=~"{API_CONTAINER}|{WORKER_CONTAINER}"'
K8S_DEPLOYMENT = ('namespace=~"$namespace"', 'deployment=~"$deployment"')
# KEDA drives its own HPA, named keda-hpa-<ScaledObject>; the chart names ScaledObjects like their Deployments.
K8S_HPA = ('namespace=~"$namespace"', 'horizontalpodautoscaler=~"(keda-hpa-)?($deployment)"')


def kubernetes_row() -> list[Json]:
    """Pods as Kubernetes sees them: from kube-state-metrics and cAdvisor, not from the gateway."""
    restarts = series("kube_pod_container_status_restarts_total", *K8S_POD, K8S_CONTAINER)
    oom = series("kube_pod_container_status_last_terminated_reason", *K8S_POD, K8S_CONTAINER, 'reason="OOMKilled"')
    throttled = series("container_cpu_cfs_throttled_periods_total", *K8S_POD, K8S_CONTAINER)
    periods = series("container_cpu_cfs_periods_total", *K8S_POD, K8S_CONTAINER)
    return [
        row("Kubernetes"),
        timeseries(
            "Container restarts",
            "Restarts of the API and worker containers (crashes, failed liveness probes, OOM kills).",
            [target(f"sum by (pod, container) (increase({restarts}[{RATE}]))", "{{pod}} {{container}}")],
            "short",
            width=8,
            requires=KUBE_STATE_METRICS,
        ),
        timeseries(
            "OOM kills",
            "Restarts whose last termination was OOMKilled: the container hit its memory limit "
            "(`api.resources` / `worker.resources`).",
            [
                target(
                    f"sum by (pod, container) (increase({restarts}[{RATE}]) > 0 "
                    f"and on (namespace, pod, container) {oom} == 1)",
                    "{{pod}} {{container}}",
                )
            ],
            "short",
            width=8,
            requires=KUBE_STATE_METRICS,
        ),
        timeseries(
            "CPU throttling",
            "Share of CFS periods in which the container was throttled at its CPU limit: above a few percent, "
            "latency and time to first token suffer.",
            [
                target(
                    f"sum by (pod, container) (rate({throttled}[{RATE}])) "
                    f"/ sum by (pod, container) (rate({periods}[{RATE}]))",
                    "{{pod}} {{container}}",
                )
            ],
            "percentunit",
            width=8,
            requires=CADVISOR,
        ),
        timeseries(
            "Ready vs desired replicas",
            "Ready pods of each gateway Deployment against the replicas it wants: a gap that lasts is pods that "
            "cannot start or pass readiness (GET /health/ready).",
            [
                target(
                    f"sum by (deployment) ({series('kube_deployment_status_replicas_ready', *K8S_DEPLOYMENT)})",
                    "{{deployment}} ready",
                ),
                target(
                    f"sum by (deployment) ({series('kube_deployment_spec_replicas', *K8S_DEPLOYMENT)})",
                    "{{deployment}} desired",
                ),
            ],
            "short",
            requires=KUBE_STATE_METRICS,
        ),
        timeseries(
            "Autoscaler desired replicas",
            "Replicas the HPA (or KEDA's HPA, keda-hpa-<name>) wants for each gateway Deployment, and its maximum: "
            "desired at the maximum means the autoscaler has run out of room.",
            [
                target(
                    "sum by (horizontalpodautoscaler) "
                    f"({series('kube_horizontalpodautoscaler_status_desired_replicas', *K8S_HPA)})",
                    "{{horizontalpodautoscaler}} desired",
                ),
                target(
                    "sum by (horizontalpodautoscaler) "
                    f"({series('kube_horizontalpodautoscaler_spec_max_replicas', *K8S_HPA)})",
                    "{{horizontalpodautoscaler}} max",
                ),
            ],
            "short",
            requires=KUBE_STATE_METRICS,
        ),
    ]


def spend_in_range(by: str) -> str:
    """Estimated USD over the dashboard's time range, from token counts and the price recording rules."""
    tokens = f"increase({series('claude_gateway_tokens_total', *USAGE_SCOPE)}[$__range])"
    priced = f"label_replace(sum by (model, client, direction) ({tokens}), {PRICE_MODEL})"
    total_by = f"sum by ({by}) " if by else "sum"
    return f"{total_by}({priced} {PRICE_JOIN}) / 1e6"


def usage() -> Json:
    tokens = series("claude_gateway_tokens_total", *USAGE_SCOPE)
    cost = series("claude_gateway:cost_usd:rate5m", *USAGE_SCOPE)
    # claude_gateway_rate_limited_total has no model label.
    limited = series("claude_gateway_rate_limited_total", USAGE_SCOPE[0], USAGE_SCOPE[2])
    unpriced = (
        f"{series('claude_gateway:tokens:rate5m', *USAGE_SCOPE)} unless on (price_model, direction) "
        "claude_gateway:token_price:usd_per_mtok"
    )
    cache_read = series("claude_gateway_tokens_total", *USAGE_SCOPE, 'direction="cache_read"')
    prompt = series("claude_gateway_tokens_total", *USAGE_SCOPE, 'direction=~"input|cache_read|cache_write"')
    panels = [
        row("At a glance"),
        stat(
            "Tokens per second",
            "Input, output and cache tokens over the selected models and clients.",
            f"sum({rate(tokens)})",
            "short",
            [(None, "blue")],
        ),
        stat(
            "Estimated spend (USD per hour)",
            "At the current pace, from the price table (claude-gateway-prices.rules).",
            f"sum({cost}) * 3600",
            "currencyUSD",
            [(None, "blue")],
        ),
        stat(
            "Estimated spend in range (USD)",
            "Over the dashboard's time range, at today's prices. Anthropic's invoice is the truth.",
            spend_in_range(""),
            "currencyUSD",
            [(None, "blue")],
        ),
        stat(
            "Cache read share of prompt tokens",
            "Prompt tokens served from Anthropic's cache (billed at a tenth of the input price or less).",
            f"(sum({rate(cache_read)}) or vector(0)) / sum({rate(prompt)})",
            "percentunit",
            [(None, "blue")],
        ),
        stat(
            "Unpriced tokens per second",
            "Tokens of models missing from the price table: their cost is not counted. Add the model to "
            "claude-gateway-prices.rules (see observability/README.md).",
            f"sum({unpriced}) or vector(0)",
            "short",
            [(None, "green"), (1e-9, "orange")],
        ),
        stat(
            "Rate-limited requests per second",
            "Requests the gateway refused under its own per-key limits.",
            f"sum({rate(limited)}) or vector(0)",
            "reqps",
            [(None, "green"), (1e-9, "orange")],
        ),
        row("Tokens"),
        timeseries(
            "Tokens per second by model and direction",
            "input excludes cached tokens; cache_read and cache_write are Anthropic's cache counts.",
            [target(f"sum by (model, direction) ({rate(tokens)})", "{{model}} {{direction}}")],
            "short",
            stack=True,
        ),
        timeseries(
            "Tokens per second by client",
            "`client` is the key's name in the keys file (or a short hash of the key).",
            [target(f"sum by (client) ({rate(tokens)})", "{{client}}")],
            "short",
            stack=True,
        ),
        row("Estimated cost"),
        timeseries(
            "Estimated spend by model (USD per hour)",
            "Token rates times the price table; a model without a price is left out (see Unpriced tokens).",
            [target(f"sum by (model) ({cost}) * 3600", "{{model}}")],
            "currencyUSD",
            stack=True,
        ),
        timeseries(
            "Estimated spend by client (USD per hour)",
            "Who is spending: token rates of each client key times the price table.",
            [target(f"sum by (client) ({cost}) * 3600", "{{client}}")],
            "currencyUSD",
            stack=True,
        ),
        table(
            "Estimated spend in range by client (USD)",
            "Over the dashboard's time range, at today's prices.",
            spend_in_range("client"),
            unit="currencyUSD",
        ),
        table(
            "Price table (USD per million tokens)",
            "The prices the estimates use: the claude-gateway-prices.rules group of the alert rules file.",
            "max by (price_model, direction) (claude_gateway:token_price:usd_per_mtok)",
            unit="currencyUSD",
        ),
        *budget_row(),
        row("Limits"),
        timeseries(
            "Rate-limit rejections by client and limit",
            "requests: RATE_LIMIT or the key's own; tokens: TOKEN_RATE_LIMIT. Empty while nobody is limited.",
            [target(f"sum by (client, limit) ({rate(limited)})", "{{client}} {{limit}}")],
            "reqps",
            width=24,
        ),
    ]
    return dashboard(
        USAGE_UID,
        "Claude Gateway / Usage",
        "Tokens and estimated cost of claude-gateway by model and client.",
        [
            query_variable("namespace", "Namespace", "label_values(claude_gateway_build_info, namespace)"),
            query_variable("model", "Model", f"label_values({series('claude_gateway_tokens_total', SCOPE[0])}, model)"),
            query_variable(
                "client", "Client", f"label_values({series('claude_gateway_tokens_total', SCOPE[0])}, client)"
            ),
        ],
        panels,
    )


# Share of the current UTC month gone by: day_of_month() etc. default to now. Floored at 1% so that the
# projection in the month's first hours is not a division by almost nothing.
MONTH_ELAPSED = "clamp_min((day_of_month() - 1 + (hour() + minute() / 60) / 24) / days_in_month(), 0.01)"


def budget_row() -> list[Json]:
    """Spend against each key's budgets (issue 15): real cost per request, and the budgets' share used."""
    cost = series("claude_gateway_cost_usd_total", *USAGE_SCOPE)
    used = series("claude_gateway_budget_used_ratio", USAGE_SCOPE[0], USAGE_SCOPE[2])
    month_used = series("claude_gateway_budget_used_ratio", USAGE_SCOPE[0], USAGE_SCOPE[2], 'window="month"')
    return [
        row("Spend and budgets"),
        timeseries(
            "Budget used by client and window",
            "Share of each key's day and month budget spent (UTC windows). ClaudeGatewayClientBudgetNearlySpent "
            "fires at 80%, ClaudeGatewayClientBudgetExhausted at 100%, where the key is refused until the reset.",
            [target(f"max by (client, window) ({used})", "{{client}} {{window}}")],
            "percentunit",
        ),
        timeseries(
            "Projected month-end budget use by client",
            "The month budget's share spent so far, divided by the share of the month gone by: above 100%, the key "
            "runs out before the month ends at its pace so far.",
            [target(f"max by (client) ({month_used}) / scalar({MONTH_ELAPSED})", "{{client}}")],
            "percentunit",
        ),
        table(
            "Spend by client (USD)",
            "Cost of each key's requests over the dashboard's time range, as the gateway computed it from their "
            "real usage (cache writes by TTL included).",
            f"sum by (client) (increase({cost}[$__range]))",
            unit="currencyUSD",
        ),
        timeseries(
            "Monthly run rate by client (USD)",
            "What a whole month would cost at each key's pace over the last day.",
            [target(f"sum by (client) (rate({cost}[1d])) * 86400 * scalar(days_in_month())", "{{client}}")],
            "currencyUSD",
        ),
    ]


DASHBOARDS: dict[str, Callable[[], Json]] = {"overview.json": overview, "usage.json": usage}


def _without_requirements(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_requirements(value) for key, value in node.items() if key != "_requires"}
    if isinstance(node, list):
        return [_without_requirements(item) for item in node]
    return node


def render(build: Callable[[], Json]) -> str:
    return json.dumps(_without_requirements(build()), indent=2) + "\n"


def requirements() -> dict[tuple[str, str], str]:
    """(dashboard title, panel title) -> why the panel needs more than the gateway (REQUIREMENTS' text)."""
    found = {}
    for build in DASHBOARDS.values():
        board = build()
        for panel in board["panels"]:
            if panel.get("_requires"):
                found[(board["title"], panel["title"])] = REQUIREMENTS[panel["_requires"]]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run `make dashboards`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
