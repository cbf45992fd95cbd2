"""The Prometheus rules of observability/alerts/: valid, unit-tested at every alert's `for:` boundary, complete."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .catalogue import (
    RULE_FILES,
    RULE_TESTS,
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
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
REQUIRED_GROUPS = {"claude-gateway-slo", "claude-gateway-upstream", "claude-gateway-jobs"}
REQUIRED_ALERTS = {
    "ClaudeGatewayErrorBudgetBurn",
    "ClaudeGatewayLatencyBudgetBurn",
    "ClaudeGatewayUpstreamOverloaded",
    "ClaudeGatewayUpstreamRateLimited",
    "ClaudeGatewayTimeToFirstTokenHigh",
    "ClaudeGatewayJobFailures",
    "ClaudeGatewayJobBacklogGrowing",
    "ClaudeGatewayRedisDown",
    "ClaudeGatewayTargetDown",
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
    for window in BURN_WINDOWS:
        assert f"claude_gateway:http_requests:error_ratio_rate{window}" in recorded
        assert f"claude_gateway:http_request_duration:slow_ratio_rate{window}" in recorded


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


def test_slo_objectives_are_recorded_once() -> None:
    objectives = [
        rule
        for group in rule_groups()
        for rule in group["rules"]
        if rule.get("record", "").startswith("claude_gateway:slo_")
    ]
    assert sorted(rule["record"] for rule in objectives) == [
        "claude_gateway:slo_availability:objective",
        "claude_gateway:slo_latency:objective",
    ]
    burn_alerts = [r for r in alerting_rules() if r["alert"].endswith("BudgetBurn")]
    assert all("scalar(claude_gateway:slo_" in r["expr"] for r in burn_alerts)
    assert {(r["labels"]["long"], r["labels"]["short"]) for r in burn_alerts} == {
        ("1h", "5m"),
        ("6h", "30m"),
        ("1d", "2h"),
        ("3d", "6h"),
    }


def test_every_priced_model_has_all_four_directions() -> None:
    prices: dict[str, set[str]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            if rule.get("record") == "claude_gateway:token_price:usd_per_mtok":
                prices.setdefault(rule["labels"]["price_model"], set()).add(rule["labels"]["direction"])
    assert prices
    for model, directions in prices.items():
        assert directions == {"input", "output", "cache_read", "cache_write"}, model
