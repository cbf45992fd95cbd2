"""Every rendered manifest against the Kubernetes API schemas, and the custom resources against their CRDs'."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import (
    CI_VALUES,
    FETCHING_TEST_TIMEOUT_S,
    KIND_VALUES,
    TOOLS,
    Helm,
    Manifests,
    all_features_values,
    fetch_tools,
    observability_files,
    unavailable,
)

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
# Checked against their CRDs' schemas by the node validator (tests/chart/crd).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute", "ScaledObject", "TriggerAuthentication"}
# Kinds only ci/escape-hatches-values.yaml's extraObjects make, as examples of a CRD the chart does not own: no
# schema of theirs is at hand, and the chart only passes them through `tpl`.
FOREIGN_KINDS = {"SecretProviderClass"}
CRD_VALIDATOR = TOOLS / "crd-validate" / "validate.mjs"
NODE_TIMEOUT_S = 60


def renders(helm: Helm) -> dict[str, Manifests]:
    files, values = all_features_values()
    out = {"default": helm.template(), "all-features": helm.template(files, values)}
    for path in [*sorted(CI_VALUES.glob("*-values.yaml")), KIND_VALUES]:
        if path.name != "monitoring-values.yaml":
            out[path.name] = helm.template([path])
    return out


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("the kubernetes-validate package is not installed (pip install kubernetes-validate)")
    return kubernetes_validate


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(helm: Helm, kubernetes_validate: Any, version: str) -> None:
    problems: list[str] = []
    checked = 0
    for scenario, manifests in renders(helm).items():
        for doc in manifests.docs:
            if doc["kind"] in CUSTOM_KINDS | FOREIGN_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(part) for part in error.path)
                problems.append(f"{scenario}: {doc['kind']} {doc['metadata']['name']}: {path}: {error.message}")
    assert not problems, "\n".join(problems)
    assert checked > 50


def test_schemas_catch_a_broken_manifest(kubernetes_validate: Any, default_render: Manifests) -> None:
    deployment = json.loads(json.dumps(default_render.get("Deployment", "api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


@pytest.fixture(scope="module")
def crd_validator() -> Path:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed: the CRD schemas are checked with @kubernetes-models' validators")
    problem = fetch_tools("crd")
    if problem is not None or not CRD_VALIDATOR.is_file():
        unavailable(f"the CRD schema validators could not be installed: {problem}")
    return CRD_VALIDATOR


def validate_custom(validator: Path, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["node", str(validator)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=True,
    )
    checked: list[dict[str, Any]] = json.loads(result.stdout)
    return checked


@pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
def test_custom_resources_match_their_crd_schemas(helm: Helm, crd_validator: Path) -> None:
    docs = [doc for manifests in renders(helm).values() for doc in manifests.docs if doc["kind"] in CUSTOM_KINDS]
    checked = validate_custom(crd_validator, docs)
    kinds = {item["kind"] for item in checked}
    assert kinds >= {"ServiceMonitor", "HTTPRoute", "ScaledObject", "TriggerAuthentication"}
    if observability_files("alerts/*.yaml"):
        assert "PrometheusRule" in kinds
    failures = [item for item in checked if item["errors"]]
    assert not failures, failures


@pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
def test_crd_schemas_catch_a_broken_resource(helm: Helm, crd_validator: Path, full_render: Manifests) -> None:
    route = json.loads(json.dumps(full_render.get("HTTPRoute")))
    route["spec"]["rules"][0]["timeouts"]["request"] = "ten minutes"
    monitor = json.loads(json.dumps(full_render.get("ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["interval"] = 30
    checked = validate_custom(crd_validator, [route, monitor])
    assert all(item["errors"] for item in checked), checked
