"""Every panel query of the Grafana dashboards, with Grafana's variables replaced by values Prometheus accepts.

For tests that run the queries against a real Prometheus:

    from tests.observability.dashboard_queries import all_panel_queries
    for dashboard, panel, expr in all_panel_queries(rate_interval="15s", time_range="5m"):
        ...  # GET /api/v1/query?query=expr must return data

Panels also read the series our recording rules write (`claude_gateway:*`): load `RULE_FILES` in that Prometheus
(`rule_files:`) with a short `evaluation_interval`. A panel only has data once its kind of event has happened: the
ones whose description says "Empty while ..." (upstream errors, backpressure, rate-limit rejections, Redis errors)
need that failure provoked (the simulator's faults, a client over its limit); the job panels need an `/analyze`
job, the time-to-first-token panels a stream, client disconnects a client that hangs up.
tests/observability/test_dashboards.py's `busy_gateway_series` lists series that give every panel data.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from .catalogue import OBSERVABILITY, RULE_FILES

DASHBOARDS = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
GENERATOR = OBSERVABILITY / "dashboards" / "generate.py"
__all__ = [
    "DASHBOARDS",
    "RULE_FILES",
    "all_panel_queries",
    "generator",
    "load",
    "panel_queries",
    "panel_requirements",
    "substitute",
]


def generator() -> ModuleType:
    """observability/dashboards/generate.py, imported from its path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("dashboards_generate", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panel_requirements() -> dict[tuple[str, str], str]:
    """(dashboard title, panel title) -> what the panel needs besides the gateway (kube-state-metrics, cAdvisor,
    a metric the gateway does not export yet): the generator's `requires=`, declared once per panel."""
    found: dict[tuple[str, str], str] = generator().requirements()
    return found


# $var, ${var}, ${var:format} and [[var]]; `$1` in label_replace is no variable and stays as it is.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)(?::\w+)?\]\]")


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables named in `values`; leave any other `$...` as it is."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values.get(name, match.group())

    return _VARIABLE.sub(replace, expr)


def variable_values(
    dashboard: Mapping[str, Any], *, rate_interval: str = "5m", time_range: str = "1h", time_range_s: int = 3600
) -> dict[str, str]:
    """Grafana's built-ins, and each template variable at its "All" value (a regex matching every series)."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": time_range,
        "__range_s": str(time_range_s),
    }
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("includeAll"):
            values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found += panel.get("panels", [])
    return found


def panel_queries(dashboard: Mapping[str, Any], **values: Any) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, variables substituted (see `variable_values`)."""
    substitutions = variable_values(dashboard, **values)
    return [
        (panel["title"], substitute(query["expr"], substitutions))
        for panel in panels(dashboard)
        for query in panel.get("targets", [])
        if query.get("expr")
    ]


def all_panel_queries(**values: Any) -> list[tuple[str, str, str]]:
    """(dashboard title, panel title, expr) over every dashboard of observability/dashboards/."""
    return [
        (dashboard["title"], title, expr)
        for dashboard in map(load, DASHBOARDS)
        for title, expr in panel_queries(dashboard, **values)
    ]
