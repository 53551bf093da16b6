"""The code base stays ruff clean (the lint rules live in pyproject.toml)."""

import shutil
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_clean():
    proc = subprocess.run(
        ["ruff", "check", "nncheck", "tests", "examples", "checks", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
