"""ServiceMonitor, and the PrometheusRule and dashboards read from observability/ through the chart's symlink."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, OBSERVABILITY, Helm, Manifests, observability_files

MONITORING = CI_VALUES / "monitoring-values.yaml"


def rule_groups() -> list[dict[str, object]]:
    files = observability_files("alerts/*.yaml") + observability_files("alerts/*.yml")
    if not files:
        pytest.skip("observability/alerts/ has no rule file yet (another part of the project writes them)")
    groups: list[dict[str, object]] = []
    for path in sorted(files):
        groups += yaml.safe_load(path.read_text()).get("groups") or []
    return groups


def dashboards() -> list[Path]:
    files = observability_files("dashboards/*.json")
    if not files:
        pytest.skip("observability/dashboards/ has no dashboard yet (another part of the project writes them)")
    return files


def test_the_chart_reads_observability_through_a_relative_symlink() -> None:
    link = CHART / "observability"
    assert link.is_symlink()
    assert str(link.readlink()) == "../../observability"
    assert link.resolve() == OBSERVABILITY.resolve()


class TestServiceMonitor:
    def test_scrapes_api_and_worker_metrics_as_job_claude_gateway(self, full_render: Manifests) -> None:
        monitor = full_render.get("ServiceMonitor")
        spec = monitor["spec"]
        assert spec["endpoints"][0]["port"] == "http"
        assert spec["endpoints"][0]["path"] == "/metrics"
        # The job label comes from this Service label, which is the chart name: job="claude-gateway".
        assert spec["jobLabel"] == "app.kubernetes.io/name"
        for service in (full_render.get("Service", "api"), full_render.get("Service", "worker")):
            labels = service["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "claude-gateway"
            assert all(labels[key] == value for key, value in spec["selector"]["matchLabels"].items())
            (expression,) = spec["selector"]["matchExpressions"]
            assert labels[expression["key"]] in expression["values"]
            assert [port["name"] for port in service["spec"]["ports"]] == ["http"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    def test_none_by_default(self, default_render: Manifests) -> None:
        assert default_render.all("ServiceMonitor") == []
        assert default_render.all("PrometheusRule") == []


class TestPrometheusRule:
    def test_holds_the_same_rules_as_observability_alerts(self, helm: Helm) -> None:
        groups = rule_groups()
        rule = helm.template(values={"metrics": {"prometheusRule": {"enabled": True}}}).get("PrometheusRule")
        assert rule["spec"]["groups"] == groups

    def test_alert_templates_are_not_rendered_by_helm(self, helm: Helm) -> None:
        groups = rule_groups()
        source = json.dumps(groups, sort_keys=True)
        if "{{" not in source:
            pytest.skip("no rule uses a {{ }} template")
        rendered = helm.template(values={"metrics": {"prometheusRule": {"enabled": True}}}).get("PrometheusRule")
        assert json.dumps(rendered["spec"]["groups"], sort_keys=True) == source

    def test_packaged_chart_carries_the_rules(self, helm: Helm, tmp_path: Path) -> None:
        groups = rule_groups()
        helm.run("package", str(CHART), "--destination", str(tmp_path))
        (package,) = tmp_path.glob("claude-gateway-*.tgz")
        with tarfile.open(package) as archive:
            names = archive.getnames()
        packaged = {name for name in names if name.startswith("claude-gateway/observability/")}
        # The rule files and dashboards, and nothing else of observability/ (promtool tests, runbooks, ...).
        expected = {
            f"claude-gateway/observability/{path.relative_to(OBSERVABILITY)}"
            for path in observability_files("alerts/*.yaml") + observability_files("dashboards/*.json")
        }
        assert packaged == expected
        output = helm.run(
            "template",
            "gw",
            str(package),
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ).stdout
        assert yaml.safe_load(output)["spec"]["groups"] == groups


class TestDashboards:
    def test_one_configmap_per_dashboard_for_the_grafana_sidecar(self, helm: Helm) -> None:
        files = dashboards()
        maps = helm.template([MONITORING]).all("ConfigMap")
        boards = [item for item in maps if item["metadata"]["labels"].get("grafana_dashboard") == "1"]
        assert len(boards) == len(files)
        by_file = {next(iter(item["data"])): item for item in boards}
        for path in files:
            item = by_file[path.name]
            assert json.loads(item["data"][path.name]) == json.loads(path.read_text())
            assert item["metadata"]["annotations"] == {"grafana_folder": "LLM"}

    def test_sidecar_label_is_a_value(self, helm: Helm) -> None:
        dashboards()
        values = {"metrics": {"dashboards": {"enabled": True, "sidecarLabel": "dash", "sidecarLabelValue": "yes"}}}
        maps = helm.template(values=values).all("ConfigMap")
        assert any(item["metadata"]["labels"].get("dash") == "yes" for item in maps)
