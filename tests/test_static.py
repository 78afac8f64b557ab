"""Static checks, so CI keeps them: ruff (pyflakes and bugbear's real mistakes: undefined names,
unused imports and variables, loop variables caught late by closures) over the code and its tests
and benches, and mypy over the product's packages. Their rules and overrides are in pyproject.toml
([tool.ruff], [tool.mypy]); each reason for a rule left out or a library read as Any is there.
Both run offline; their caches go under the virtualenv (mypy: about 40 s cold, seconds warm)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ("stream", "model", "training", "sentinel", "bench", "tests")
TYPED = ("stream", "model", "training", "sentinel")
CACHE = Path(sys.prefix)  # the virtualenv: never the work tree


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    found = subprocess.run([sys.executable, "-c", f"import {tool}"], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"{tool} is not installed in {sys.prefix}: `make setup` installs the dev extra")
    # mypy on a clean clone starts with no cache: a loaded 2-core machine took over 300 s (session
    # 52), so up to just under pytest-timeout's 600 s, which would end the test without mypy's output.
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=540)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-fix", "--output-format", "concise", "--cache-dir", str(CACHE / ".ruff_cache"), *LINTED)
    assert result.returncode == 0, f"ruff findings (fix them, or give a rule's reason in pyproject.toml):\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing():
    result = _run("mypy", "--cache-dir", str(CACHE / ".mypy_cache"), *TYPED)
    assert result.returncode == 0, f"mypy errors (a wrong hint is a bug too):\n{result.stdout}{result.stderr}"
