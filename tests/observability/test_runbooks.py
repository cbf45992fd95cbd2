"""observability/runbooks/: one per alert, in the Meaning/Impact/Diagnosis/Mitigation shape, pointing at real things."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .catalogue import RUNBOOKS, alert_names, exposed_series, recorded_series
from .dashboard_queries import DASHBOARDS, load, panels
from .promql import selectors
from .promtool import Promtool, check_expressions
from .runbook_commands import all_commands

SECTIONS = ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"]
COMPONENT_SELECTOR = "app.kubernetes.io/instance=<release>,app.kubernetes.io/component="
_PROMQL_BLOCK = re.compile(r"```promql\n(?P<body>.*?)```", re.DOTALL)
_DASHBOARD_LINE = re.compile(r"Dashboard: \*\*(?P<dashboard>[^*]+)\*\* › \*\*(?P<panel>[^*]+)\*\*")
_LINK = re.compile(r"\]\((?P<target>[A-Za-z]+\.md)\)")


def runbook(name: str) -> str:
    return (RUNBOOKS / f"{name}.md").read_text()


def promql_blocks(text: str) -> list[str]:
    return [" ".join(match["body"].split()) for match in _PROMQL_BLOCK.finditer(text)]


def test_every_runbook_belongs_to_an_alert() -> None:
    assert sorted(path.stem for path in RUNBOOKS.glob("*.md")) == alert_names()


@pytest.mark.parametrize("name", alert_names())
def test_runbook_has_the_four_sections_in_order(name: str) -> None:
    text = runbook(name)
    assert text.startswith(f"# {name}\n")
    positions = [text.find(section + "\n") for section in SECTIONS]
    assert all(p > 0 for p in positions), name
    assert positions == sorted(positions), name


@pytest.mark.parametrize("name", alert_names())
def test_diagnosis_gives_promql_a_dashboard_panel_and_the_logs(name: str) -> None:
    text = runbook(name)
    diagnosis = text[text.index("## Diagnosis") : text.index("## Mitigation")]
    assert promql_blocks(diagnosis), "no ```promql block to paste"
    assert _DASHBOARD_LINE.search(diagnosis), "no `Dashboard: **...** › **panel**` line"
    assert COMPONENT_SELECTOR in diagnosis, "no kubectl command on the release's api/worker pods"


@pytest.mark.parametrize("name", alert_names())
def test_named_dashboard_panels_and_linked_runbooks_exist(name: str) -> None:
    titles = {(load(path)["title"], panel["title"]) for path in DASHBOARDS for panel in panels(load(path))}
    text = runbook(name)
    for match in _DASHBOARD_LINE.finditer(text):
        assert (match["dashboard"], match["panel"]) in titles, match.group()
    for match in _LINK.finditer(text):
        assert Path(RUNBOOKS / match["target"]).is_file(), match["target"]


def test_runbook_promql_reads_only_exposed_or_recorded_series() -> None:
    exposed, known = exposed_series(), exposed_series().keys() | recorded_series()
    for name in alert_names():
        for expr in promql_blocks(runbook(name)):
            for selector in selectors(expr):
                assert selector.metric in known, (name, selector.metric)
                if selector.metric in exposed:
                    assert {label for label, _, _ in selector.matchers} <= exposed[selector.metric], (name, selector)


def test_runbook_promql_parses(promtool: Promtool, tmp_path: Path) -> None:
    blocks = {f"{name} #{i}": expr for name in alert_names() for i, expr in enumerate(promql_blocks(runbook(name)))}
    result = check_expressions(promtool, blocks, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_kubectl_selector_names_the_release_and_pods_their_component() -> None:
    """`-l app.kubernetes.io/name=claude-gateway` spans every release in the namespace and the bundled Redis."""
    commands = all_commands()
    assert commands
    for command in commands:
        keys = {requirement.key for requirement in command.selector}
        if command.selector:
            assert "app.kubernetes.io/instance" in keys, command.text
        if command.selector and "Pod" in command.kinds:
            assert "app.kubernetes.io/component" in keys, command.text


def test_runbooks_name_the_chart_resources_not_invented_ones() -> None:
    """The API Deployment is `<release>-claude-gateway`: `deploy/<release>-api` never existed."""
    for command in all_commands():
        for _, name in command.names:
            assert not name.startswith("<release>") or name.startswith("<release>-claude-gateway"), command.text
