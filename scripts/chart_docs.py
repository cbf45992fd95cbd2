"""The values table of charts/claude-gateway/README.md, made from values.yaml's `# --` comments.

Each key of values.yaml either carries a `# --` comment (it is then one row of the table, its whole value the
default) or is a section whose keys all do. values.schema.json gives each row its type.

    python scripts/chart_docs.py           rewrite the table between the README's markers
    python scripts/chart_docs.py --check   exit 1 when the table is stale or a key is undocumented
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "claude-gateway"
START_MARKER = "<!-- values:start (made by scripts/chart_docs.py; edit values.yaml instead) -->"
END_MARKER = "<!-- values:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?P<rest>.*)$")
_DOC_START = re.compile(r"^ *# -- ?(?P<text>.*)$")
_DOC_MORE = re.compile(r"^ *#(?: (?P<text>.*))?$")


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Documented:
    """What the comments say: the description of each documented key, and keys that lack one."""

    descriptions: dict[str, str]
    undocumented: list[str]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix("#/definitions/")
        resolved: dict[str, Any] = schema["definitions"][name]
        return resolved
    return node


def _schema_at(schema: dict[str, Any], path: list[str]) -> dict[str, Any]:
    node = schema
    for part in path:
        node = _resolve(schema, node).get("properties", {}).get(part, {})
    return _resolve(schema, node)


def read_comments(values_text: str, schema: dict[str, Any]) -> Documented:
    """Walk values.yaml line by line: keys under a documented key or inside a free-form value are its data."""
    descriptions: dict[str, str] = {}
    undocumented: list[str] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    skip_deeper_than: int | None = None
    for line in values_text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if not line.strip() or indent > skip_deeper_than or line.lstrip().startswith("- "):
                continue
            skip_deeper_than = None
        if (start := _DOC_START.match(line)) is not None:
            pending = [start.group("text")]
            continue
        if pending is not None and (more := _DOC_MORE.match(line)) is not None:
            pending.append(more.group("text") or "")
            continue
        match = _KEY.match(line)
        if match is None:
            pending = None if not line.strip() else pending
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match.group("key")]
        dotted = ".".join(path)
        node = _schema_at(schema, path)
        if pending is not None:
            descriptions[dotted] = " ".join(part.strip() for part in pending).strip()
            skip_deeper_than = indent
        elif "properties" not in node:
            undocumented.append(dotted)
            skip_deeper_than = indent
        pending = None
        stack.append((indent, match.group("key")))
    return Documented(descriptions, undocumented)


def _value_at(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def _type_of(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(kinds)
    if "enum" in node:
        text += " (" + ", ".join(f"`{value}`" for value in node["enum"]) + ")"
    return text


def rows(chart: Path = CHART) -> tuple[list[Row], Documented]:
    schema = json.loads((chart / "values.schema.json").read_text())
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    documented = read_comments(text, schema)
    table = [
        Row(
            key=key,
            type=_type_of(_schema_at(schema, key.split("."))),
            default=json.dumps(_value_at(values, key), separators=(", ", ": ")),
            description=description,
        )
        for key, description in documented.descriptions.items()
    ]
    return table, documented


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(table: list[Row]) -> str:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{row.key}` | {_cell(row.type)} | `{_cell(row.default)}` | {_cell(row.description)} |" for row in table
    ]
    return "\n".join(lines)


def updated_readme(readme: str, table: list[Row]) -> str:
    start = readme.index(START_MARKER) + len(START_MARKER)
    end = readme.index(END_MARKER)
    return readme[:start] + "\n" + render_table(table) + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the README's table is stale")
    args = parser.parse_args(argv)
    table, documented = rows()
    if documented.undocumented:
        print("keys without a `# --` comment: " + ", ".join(documented.undocumented), file=sys.stderr)
        return 1
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    fresh = updated_readme(readme, table)
    if args.check:
        if fresh != readme:
            print(f"{readme_path} is stale: run `make chart-docs`", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
