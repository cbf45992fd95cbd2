"""The Grafana dashboards of observability/dashboards/: generated, well-formed, and querying only real series."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from .catalogue import (
    EXPORTER_SERIES,
    INTERFACE_METRICS,
    OBSERVABILITY,
    RULE_FILES,
    exposed_series,
    recorded_series,
    rule_groups,
)
from .dashboard_queries import DASHBOARDS, all_panel_queries, generator, load, panel_requirements, panels
from .promql import selectors
from .promtool import Promtool, check_expressions

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# INTERFACE.md metrics the gateway does not export yet (issue 15): panels reading them declare it.
PENDING_METRICS: set[str] = set()
LINKED_PANELS = {
    "Responses by status",
    "Error ratio against the error budget",
    "Request latency, non-streaming (p50, p95, p99)",
    "p95 latency by route",
    "Time to first token (p50, p95, p99)",
    "Upstream errors by outcome and model",
    "Streams by last event",
    "Time to first token over the SLO threshold",
}
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def by_name(path: Path) -> str:
    return path.name


@pytest.fixture(params=DASHBOARDS, ids=by_name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_there_are_an_overview_and_a_usage_dashboard() -> None:
    assert {load(path)["uid"] for path in DASHBOARDS} == {"claude-gateway-overview", "claude-gateway-usage"}


def test_dashboards_are_what_the_generator_writes() -> None:
    module = generator()
    for name, build in module.DASHBOARDS.items():
        assert (OBSERVABILITY / "dashboards" / name).read_text() == module.render(build), (
            f"{name} is out of date: run `make dashboards`"
        )


def test_dashboard_is_tagged_with_a_stable_uid_and_a_datasource_variable(dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"claude-gateway-[a-z]+", dashboard["uid"])
    assert "claude-gateway" in dashboard["tags"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for query in panel.get("targets", []):
            assert query["datasource"] == DATASOURCE, panel["title"]


def test_panels_have_unique_ids_titles_and_descriptions(dashboard: dict[str, Any]) -> None:
    found = panels(dashboard)
    assert len({p["id"] for p in found}) == len(found)
    titles = [p["title"] for p in found if p["type"] != "row"]
    assert len(set(titles)) == len(titles)
    assert all(p.get("description") for p in found if p["type"] != "row")


def test_dashboards_have_tempo_and_loki_variables_for_their_links(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["tempo"]["type"] == "datasource"
    assert variables["tempo"]["query"] == "tempo"
    assert variables["loki"]["type"] == "datasource"
    assert variables["loki"]["query"] == "loki"


def _explore_pane(url: str) -> dict[str, Any]:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    pane: dict[str, Any] = json.loads(query["panes"][0])["a"]
    return pane


def test_latency_and_error_panels_link_to_their_traces_and_logs() -> None:
    overview = next(load(path) for path in DASHBOARDS if load(path)["uid"] == "claude-gateway-overview")
    by_title = {panel["title"]: panel for panel in panels(overview)}
    for title in LINKED_PANELS:
        links = by_title[title]["fieldConfig"]["defaults"]["links"]
        panes = {_explore_pane(link["url"])["datasource"]: _explore_pane(link["url"]) for link in links}
        assert set(panes) == {"${tempo}", "${loki}"}, title
        (traces,) = panes["${tempo}"]["queries"]
        assert traces["queryType"] == "traceql"
        assert 'resource.service.name="claude-gateway"' in traces["query"], title
        assert "duration >" in traces["query"] or "status=error" in traces["query"], title
        (logs,) = panes["${loki}"]["queries"]
        assert logs["expr"].startswith('{namespace=~"$namespace", container="api"} | json | trace_id != ""'), title
        assert panes["${tempo}"]["range"] == {"from": "${__from}", "to": "${__to}"}


def test_panels_needing_more_than_the_gateway_say_so_and_only_they() -> None:
    """A panel reading kube-state-metrics, cAdvisor or a metric the gateway does not export yet has `requires=`."""
    outside = set(EXPORTER_SERIES) | PENDING_METRICS
    assert set(INTERFACE_METRICS) >= PENDING_METRICS
    required = panel_requirements()
    for dashboard, panel, expr in all_panel_queries():
        reads_outside = bool({selector.metric for selector in selectors(expr)} & outside)
        assert reads_outside == ((dashboard, panel) in required), f"{dashboard} / {panel}"
    for (dashboard, panel), reason in required.items():
        board = next(load(path) for path in DASHBOARDS if load(path)["title"] == dashboard)
        (item,) = (p for p in panels(board) if p["title"] == panel)
        assert reason in item["description"], "the panel tells its reader why it may be empty"


def test_api_and_worker_pods_are_counted_apart() -> None:
    queries = {panel: expr for _, panel, expr in all_panel_queries()}
    assert 'container="api"' in queries["API pods scraped"]
    assert 'container="worker"' in queries["Worker pods scraped"]


def test_redis_reads_off_when_the_gateway_has_no_redis() -> None:
    overview = next(load(path) for path in DASHBOARDS if load(path)["uid"] == "claude-gateway-overview")
    (redis,) = (panel for panel in panels(overview) if panel["title"] == "Redis")
    assert "claude_gateway_redis_configured" in redis["targets"][0]["expr"]
    (mapping,) = redis["fieldConfig"]["defaults"]["mappings"]
    assert {value: option["text"] for value, option in mapping["options"].items()} == {
        "0": "down",
        "1": "up",
        "3": "off",
    }


def test_dashboards_link_to_each_other() -> None:
    uids = {load(path)["uid"]: load(path) for path in DASHBOARDS}
    for uid, dashboard in uids.items():
        linked = {link["url"].removeprefix("/d/") for link in dashboard["links"] if link["url"].startswith("/d/")}
        assert linked == set(uids) - {uid}
        assert all(link["keepTime"] for link in dashboard["links"] if link["url"].startswith("/d/"))


def test_queries_read_only_series_the_gateway_exposes_or_our_rules_record() -> None:
    exposed, recorded = exposed_series(), recorded_series()
    for dashboard, panel, expr in all_panel_queries():
        for selector in selectors(expr):
            where = f"{dashboard} / {panel}: {selector.metric}"
            assert selector.metric in exposed or selector.metric in recorded, where
            if selector.metric in exposed:
                labels = {label for label, _, _ in selector.matchers}
                assert labels <= exposed[selector.metric], where


def test_variable_queries_read_existing_series_and_labels(dashboard: dict[str, Any]) -> None:
    exposed = exposed_series()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, variable["name"]
        (selector,) = selectors(match["selector"])
        assert match["label"] in exposed[selector.metric], variable["name"]


def test_no_grafana_variable_is_left_after_substitution() -> None:
    for dashboard, panel, expr in all_panel_queries():
        assert not re.search(r"\$[A-Za-z_{]|\[\[", expr), f"{dashboard} / {panel}: {expr}"


def test_price_model_is_derived_the_same_way_in_rules_and_dashboards() -> None:
    (rule,) = (r for g in rule_groups() for r in g["rules"] if r.get("record") == "claude_gateway:tokens:rate5m")
    assert generator().PRICE_MODEL in " ".join(rule["expr"].split())


def test_panel_queries_parse(promtool: Promtool, tmp_path: Path) -> None:
    queries = {f"{dashboard} / {panel}": expr for dashboard, panel, expr in all_panel_queries()}
    result = check_expressions(promtool, queries, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_panel_returns_data_from_a_busy_gateway(promtool: Promtool, tmp_path: Path) -> None:
    """Each panel query, evaluated with our recording rules over series shaped like the gateway's, is not empty.

    Each query becomes an alert on `absent(query)`; promtool's unit test expects none of them to fire.
    """
    queries = all_panel_queries(rate_interval="5m", time_range="30m", time_range_s=1800)
    alerts = [
        {"alert": f"PanelEmpty{i:03d}", "expr": f"absent({expr})", "annotations": {"panel": f"{d} / {p}"}}
        for i, (d, p, expr) in enumerate(queries)
    ]
    (tmp_path / "panels.rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": alerts}]}))
    suite = {
        "rule_files": [str(path) for path in RULE_FILES] + ["panels.rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": busy_gateway_series(),
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": alert["alert"], "exp_alerts": []} for alert in alerts
                ],
            }
        ],
    }
    (tmp_path / "panels_test.yaml").write_text(yaml.safe_dump(suite))
    result = promtool("test", "rules", tmp_path / "panels_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


# As the ServiceMonitor labels them: `container` is the chart's container name, which tells API and worker apart.
API_POD = "gw-claude-gateway-5d8f7c9b6-x2x7q"
WORKER_POD = "gw-claude-gateway-worker-7f9c6d5b4-k8m2p"
POD = {"job": "claude-gateway", "namespace": "prod", "pod": API_POD, "container": "api", "instance": "10.1.0.10:8000"}
WORKER = {**POD, "pod": WORKER_POD, "container": "worker", "instance": "10.1.0.20:8000"}
# kube-state-metrics' and cAdvisor's own targets: their series name the pod they describe in labels.
KSM = {"job": "kube-state-metrics", "namespace": "prod"}
KUBELET = {"job": "kubelet", "namespace": "prod"}
MINUTES = 40
MODEL = "claude-sonnet-4-6"  # a model of the price table


def series(name: str, values: str, target: dict[str, str] = POD, **labels: str) -> dict[str, str]:
    text = ", ".join(f'{k}="{v}"' for k, v in {**target, **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def counter(per_minute: float) -> str:
    return f"0+{per_minute}x{MINUTES}"


def histogram(
    name: str, per_minute: int, buckets: dict[str, int], target: dict[str, str] = POD, **labels: str
) -> list[dict[str, str]]:
    """A histogram whose `buckets` maps each `le` to the share (in percent) of observations at or below it."""
    found = [
        series(f"{name}_bucket", counter(per_minute * share / 100), target, le=le, **labels)
        for le, share in buckets.items()
    ]
    found.append(series(f"{name}_bucket", counter(per_minute), target, le="+Inf", **labels))
    found.append(series(f"{name}_count", counter(per_minute), target, **labels))
    found.append(series(f"{name}_sum", counter(per_minute * 2), target, **labels))
    return found


def busy_gateway_series() -> list[dict[str, str]]:
    """A gateway with some of everything: traffic, errors, streams, limits, jobs, tokens of a priced model."""
    fast = {"0.5": 50, "1.0": 70, "10.0": 99, "30.0": 100}

    return [
        series("up", f"1x{MINUTES}"),
        series("up", f"1x{MINUTES}", WORKER),
        series("claude_gateway_build_info", f"1x{MINUTES}", version="0.1.0"),
        series("claude_gateway_build_info", f"1x{MINUTES}", WORKER, version="0.1.0"),
        series("claude_gateway_http_requests_total", counter(90), route="/chat", method="POST", status="200"),
        series("claude_gateway_http_requests_total", counter(2), route="/chat", method="POST", status="503"),
        series("claude_gateway_http_requests_total", counter(30), route="/chat/stream", method="POST", status="200"),
        series("claude_gateway_http_requests_total", counter(5), route="/analyze", method="POST", status="202"),
        series("claude_gateway_http_requests_total", counter(3), route="/chat", method="POST", status="429"),
        *histogram("claude_gateway_http_request_duration_seconds", 92, fast, route="/chat", method="POST"),
        *histogram(
            "claude_gateway_http_request_duration_seconds", 30, {"10.0": 20}, route="/chat/stream", method="POST"
        ),
        *histogram("claude_gateway_http_request_duration_seconds", 5, {"0.5": 100}, route="/analyze", method="POST"),
        series("claude_gateway_upstream_requests_total", counter(110), model=MODEL, outcome="ok"),
        series("claude_gateway_upstream_requests_total", counter(2), model=MODEL, outcome="overloaded"),
        *histogram("claude_gateway_upstream_duration_seconds", 80, fast, model=MODEL, stream="false"),
        *histogram("claude_gateway_upstream_duration_seconds", 30, {"10.0": 20}, model=MODEL, stream="true"),
        *histogram(
            "claude_gateway_time_to_first_token_seconds", 30, {"0.5": 60, "1.0": 90, "3.0": 97, "5.0": 99}, model=MODEL
        ),
        *[
            series("claude_gateway_tokens_total", counter(n), model=MODEL, client="team-a", direction=direction)
            for direction, n in {"input": 9000, "output": 3000, "cache_read": 20000, "cache_write": 1000}.items()
        ],
        series("claude_gateway_active_streams", f"4x{MINUTES}"),
        series("claude_gateway_upstream_inflight", f"6x{MINUTES}"),
        series("claude_gateway_rate_limited_total", counter(3), client="team-a", limit="requests"),
        series("claude_gateway_backpressure_rejected_total", counter(2), route="/chat"),
        series("claude_gateway_client_disconnects_total", counter(1), route="/chat/stream"),
        *histogram("claude_gateway_overhead_seconds", 120, {"0.001": 90, "0.01": 100}, route="/chat"),
        series("claude_gateway_redis_up", f"1x{MINUTES}"),
        series("claude_gateway_redis_errors_total", counter(1), operation="ratelimit"),
        series("claude_gateway_jobs_queued", f"3x{MINUTES}"),
        *[
            series("claude_gateway_jobs_total", counter(n), WORKER, status=status)
            for status, n in {"enqueued": 5, "complete": 4, "failed": 1, "retried": 2}.items()
        ],
        *histogram("claude_gateway_job_duration_seconds", 5, {"10.0": 80, "60.0": 100}, WORKER),
        series("claude_gateway_redis_configured", f"1x{MINUTES}"),
        series("claude_gateway_streams_total", counter(28), model=MODEL, outcome="ok"),
        series("claude_gateway_streams_total", counter(2), model=MODEL, outcome="overloaded"),
        series("claude_gateway_cost_usd_total", counter(0.5), model=MODEL, client="team-a"),
        series("claude_gateway_budget_used_ratio", f"0.4+0.01x{MINUTES}", client="team-a", window="day"),
        series("claude_gateway_budget_used_ratio", f"0.2+0.001x{MINUTES}", client="team-a", window="month"),
        *kubernetes_series(),
    ]


def kubernetes_series() -> list[dict[str, str]]:
    """What kube-state-metrics and cAdvisor say about the release `gw`: one API pod restarted after an OOM kill."""
    found = []
    for pod, container, deployment in (
        (API_POD, "api", "gw-claude-gateway"),
        (WORKER_POD, "worker", "gw-claude-gateway-worker"),
    ):
        found += [
            series("kube_pod_container_status_restarts_total", counter(0.1), KSM, pod=pod, container=container),
            series("container_cpu_cfs_periods_total", counter(600), KUBELET, pod=pod, container=container),
            series("container_cpu_cfs_throttled_periods_total", counter(30), KUBELET, pod=pod, container=container),
            series("kube_deployment_spec_replicas", f"2x{MINUTES}", KSM, deployment=deployment),
            series("kube_deployment_status_replicas_ready", f"1x{MINUTES}", KSM, deployment=deployment),
            series(
                "kube_horizontalpodautoscaler_status_desired_replicas",
                f"2x{MINUTES}",
                KSM,
                horizontalpodautoscaler=deployment,
            ),
            series(
                "kube_horizontalpodautoscaler_spec_max_replicas",
                f"10x{MINUTES}",
                KSM,
                horizontalpodautoscaler=deployment,
            ),
        ]
    found.append(
        series(
            "kube_pod_container_status_last_terminated_reason",
            f"1x{MINUTES}",
            KSM,
            pod=API_POD,
            container="api",
            reason="OOMKilled",
        )
    )
    return found
