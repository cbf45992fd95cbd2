"""The Prometheus rules of observability/alerts/: valid, unit-tested at every alert's `for:` boundary, complete."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .catalogue import (
    RULE_FILES,
    RULE_TESTS,
    RULES_RENDERER,
    RUNBOOK_BASE,
    RUNBOOKS,
    alert_names,
    alerting_rules,
    exposed_series,
    recorded_series,
    rule_groups,
)
from .promql import selectors
from .promtool import Promtool

SEVERITIES = {"critical", "warning", "info"}


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alerts_render", RULES_RENDERER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
REQUIRED_GROUPS = {"claude-gateway-slo", "claude-gateway-upstream", "claude-gateway-jobs", "claude-gateway-budgets"}
# Each SLO: its objective's recording rule, the SLI recorded over every burn window, and its burn-rate alert.
SLOS = {
    "availability": ("claude_gateway:http_requests:error_ratio_rate", "ClaudeGatewayErrorBudgetBurn"),
    "latency": ("claude_gateway:http_request_duration:slow_ratio_rate", "ClaudeGatewayLatencyBudgetBurn"),
    "stream_success": ("claude_gateway:streams:error_ratio_rate", "ClaudeGatewayStreamErrorBudgetBurn"),
    "time_to_first_token": (
        "claude_gateway:time_to_first_token:slow_ratio_rate",
        "ClaudeGatewayTimeToFirstTokenBudgetBurn",
    ),
}
REQUIRED_ALERTS = {
    "ClaudeGatewayErrorBudgetBurn",
    "ClaudeGatewayLatencyBudgetBurn",
    "ClaudeGatewayStreamErrorBudgetBurn",
    "ClaudeGatewayTimeToFirstTokenBudgetBurn",
    "ClaudeGatewayUpstreamRefusingCalls",
    "ClaudeGatewayUpstreamOverloaded",
    "ClaudeGatewayUpstreamRateLimited",
    "ClaudeGatewayClientBudgetNearlySpent",
    "ClaudeGatewayClientBudgetExhausted",
    "ClaudeGatewayJobFailures",
    "ClaudeGatewayJobBacklogGrowing",
    "ClaudeGatewayRedisDown",
    "ClaudeGatewayTargetDown",
    "ClaudeGatewayOverheadHigh",
}
_DURATION = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    return sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration))


def rule_id(rule: dict[str, Any]) -> str:
    static = ",".join(f"{k}={v}" for k, v in sorted(rule["labels"].items()))
    return f"{rule['alert']}{{{static}}}"


def test_promtool_check_rules(promtool: Promtool) -> None:
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_rule_unit_tests() -> None:
    assert RULE_TESTS, "no observability/alerts/tests/*_test.yaml"


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_rule_unit_tests(promtool: Promtool, path: Path) -> None:
    result = promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_groups_alerts_and_burn_windows_exist() -> None:
    assert {group["name"] for group in rule_groups()} >= REQUIRED_GROUPS
    assert set(alert_names()) >= REQUIRED_ALERTS
    recorded = recorded_series()
    for sli, _ in SLOS.values():
        for window in BURN_WINDOWS:
            assert f"{sli}{window}" in recorded


@pytest.mark.parametrize("rule", alerting_rules(), ids=rule_id)
def test_alert_is_complete(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"ClaudeGateway[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert "{{" not in annotations["summary"], "summary must be static: it groups notifications"
    assert "{{" in annotations["description"], "description must say which namespace, model, pod ..."
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{rule['alert']}.md"
    assert (RUNBOOKS / f"{rule['alert']}.md").is_file()


@functools.cache
def _rule_tests() -> list[tuple[int, dict[str, Any], int]]:
    """(evaluation interval in seconds, test group, index) for every test group of every rule test file."""
    found = []
    for path in RULE_TESTS:
        suite = yaml.safe_load(path.read_text())
        interval = seconds(suite.get("evaluation_interval", "1m"))
        found += [(interval, group, i) for i, group in enumerate(suite["tests"])]
    return found


def _expects(case: dict[str, Any], static_labels: dict[str, str]) -> bool:
    return any(static_labels.items() <= alert["exp_labels"].items() for alert in case.get("exp_alerts") or [])


@pytest.mark.parametrize("rule", alerting_rules(), ids=rule_id)
def test_alert_is_unit_tested_at_its_for_boundary(rule: dict[str, Any]) -> None:
    """Some test expects the alert at t, and expects it absent one evaluation earlier, in the same test group."""
    for interval, group, _ in _rule_tests():
        cases = [case for case in group.get("alert_rule_test", []) if case["alertname"] == rule["alert"]]
        firing = {seconds(c["eval_time"]) for c in cases if _expects(c, rule["labels"])}
        silent = {seconds(c["eval_time"]) for c in cases if not _expects(c, rule["labels"])}
        if any(t - interval in silent for t in firing):
            return
    pytest.fail(f"no test expects {rule_id(rule)} absent at t - 1 evaluation and firing at t")


@pytest.mark.parametrize("name", alert_names())
def test_alert_has_a_test_where_it_stays_silent_on_healthy_input(name: str) -> None:
    """Besides the `for:` boundary: some test group never expects this alert at all."""
    for _, group, _ in _rule_tests():
        cases = [case for case in group.get("alert_rule_test", []) if case["alertname"] == name]
        if cases and not any(case.get("exp_alerts") for case in cases):
            return
    pytest.fail(f"no test shows {name} silent on input that should not fire it")


def test_rules_read_only_exposed_or_recorded_series() -> None:
    exposed, recorded = exposed_series(), recorded_series()
    for group in rule_groups():
        for rule in group["rules"]:
            for selector in selectors(rule["expr"]):
                name = rule.get("alert") or rule.get("record")
                assert selector.metric in exposed or selector.metric in recorded, (name, selector.metric)
                if selector.metric in exposed:
                    labels = {label for label, _, _ in selector.matchers}
                    assert labels <= exposed[selector.metric], (name, selector)


def test_slo_objectives_are_recorded_once_and_written_into_their_burn_alerts() -> None:
    """Each SLO's burn alerts compare with the objective of parameters.yaml, at the four SRE workbook tiers."""
    objectives = {
        rule["record"]: rule["expr"]
        for group in rule_groups()
        for rule in group["rules"]
        if rule.get("record", "").startswith("claude_gateway:slo_")
    }
    assert sorted(objectives) == sorted(f"claude_gateway:slo_{slo}:objective" for slo in SLOS)
    for slo, (_, alert) in SLOS.items():
        objective = objectives[f"claude_gateway:slo_{slo}:objective"].removeprefix("vector(").removesuffix(")")
        burn_alerts = [rule for rule in alerting_rules() if rule["alert"] == alert]
        assert {(r["labels"]["long"], r["labels"]["short"]) for r in burn_alerts} == {
            ("1h", "5m"),
            ("6h", "30m"),
            ("1d", "2h"),
            ("3d", "6h"),
        }
        assert all(f"(1 - {objective})" in rule["expr"] for rule in burn_alerts), alert


