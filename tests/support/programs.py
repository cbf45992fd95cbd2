"""Outside programs a test needs: found on PATH, else skipped with the reason (but under CI=true, failed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_program(name: str, why: str = "") -> str:
    """The program's path; skips (or, in CI, fails) when it cannot be found."""
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
    if found:
        return found
    reason = f"{name} not found on PATH or in .tools/bin" + (f" ({why})" if why else "")
    if in_ci():
        pytest.fail(f"{reason}: CI=true, so this is a failure (.ci/run must install it)")
    pytest.skip(reason)
