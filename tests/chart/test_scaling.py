"""HorizontalPodAutoscalers, PodDisruptionBudgets and topology spread."""

from __future__ import annotations

from typing import Any

from tests.chart.conftest import CI_VALUES, NAMESPACE, RELEASE, Helm, Manifests

AUTOSCALING = CI_VALUES / "autoscaling-values.yaml"


def hpa_metrics(manifests: Manifests, component: str) -> dict[str, dict[str, Any]]:
    hpa = manifests.get("HorizontalPodAutoscaler", component)
    return {metric["type"]: metric for metric in hpa["spec"]["metrics"]}


class TestApiHpa:
    def test_should_not_create_an_hpa_if_autoscaling_is_disabled(self, default_render: Manifests) -> None:
        assert default_render.all("HorizontalPodAutoscaler") == []
        assert default_render.get("Deployment", "api")["spec"]["replicas"] == 2

    def test_targets_the_api_deployment_on_cpu(self, helm: Helm) -> None:
        manifests = helm.template([AUTOSCALING])
        hpa = manifests.get("HorizontalPodAutoscaler", "api")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": manifests.get("Deployment", "api")["metadata"]["name"],
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
        cpu = hpa_metrics(manifests, "api")["Resource"]["resource"]
        assert cpu == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}

    def test_scales_on_active_streams_as_a_pods_metric(self, helm: Helm) -> None:
        pods = hpa_metrics(helm.template([AUTOSCALING]), "api")["Pods"]["pods"]
        assert pods == {
            "metric": {"name": "claude_gateway_active_streams"},
            "target": {"type": "AverageValue", "averageValue": "40"},
        }

    def test_behavior_passes_through(self, helm: Helm) -> None:
        hpa = helm.template([AUTOSCALING]).get("HorizontalPodAutoscaler", "api")
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600

    def test_replicas_omitted_when_the_hpa_owns_them(self, helm: Helm) -> None:
        manifests = helm.template([AUTOSCALING])
        assert "replicas" not in manifests.get("Deployment", "api")["spec"]
        assert "replicas" not in manifests.get("Deployment", "worker")["spec"]

    def test_no_active_streams_metric_unless_asked(self, helm: Helm) -> None:
        manifests = helm.template(values={"api": {"autoscaling": {"enabled": True}}})
        assert set(hpa_metrics(manifests, "api")) == {"Resource"}


class TestWorkerHpa:
    def test_scales_the_worker_on_cpu_and_queue_depth(self, helm: Helm) -> None:
        manifests = helm.template([AUTOSCALING])
        hpa = manifests.get("HorizontalPodAutoscaler", "worker")
        assert hpa["spec"]["scaleTargetRef"]["name"] == manifests.get("Deployment", "worker")["metadata"]["name"]
        metrics = hpa_metrics(manifests, "worker")
        assert metrics["External"]["external"]["metric"] == {
            "name": "claude_gateway_jobs_queued",
            # This release in this namespace only: another release's queue must not scale these workers.
            "selector": {"matchLabels": {"namespace": NAMESPACE, "app_kubernetes_io_instance": RELEASE}},
        }

    def test_the_selector_labels_are_on_the_scraped_series(self, helm: Helm) -> None:
        values = {"metrics": {"serviceMonitor": {"enabled": True}}}
        monitor = helm.template([AUTOSCALING], values).get("ServiceMonitor")
        # Prometheus turns a Service label a.b/c into the series label a_b_c.
        assert "app.kubernetes.io/instance" in monitor["spec"]["targetLabels"]


class TestDisruptionBudgets:
    def test_api_budget_when_two_pods_are_wanted(self, default_render: Manifests) -> None:
        pdb = default_render.get("PodDisruptionBudget", "api")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"

    def test_no_budget_for_a_single_pod(self, default_render: Manifests, helm: Helm) -> None:
        # The worker runs one pod by default: a budget would block every node drain.
        assert default_render.find("PodDisruptionBudget", "worker") is None
        single = helm.template(values={"api": {"replicaCount": 1}})
        assert single.find("PodDisruptionBudget", "api") is None
        assert single.find("PodDisruptionBudget", "worker") is None

    def test_budget_follows_the_hpa_minimum(self, helm: Helm) -> None:
        manifests = helm.template([AUTOSCALING])
        assert manifests.find("PodDisruptionBudget", "worker") is not None
        low = helm.template(values={"api": {"replicaCount": 5, "autoscaling": {"enabled": True, "minReplicas": 1}}})
        assert low.find("PodDisruptionBudget", "api") is None


class TestTopologySpread:
    def test_spreads_over_zones_and_nodes_without_blocking(self, default_render: Manifests) -> None:
        for component in ("api", "worker"):
            pod = default_render.get("Deployment", component)["spec"]["template"]["spec"]
            constraints = pod["topologySpreadConstraints"]
            assert {item["topologyKey"] for item in constraints} == {
                "topology.kubernetes.io/zone",
                "kubernetes.io/hostname",
            }
            for item in constraints:
                assert item["whenUnsatisfiable"] == "ScheduleAnyway"
                assert item["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component

    def test_given_constraints_get_the_selector(self, helm: Helm) -> None:
        given = {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        manifests = helm.template(values={"api": {"topologySpread": {"enabled": True, "constraints": [given]}}})
        (constraint,) = manifests.get("Deployment", "api")["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert constraint["maxSkew"] == 2
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"

    def test_can_be_turned_off(self, helm: Helm) -> None:
        manifests = helm.template(values={"api": {"topologySpread": {"enabled": False, "constraints": []}}})
        assert "topologySpreadConstraints" not in manifests.get("Deployment", "api")["spec"]["template"]["spec"]
