"""Running promtool: found on PATH (Debian's `prometheus` package, or `make tools-observability`)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

PROMTOOL_TIMEOUT_S = 60  # the slowest rule test file evaluates three hours of rules in about 2 s
MISSING = "promtool not found on PATH: `make tools-observability` installs Debian's prometheus package"

Promtool = Callable[..., subprocess.CompletedProcess[str]]


def find() -> str | None:
    return shutil.which("promtool")


def runner(path: str) -> Promtool:
    """A function running `promtool ARGS...` that returns the finished process (stdout and stderr as text)."""

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [path, *map(str, args)], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S, check=False
        )

    return run


def check_expressions(run: Promtool, expressions: dict[str, str], directory: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on one recording rule per expression: a real PromQL parse of each.

    `expressions` maps a name (shown in promtool's errors) to its PromQL.
    """
    rules = [{"record": f"check:expression_{i}", "expr": expr} for i, expr in enumerate(expressions.values())]
    names = "\n".join(f"# expression_{i}: {name}" for i, name in enumerate(expressions))
    path = directory / "expressions.rules.yaml"
    path.write_text(names + "\n" + yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    return run("check", "rules", path)
