"""The series the gateway exposes, as INTERFACE.md and docs/CONTRACTS.md name them, and those our rules record."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "docs" / "CONTRACTS.md"
OBSERVABILITY = REPO / "observability"
RULE_FILES = sorted((OBSERVABILITY / "alerts").glob("*.rules.yaml"))
RULE_TESTS = sorted((OBSERVABILITY / "alerts" / "tests").glob("*_test.yaml"))
RULES_RENDERER = OBSERVABILITY / "alerts" / "render.py"
RUNBOOKS = OBSERVABILITY / "runbooks"
RUNBOOK_BASE = "observability/runbooks/"

# INTERFACE.md's Metrics table (that file lives outside the repository): name -> (type, labels).
INTERFACE_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "claude_gateway_http_requests_total": ("counter", frozenset({"route", "method", "status"})),
    "claude_gateway_http_request_duration_seconds": ("histogram", frozenset({"route", "method"})),
    "claude_gateway_upstream_requests_total": ("counter", frozenset({"model", "outcome"})),
    "claude_gateway_upstream_duration_seconds": ("histogram", frozenset({"model", "stream"})),
    "claude_gateway_time_to_first_token_seconds": ("histogram", frozenset({"model"})),
    "claude_gateway_tokens_total": ("counter", frozenset({"model", "direction", "client"})),
    "claude_gateway_active_streams": ("gauge", frozenset()),
    "claude_gateway_rate_limited_total": ("counter", frozenset({"client", "limit"})),
    "claude_gateway_jobs_total": ("counter", frozenset({"status"})),
    "claude_gateway_job_duration_seconds": ("histogram", frozenset()),
    "claude_gateway_client_disconnects_total": ("counter", frozenset({"route"})),
    "claude_gateway_overhead_seconds": ("histogram", frozenset({"route"})),
    "claude_gateway_cost_usd_total": ("counter", frozenset({"client", "model"})),
    "claude_gateway_unpriced_tokens_total": ("counter", frozenset({"model"})),
    "claude_gateway_budget_used_ratio": ("gauge", frozenset({"client", "window"})),
}
# Series of the exporters a Kubernetes cluster runs beside Prometheus, named as they name them: kube-state-metrics
# (v2) and the kubelet's cAdvisor. Only the dashboards' Kubernetes row reads them.
KUBE_STATE_METRICS = "kube-state-metrics"
CADVISOR = "cadvisor"
EXPORTER_SERIES: dict[str, tuple[str, frozenset[str]]] = {
    "kube_pod_container_status_restarts_total": (KUBE_STATE_METRICS, frozenset({"namespace", "pod", "container"})),
    "kube_pod_container_status_last_terminated_reason": (
        KUBE_STATE_METRICS,
        frozenset({"namespace", "pod", "container", "reason"}),
    ),
    "kube_deployment_spec_replicas": (KUBE_STATE_METRICS, frozenset({"namespace", "deployment"})),
    "kube_deployment_status_replicas_ready": (KUBE_STATE_METRICS, frozenset({"namespace", "deployment"})),
    "kube_horizontalpodautoscaler_status_desired_replicas": (
        KUBE_STATE_METRICS,
        frozenset({"namespace", "horizontalpodautoscaler"}),
    ),
    "kube_horizontalpodautoscaler_spec_max_replicas": (
        KUBE_STATE_METRICS,
        frozenset({"namespace", "horizontalpodautoscaler"}),
    ),
    "container_cpu_cfs_throttled_periods_total": (CADVISOR, frozenset({"namespace", "pod", "container"})),
    "container_cpu_cfs_periods_total": (CADVISOR, frozenset({"namespace", "pod", "container"})),
}
# Labels Prometheus adds to every scraped series (the ServiceMonitor's pod and namespace among them).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})
_TABLE_ROW = re.compile(r"^\|\s*`(claude_gateway_[a-z_]+)`\s*\|\s*([a-z]+)[^|]*\|([^|]*)\|", re.MULTILINE)


def contract_metrics(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """The metrics table of docs/CONTRACTS.md: label names are the backticked words outside parentheses."""
    metrics = {}
    for name, kind, labels in _TABLE_ROW.findall(text):
        outside_parentheses = re.sub(r"\([^)]*\)", "", labels)
        metrics[name] = (kind, frozenset(re.findall(r"`([a-z_]+)`", outside_parentheses)))
    return metrics


def exposed_series() -> dict[str, frozenset[str]]:
    """Every series name the gateway exposes -> the labels it may carry (histograms as _bucket/_sum/_count)."""
    metrics = {**INTERFACE_METRICS, **contract_metrics(CONTRACTS.read_text())}
    series: dict[str, frozenset[str]] = {"up": TARGET_LABELS}
    series.update({name: labels | TARGET_LABELS for name, (_, labels) in EXPORTER_SERIES.items()})
    for name, (kind, labels) in metrics.items():
        labels = labels | TARGET_LABELS
        if kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


@functools.cache
def rule_groups() -> list[dict[str, Any]]:
    """Every group of every rule file (parsed once; do not mutate)."""
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def recorded_series() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def alert_names() -> list[str]:
    return sorted({rule["alert"] for rule in alerting_rules()})
