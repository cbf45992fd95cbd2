"""checkov on the rendered chart and the Dockerfile, hadolint on the Dockerfile: nothing failed left unexplained."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, FETCHING_TEST_TIMEOUT_S, REPO, Helm, all_features_values

CHECKOV_TIMEOUT_S = 300


def checkov(scan_bin: Path, *args: str) -> dict[str, Any]:
    # --skip-download: no call to the vendor's API (there is no network here, and the checks are all local).
    result = subprocess.run(
        [str(scan_bin / "checkov"), "--quiet", "--compact", "--skip-download", "--output", "json", *args],
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    reports: list[dict[str, Any]] = report if isinstance(report, list) else [report]
    assert reports, "checkov scanned nothing"
    return {
        "failed": [check for item in reports for check in item["results"].get("failed_checks", [])],
        "passed": sum(item["summary"]["passed"] for item in reports),
        "skipped": [check for item in reports for check in item["results"].get("skipped_checks", [])],
    }


def describe(failed: list[dict[str, Any]]) -> str:
    return "\n".join(f"{check['check_id']} {check['check_name']}: {check['resource']}" for check in failed)


@pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
def test_checkov_passes_on_the_rendered_chart(helm: Helm, scan_bin: Path, tmp_path: Path) -> None:
    files, values = all_features_values()
    renders = {
        "default": helm.template(),
        "all-features": helm.template(files, values),
        # The internal Valkey with its volume, and KEDA: each apart, since all-features uses external Redis and HPAs.
        "redis-persistence": helm.template([CI_VALUES / "redis-persistence-values.yaml"]),
        "keda": helm.template([CI_VALUES / "keda-values.yaml"]),
    }
    for name, manifests in renders.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(manifests.docs))
    result = checkov(
        scan_bin,
        "--directory",
        str(tmp_path),
        "--framework",
        "kubernetes",
        "--config-file",
        str(CHART / ".checkov.yaml"),
    )
    assert not result["failed"], describe(result["failed"])
    assert result["passed"] > 100


@pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
def test_every_skip_carries_its_reason(helm: Helm, scan_bin: Path) -> None:
    config = (CHART / ".checkov.yaml").read_text()
    skipped = yaml.safe_load(config)["skip-check"]
    for check in skipped:
        block = config[: config.index(f"- {check}")].rsplit("- CKV", 1)[-1]
        reason = " ".join(line.strip().lstrip("#") for line in block.splitlines() if line.strip().startswith("#"))
        assert len(reason) > 80, f"{check} is skipped without a reason above it"
    test_pod = helm.template().get("Pod", "test")
    annotations = test_pod["metadata"]["annotations"]
    for key, value in annotations.items():
        if key.startswith("checkov.io/skip"):
            check, reason = value.split("=", 1)
            assert check.startswith("CKV")
            assert len(reason) > 20


@pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
def test_checkov_passes_on_the_dockerfile(scan_bin: Path) -> None:
    result = checkov(scan_bin, "--file", str(REPO / "Dockerfile"), "--framework", "dockerfile")
    assert not result["failed"], describe(result["failed"])
    assert not result["skipped"]


@pytest.mark.timeout(FETCHING_TEST_TIMEOUT_S)
def test_hadolint_passes_on_the_dockerfile(scan_bin: Path) -> None:
    result = subprocess.run(
        [str(scan_bin / "hadolint"), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