def test_rule_file_is_what_render_writes_from_the_template() -> None:
    assert render.main(["--check"]) == 0, "observability/alerts/claude-gateway.rules.yaml is out of date: make rules"


def test_every_tunable_is_used_by_the_template() -> None:
    """A parameter the template never reads would be a value that silently does nothing."""
    used = set(render.PLACEHOLDER.findall(render.TEMPLATE.read_text()))

    def leaves(node: dict[str, Any], path: str = "") -> set[str]:
        found: set[str] = set()
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            found |= leaves(value, where) if isinstance(value, dict) else {where}
        return found

    assert leaves(render.defaults()) == used


def test_overrides_reach_the_rules() -> None:
    overrides = {
        "slos": {"availability": {"objective": 0.9995}, "timeToFirstToken": {"thresholdSeconds": 3}},
        "alerts": {"ClaudeGatewayUpstreamErrors": {"threshold": 0.1, "for": "20m"}},
        "runbookBaseUrl": "https://runbooks.example.com/",
    }
    groups = yaml.safe_load(render.render(overrides))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    (errors,) = (rule for rule in rules if rule.get("alert") == "ClaudeGatewayUpstreamErrors")
    assert errors["for"] == "20m"
    assert errors["expr"].rstrip().endswith("> 0.1")
    assert errors["annotations"]["runbook_url"] == "https://runbooks.example.com/ClaudeGatewayUpstreamErrors.md"
    burn = [rule for rule in rules if rule.get("alert") == "ClaudeGatewayErrorBudgetBurn"]
    assert all("(1 - 0.9995)" in rule["expr"] for rule in burn)
    ttft = [rule for rule in rules if rule.get("record", "").startswith("claude_gateway:time_to_first_token:")]
    assert all('le=~"3(\\\\.0)?"' in rule["expr"] for rule in ttft)


@pytest.mark.parametrize(
    "overrides",
    [
        {"alerts": {"ClaudeGatewayUpstreamErrorz": {"for": "1m"}}},
        {"alerts": {"ClaudeGatewayUpstreamErrors": {"treshold": 0.1}}},
        {"slos": {"availability": {"target": 0.99}}},
        {"slos": {"availability": 0.99}},
    ],
    ids=["unknown-alert", "unknown-setting", "unknown-slo-setting", "not-a-map"],
)
def test_an_override_of_nothing_is_an_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(render.ParameterError):
        render.render(overrides)


def test_every_priced_model_has_all_four_directions() -> None:
    prices: dict[str, set[str]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            if rule.get("record") == "claude_gateway:token_price:usd_per_mtok":
                prices.setdefault(rule["labels"]["price_model"], set()).add(rule["labels"]["direction"])
    assert prices
    for model, directions in prices.items():
        assert directions == {"input", "output", "cache_read", "cache_write"}, model
