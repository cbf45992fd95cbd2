"""`helm lint --strict` and a clean render for the default values and every scenario the chart ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.conftest import CHART, CI_VALUES, KIND_VALUES, Helm, observability_files

SCENARIOS = sorted(CI_VALUES.glob("*-values.yaml"))
# Scenarios that read the repository's observability/ files through the chart's symlink.
NEEDS_OBSERVABILITY = {"monitoring-values.yaml": ("alerts/*.yaml", "dashboards/*.json")}


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 6, [path.name for path in SCENARIOS]


def test_lint_strict_with_the_default_values(helm: Helm) -> None:
    # helm lint only logs a template's `fail`; the bare defaults do not render (tests/chart/test_values_validation.py
    # TestHonestInstall), and lint shows why.
    result = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout
    assert "no upstream key" in result.stderr


@pytest.mark.parametrize("values", [*SCENARIOS, KIND_VALUES], ids=lambda path: path.name)
def test_lint_strict_with_each_scenario(helm: Helm, values: Path) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", [*SCENARIOS, KIND_VALUES], ids=lambda path: path.name)
def test_each_scenario_renders(helm: Helm, values: Path) -> None:
    # helm lint does not stop at `fail` (it only logs it), so each scenario is also rendered.
    for pattern in NEEDS_OBSERVABILITY.get(values.name, ()):
        if not observability_files(pattern):
            pytest.skip(f"observability/{pattern} has no file yet: {values.name} reads them")
    manifests = helm.template([values])
    assert manifests.get("Deployment", "api")
