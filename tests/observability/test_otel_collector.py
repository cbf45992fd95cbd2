"""observability/otel-collector.yaml: a consistent core-distribution config the gateway's exporter can talk to.

No collector binary can be installed here, so this checks the structure the collector would check at start-up:
every pipeline component is defined, every defined one is a core component, and the OTLP/HTTP port is open.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .catalogue import OBSERVABILITY

CONFIG = OBSERVABILITY / "otel-collector.yaml"
# Component types of the core distribution (otel/opentelemetry-collector); the part before "/" in a name.
CORE_COMPONENTS = {
    "receivers": {"otlp", "nop"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"otlp", "otlphttp", "debug", "nop"},
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def test_pipeline_components_are_defined_core_components(config: dict[str, Any]) -> None:
    for kind, known in CORE_COMPONENTS.items():
        for name in config[kind]:
            assert name.split("/")[0] in known, f"{kind}.{name} is not in the core distribution"
    for pipeline in config["service"]["pipelines"].values():
        for kind in CORE_COMPONENTS:
            for name in pipeline[kind]:
                assert name in config[kind], f"{name} is used but not defined under {kind}"


def test_traces_arrive_over_otlp_http_and_leave_batched_to_a_backend_and_the_log(config: dict[str, Any]) -> None:
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert traces["processors"][0] == "memory_limiter", "memory_limiter must run first"
    assert "batch" in traces["processors"]
    assert "debug" in traces["exporters"]
    assert any(name.split("/")[0] in {"otlp", "otlphttp"} for name in traces["exporters"])
