"""ServiceMonitor, PrometheusRule, dashboards and runbooks: read from observability/ through the chart's symlink.

The PrometheusRule is rendered from observability/alerts/claude-gateway.rules.template.yaml with values over
parameters.yaml: with the defaults it must equal observability/alerts/claude-gateway.rules.yaml (which the promtool
unit tests of observability/alerts/tests/ run against), and with overrides promtool sees the boundary move.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    OBSERVABILITY,
    RELEASE,
    Helm,
    Manifests,
    all_features_values,
    observability_files,
)
from tests.observability import promtool as promtool_cli
from tests.observability.runbook_commands import Command, Requirement, all_commands, substitute

MONITORING = CI_VALUES / "monitoring-values.yaml"
RULES = OBSERVABILITY / "alerts" / "claude-gateway.rules.yaml"
RULE_TESTS = OBSERVABILITY / "alerts" / "tests"
RULE_ON = {"metrics": {"prometheusRule": {"enabled": True}}}


def default_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def prometheus_rule(helm: Helm, **settings: Any) -> dict[str, Any]:
    values = {"metrics": {"prometheusRule": {"enabled": True, **settings}}}
    return helm.template(values=values).get("PrometheusRule")


def dashboards() -> list[Path]:
    files = observability_files("dashboards/*.json")
    if not files:
        pytest.skip("observability/dashboards/ has no dashboard yet (another part of the project writes them)")
    return files


def alerts_of(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for group in rule["spec"]["groups"] for item in group["rules"] if "alert" in item]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = promtool_cli.find()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(promtool_cli.MISSING)
        pytest.skip(promtool_cli.MISSING)
    return path


def promtool_test(promtool: str, groups: list[dict[str, Any]], suite: dict[str, Any], directory: Path) -> str:
    """Run one promtool unit-test suite against `groups` (as the chart rendered them); its output on failure."""
    (directory / "rendered.rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    order = [group["name"] for group in groups]
    document = {"rule_files": ["rendered.rules.yaml"], "evaluation_interval": "1m", "group_eval_order": order, **suite}
    (directory / "suite_test.yaml").write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [promtool, "test", "rules", str(directory / "suite_test.yaml")],
        capture_output=True,
        text=True,
        timeout=promtool_cli.PROMTOOL_TIMEOUT_S,
        check=False,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_the_chart_reads_observability_through_a_relative_symlink() -> None:
    link = CHART / "observability"
    assert link.is_symlink()
    assert str(link.readlink()) == "../../observability"
    assert link.resolve() == OBSERVABILITY.resolve()


class TestServiceMonitor:
    def test_scrapes_api_and_worker_metrics_as_job_claude_gateway(self, full_render: Manifests) -> None:
        monitor = full_render.get("ServiceMonitor")
        spec = monitor["spec"]
        # /metrics is served on its own port (METRICS_PORT), never on the public one.
        assert spec["endpoints"][0]["port"] == "metrics"
        assert spec["endpoints"][0]["path"] == "/metrics"
        # The job label comes from this Service label, which is the chart name: job="claude-gateway".
        assert spec["jobLabel"] == "app.kubernetes.io/name"
        for service, ports in (
            (full_render.get("Service", "api"), ["http", "metrics"]),
            (full_render.get("Service", "worker"), ["metrics"]),
        ):
            labels = service["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "claude-gateway"
            assert all(labels[key] == value for key, value in spec["selector"]["matchLabels"].items())
            (expression,) = spec["selector"]["matchExpressions"]
            assert labels[expression["key"]] in expression["values"]
            assert [port["name"] for port in service["spec"]["ports"]] == ports
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    def test_none_by_default(self, default_render: Manifests) -> None:
        assert default_render.all("ServiceMonitor") == []
        assert default_render.all("PrometheusRule") == []


class TestPrometheusRule:
    def test_with_default_values_holds_the_rendered_rule_file(self, helm: Helm) -> None:
        """The chart and observability/alerts/render.py fill the template alike: the promtool suites cover both."""
        assert prometheus_rule(helm)["spec"]["groups"] == default_groups()

    def test_alert_templates_are_not_rendered_by_helm(self, helm: Helm) -> None:
        descriptions = [rule["annotations"]["description"] for rule in alerts_of(prometheus_rule(helm))]
        assert all("{{ $labels." in text or "{{ $value" in text for text in descriptions)

    def test_overrides_reach_objectives_thresholds_for_and_runbook_urls(self, helm: Helm) -> None:
        rule = prometheus_rule(
            helm,
            runbookBaseUrl="https://runbooks.example.com/gw/",
            slos={"availability": {"objective": 0.9995}, "latency": {"thresholdSeconds": 30}},
            alerts={"ClaudeGatewayJobFailures": {"threshold": 0.25, "for": "30m"}},
        )
        alerts = alerts_of(rule)
        assert {item["annotations"]["runbook_url"] for item in alerts} == {
            f"https://runbooks.example.com/gw/{item['alert']}.md" for item in alerts
        }
        (failures,) = (item for item in alerts if item["alert"] == "ClaudeGatewayJobFailures")
        assert failures["for"] == "30m"
        assert failures["expr"].rstrip().endswith("> 0.25")
        burn = [item for item in alerts if item["alert"] == "ClaudeGatewayErrorBudgetBurn"]
        assert all("(1 - 0.9995)" in item["expr"] for item in burn)
        records = [item for group in rule["spec"]["groups"] for item in group["rules"] if "record" in item]
        slow = [item for item in records if item["record"].startswith("claude_gateway:http_request_duration:")]
        assert all('le=~"30(\\\\.0)?"' in item["expr"] for item in slow)

    def test_disabled_alerts_are_left_out_and_nothing_else(self, helm: Helm) -> None:
        disabled = ["ClaudeGatewayNoTraffic", "ClaudeGatewayLatencyBudgetBurn"]
        default = alerts_of(prometheus_rule(helm))
        kept = alerts_of(prometheus_rule(helm, disabled=disabled))
        assert kept == [item for item in default if item["alert"] not in disabled]

    def test_labels_on_the_object_and_on_every_alerting_rule(self, helm: Helm) -> None:
        rule = prometheus_rule(
            helm,
            labels={"release": "kube-prometheus-stack"},
            additionalLabels={"team": "platform"},
            additionalRuleLabels={"team": "llm", "severity": "ignored"},
        )
        labels = rule["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack"
        assert labels["team"] == "platform"
        for item in alerts_of(rule):
            assert item["labels"]["team"] == "llm"
            assert item["labels"]["severity"] in {"critical", "warning", "info"}, "a rule's own severity wins"
        records = [item for group in rule["spec"]["groups"] for item in group["rules"] if "record" in item]
        assert records == [item for group in default_groups() for item in group["rules"] if "record" in item]

    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            ({"alerts": {"ClaudeGatewayJobFailurez": {"for": "1m"}}}, "no tunable alert of that name"),
            ({"alerts": {"ClaudeGatewayJobFailures": {"critical": {"for": "1m"}}}}, "no such setting"),
            ({"slos": {"availability": {"thresholdSeconds": 10}}}, "availability"),
            ({"disabled": ["ClaudeGatewayNoTrafic"]}, "is not an alert of the rules"),
        ],
        ids=["unknown-alert", "unknown-setting", "setting-the-slo-has-not", "unknown-disabled"],
    )
    def test_a_value_naming_nothing_fails_the_render(self, helm: Helm, settings: dict[str, Any], message: str) -> None:
        values = {"metrics": {"prometheusRule": {"enabled": True, **settings}}}
        assert message in helm.template_error(values=values)

    @pytest.mark.parametrize(
        "settings",
        [
            {"alerts": {"ClaudeGatewayJobFailures": {"for": "ten minutes"}}},
            {"alerts": {"ClaudeGatewayJobFailures": {"threshold": "high"}}},
            {"slos": {"availability": {"objective": 99.9}}},
            {"slos": {"latency": {"thresholdSeconds": 0}}},
            {"disabled": "ClaudeGatewayNoTraffic"},
        ],
        ids=["for-not-a-duration", "threshold-not-a-number", "objective-not-a-share", "zero-threshold", "not-a-list"],
    )
    def test_the_schema_refuses_malformed_settings(self, helm: Helm, settings: dict[str, Any]) -> None:
        values = {"metrics": {"prometheusRule": {"enabled": True, **settings}}}
        assert "values don't meet the specifications of the schema" in helm.template_error(values=values)

    def test_a_changed_threshold_and_for_move_the_boundary(self, helm: Helm, promtool: str, tmp_path: Path) -> None:
        """ClaudeGatewayUpstreamErrors at 8% errors: silent with the default 5%-for-10m... until overridden.

        With `threshold: 0.1` the same 8% never fires; with `for: 3m` 12% fires at 1m + 3m, not at 1m + 10m.
        """
        series = [
            {
                "series": 'claude_gateway_upstream_requests_total{job="claude-gateway", namespace="prod", '
                f'model="claude-sonnet-4-6", outcome="{outcome}"}}',
                "values": f"0+{per_minute}x30",
            }
            for outcome, per_minute in (("ok", 88), ("timeout", 12))
        ]
        firing = {
            "exp_labels": {"severity": "warning", "namespace": "prod", "job": "claude-gateway"}
            | {"model": "claude-sonnet-4-6"},
            "exp_annotations": {
                "summary": "A share of the gateway's calls to a model time out, cannot connect or fail.",
                "description": "12% of calls from prod/claude-gateway to claude-sonnet-4-6 timed out, could not reach "
                "Anthropic or failed otherwise over the last 5 minutes.",
                "runbook_url": "observability/runbooks/ClaudeGatewayUpstreamErrors.md",
            },
        }

        def case(time: str, fires: bool) -> dict[str, Any]:
            return {
                "eval_time": time,
                "alertname": "ClaudeGatewayUpstreamErrors",
                "exp_alerts": [firing] if fires else [],
            }

        default = prometheus_rule(helm)["spec"]["groups"]
        tuned = prometheus_rule(helm, alerts={"ClaudeGatewayUpstreamErrors": {"threshold": 0.15, "for": "3m"}})
        quick = prometheus_rule(helm, alerts={"ClaudeGatewayUpstreamErrors": {"for": "3m"}})
        suites = {
            "default: fires at 1m + 10m": (default, [case("10m", False), case("11m", True)]),
            "for: 3m: fires at 1m + 3m": (quick["spec"]["groups"], [case("3m", False), case("4m", True)]),
            "threshold 15%: 12% never fires": (tuned["spec"]["groups"], [case("30m", False)]),
        }
        for name, (groups, cases) in suites.items():
            directory = tmp_path / name.split(":")[0].replace(" ", "-")
            directory.mkdir()
            suite = {"tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}]}
            failure = promtool_test(promtool, groups, suite, directory)
            assert not failure, f"{name}:\n{failure}"

    def test_a_disabled_alert_never_fires(self, helm: Helm, promtool: str, tmp_path: Path) -> None:
        """No gateway target at all: ClaudeGatewayTargetDown pages at 5m; disabled, promtool sees nothing."""
        series = [{"series": 'up{job="other"}', "values": "1x30"}]
        paged = {
            "exp_labels": {"severity": "critical", "job": "claude-gateway"},
            "exp_annotations": {
                "summary": "Prometheus cannot scrape any gateway pod.",
                "description": "No target of job claude-gateway has answered a scrape for 5m: the gateway is down, "
                "or it is no longer observed.",
                "runbook_url": "observability/runbooks/ClaudeGatewayTargetDown.md",
            },
        }
        suites = {
            "enabled": (prometheus_rule(helm), [paged]),
            "disabled": (prometheus_rule(helm, disabled=["ClaudeGatewayTargetDown"]), []),
        }
        for name, (rule, expected) in suites.items():
            cases = [{"eval_time": "6m", "alertname": "ClaudeGatewayTargetDown", "exp_alerts": expected}]
            suite = {"tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}]}
            (tmp_path / name).mkdir()
            failure = promtool_test(promtool, rule["spec"]["groups"], suite, tmp_path / name)
            assert not failure, f"{name}:\n{failure}"

    def test_packaged_chart_carries_rules_dashboards_and_runbooks(self, helm: Helm, tmp_path: Path) -> None:
        helm.run("package", str(CHART), "--destination", str(tmp_path))
        (package,) = tmp_path.glob("claude-gateway-*.tgz")
        with tarfile.open(package) as archive:
            names = archive.getnames()
            runbook = archive.extractfile("claude-gateway/observability/runbooks/ClaudeGatewayErrorBudgetBurn.md")
            assert runbook is not None
            assert (
                runbook.read().decode() == (OBSERVABILITY / "runbooks" / "ClaudeGatewayErrorBudgetBurn.md").read_text()
            )
        packaged = {name for name in names if name.startswith("claude-gateway/observability/")}
        expected = {
            f"claude-gateway/observability/{path.relative_to(OBSERVABILITY)}"
            for path in observability_files("alerts/*.yaml")
            + observability_files("dashboards/*.json")
            + observability_files("runbooks/*.md")
        }
        assert packaged == expected
        output = helm.run(
            "template",
            "gw",
            str(package),
            "-f",
            str(CHART / "ci" / "minimal-values.yaml"),
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ).stdout
        assert yaml.safe_load(output)["spec"]["groups"] == default_groups()


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


# --- The runbooks' kubectl commands against the rendered manifests ---------------------------------------------


def _renders(helm: Helm) -> Iterator[Manifests]:
    """The default install (bundled Redis) and every optional feature on (HPAs, Ingress, ServiceMonitor ...)."""
    yield helm.template()
    files, values = all_features_values()
    yield helm.template(files, values)


def _objects(helm: Helm) -> list[tuple[str, str, dict[str, str]]]:
    """(kind, name, labels) of every rendered object, and a `Pod` per Deployment's pod template.

    Endpoints carry their Service's labels (the endpoints controller copies them), so each Service stands for one.
    """
    found = []
    for render in _renders(helm):
        for doc in render.docs:
            labels = doc["metadata"].get("labels") or {}
            found.append((doc["kind"], doc["metadata"]["name"], labels))
            if doc["kind"] == "Service":
                found.append(("Endpoints", doc["metadata"]["name"], labels))
            if doc["kind"] == "Deployment":
                found.append(
                    ("Pod", f"{doc['metadata']['name']}-<hash>", doc["spec"]["template"]["metadata"]["labels"])
                )
    return found


COMMANDS = all_commands()


def _command_id(command: Command) -> str:
    return f"{command.runbook}: {command.text[:80]}"


@pytest.mark.parametrize("command", COMMANDS, ids=_command_id)
def test_runbook_command_names_resources_the_chart_renders(helm: Helm, command: Command) -> None:
    """Each `kind/name` and each `-l` selector of a runbook's kubectl command finds what the chart renders."""
    objects = _objects(helm)
    for kind, name in command.names:
        if name.startswith("<") and not name.startswith("<release>"):
            continue  # `<pod>`: a name the reader copies from the output of an earlier command
        wanted = substitute(name, RELEASE, NAMESPACE)
        assert (kind, wanted) in {(k, n) for k, n, _ in objects}, f"no {kind} {wanted} in the rendered chart"
    if command.selector:
        selector = [
            Requirement(
                requirement.key,
                requirement.operator,
                frozenset(substitute(value, RELEASE, NAMESPACE) for value in requirement.values),
            )
            for requirement in command.selector
        ]
        matched = [
            (kind, name)
            for kind, name, labels in objects
            if kind in command.kinds and all(requirement.matches(labels) for requirement in selector)
        ]
        assert matched, f"{command.text!r} selects nothing of kind {command.kinds} in the rendered chart"


def test_runbook_commands_never_restart_or_delete_the_bundled_redis(helm: Helm) -> None:
    """Restarts and deletions name their targets; none of them is Redis, which holds the queue and the limits."""
    redis = {name for kind, name, labels in _objects(helm) if labels.get("app.kubernetes.io/component") == "redis"}
    assert redis, "the default render has a bundled Redis: this test would check nothing"
    for command in COMMANDS:
        if command.verb in {"rollout restart", "delete", "rollout undo", "scale"}:
            assert not command.selector, f"{command.text!r}: name what you restart, never a selector"
            targets = {substitute(name, RELEASE, NAMESPACE) for _, name in command.names}
            assert not targets & redis, f"{command.text!r} restarts or deletes the bundled Redis"
