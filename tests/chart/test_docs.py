"""values.yaml documents itself and the chart README's table is made from it."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

import yaml

from tests.chart.conftest import CHART, REPO


def chart_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_docs", REPO / "scripts" / "chart_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_docs"] = module
    spec.loader.exec_module(module)
    return module


def test_values_first_line_points_at_the_schema() -> None:
    first = (CHART / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"


def test_every_key_has_a_doc_comment() -> None:
    docs = chart_docs()
    table, documented = docs.rows(CHART)
    assert documented.undocumented == []
    assert len(table) > 100
    assert all(row.description for row in table)


def test_every_documented_key_exists_in_the_schema() -> None:
    docs = chart_docs()
    schema = json.loads((CHART / "values.schema.json").read_text())
    table, _ = docs.rows(CHART)
    for row in table:
        node = docs._schema_at(schema, row.key.split("."))
        assert node, f"{row.key} is not in values.schema.json"


def test_readme_table_is_current() -> None:
    docs = chart_docs()
    table, _ = docs.rows(CHART)
    readme = (CHART / "README.md").read_text()
    assert docs.updated_readme(readme, table) == readme, "run `make chart-docs`"


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node: object, prefix: str) -> list[str]:
        if isinstance(node, dict) and node and prefix not in {"ingress.annotations"}:
            return [leaf for key, child in node.items() for leaf in leaves(child, f"{prefix}.{key}".strip("."))]
        return [prefix]

    table_keys = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    for leaf in leaves(values, ""):
        assert any(leaf == key or leaf.startswith(key + ".") for key in table_keys), leaf


def test_the_comment_parser_finds_a_missing_doc() -> None:
    docs = chart_docs()
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    found = docs.read_comments("# -- documented\na: x\nb: y\n", schema)
    assert found.descriptions == {"a": "documented"}
    assert found.undocumented == ["b"]
