"""KEDA as the alternative to the HPAs: the API on open streams and upstream calls in flight, the worker on queued
jobs, each query held to this release and namespace."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import CI_VALUES, NAMESPACE, RELEASE, Helm, Manifests

KEDA = CI_VALUES / "keda-values.yaml"
THIS_RELEASE = f'namespace="{NAMESPACE}",app_kubernetes_io_instance="{RELEASE}"'


@pytest.fixture(scope="module")
def keda(helm: Helm) -> Manifests:
    return helm.template([KEDA])


def triggers(manifests: Manifests, component: str) -> dict[str, dict[str, Any]]:
    scaled = manifests.get("ScaledObject", component)
    return {trigger["name"]: trigger for trigger in scaled["spec"]["triggers"]}


def test_none_by_default(default_render: Manifests) -> None:
    assert default_render.all("ScaledObject") == []


def test_the_api_scales_on_streams_and_upstream_calls(keda: Manifests) -> None:
    scaled = keda.get("ScaledObject", "api")
    assert scaled["spec"]["scaleTargetRef"]["name"] == keda.get("Deployment", "api")["metadata"]["name"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (3, 30)
    found = triggers(keda, "api")
    assert set(found) == {"active-streams", "upstream-inflight"}
    streams, inflight = found["active-streams"], found["upstream-inflight"]
    assert streams["type"] == inflight["type"] == "prometheus"
    assert streams["metricType"] == "AverageValue"
    assert streams["metadata"]["query"].startswith("sum(claude_gateway_active_streams{")
    assert inflight["metadata"]["query"].startswith("sum(claude_gateway_upstream_inflight{")
    assert (streams["metadata"]["threshold"], inflight["metadata"]["threshold"]) == ("40", "80")
    for trigger in found.values():
        assert THIS_RELEASE in trigger["metadata"]["query"]
        assert trigger["metadata"]["serverAddress"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
        assert trigger["authenticationRef"] == {"name": "claude-gateway-prometheus"}
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_the_worker_scales_on_queued_jobs(keda: Manifests) -> None:
    (trigger,) = triggers(keda, "worker").values()
    assert trigger["metadata"]["query"] == f"max(claude_gateway_jobs_queued{{{THIS_RELEASE}}})"
    assert trigger["metadata"]["threshold"] == "5"
    assert keda.get("ScaledObject", "worker")["spec"]["scaleTargetRef"]["name"].endswith("-worker")


def test_keda_owns_the_replicas_and_no_hpa_is_made(keda: Manifests) -> None:
    assert keda.all("HorizontalPodAutoscaler") == []
    for component in ("api", "worker"):
        assert "replicas" not in keda.get("Deployment", component)["spec"], component


def test_budgets_follow_keda_minimums(keda: Manifests, helm: Helm) -> None:
    assert keda.find("PodDisruptionBudget", "worker") is not None  # keda.worker.minReplicas: 2
    low = helm.template(values={"keda": {"enabled": True, "api": {"minReplicas": 1}}})
    assert low.find("PodDisruptionBudget", "api") is None


def test_the_series_carry_the_labels_the_queries_select(keda: Manifests) -> None:
    monitor = keda.get("ServiceMonitor")
    assert monitor["spec"]["targetLabels"] == ["app.kubernetes.io/instance", "app.kubernetes.io/component"]


def test_a_trigger_authentication_from_extra_objects(keda: Manifests) -> None:
    (auth,) = keda.all("TriggerAuthentication")
    assert auth["metadata"]["name"] == "claude-gateway-prometheus"
    assert auth["metadata"]["namespace"] == NAMESPACE


def test_no_worker_scaler_without_a_worker(helm: Helm) -> None:
    manifests = helm.template(values={"keda": {"enabled": True}, "worker": {"enabled": False}})
    assert manifests.find("ScaledObject", "worker") is None
    assert manifests.find("ScaledObject", "api") is not None
