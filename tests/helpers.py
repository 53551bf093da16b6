"""Helpers for nncheck's own tests: run setup files from checks/ and examples/ programmatically."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, NamedTuple

from nncheck.config import Config
from nncheck.report import SetupReport
from nncheck.runner import run_setup
from nncheck.setup import load_setup

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "checks"
EXAMPLES = ROOT / "examples"
# third-party architectures (the `real` extra): run under the fast budget only (README, Developing nncheck)
REAL = CHECKS / "real"
SEEDS = (0, 1, 2)


def setup_files(real: bool = True) -> list[Path]:
    """Every setup file of the corpus and the examples (files defining `model`); with ``real``, checks/real/ too (the
    corpus test runs them; the per-probe tests, through correct_files / broken_files, do not)."""
    files = sorted(CHECKS.glob("*.py")) + sorted(EXAMPLES.glob("*.py")) + (sorted(REAL.glob("*.py")) if real else [])
    out = []
    for f in files:
        text = f.read_text()
        if not f.name.startswith(("_", "test_")) and ("def model" in text or "\nmodel =" in text):
            out.append(f)
    return out


class Claim(NamedTuple):
    """What a setup file claims (module-level ``CORRECT``, ``EXPECT``, ``ALLOW``; see tests/test_corpus.py)."""

    correct: bool
    expect: dict[str, str]
    allow: dict[str, str]
    expect_fast: dict[str, str]  # what the fast budget gives instead, where it differs (documented in the file)


def declared(path: Path) -> Claim:
    """The claim a setup file declares at module level, read without importing the file."""
    tree = ast.parse(path.read_text())
    correct, expect, allow, expect_fast = False, {}, {}, {}
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets = [node.target.id]
            value = node.value
        for t in targets:
            if t == "CORRECT":
                correct = bool(ast.literal_eval(value))
            elif t == "EXPECT":
                expect = dict(ast.literal_eval(value))
            elif t == "ALLOW":
                allow = dict(ast.literal_eval(value))
            elif t == "EXPECT_FAST":
                expect_fast = dict(ast.literal_eval(value))
    return Claim(correct, expect, allow, expect_fast)


def is_real(path: Path) -> bool:
    """A setup of the real-architecture corpus (checks/real/)."""
    return path.parent == REAL


def correct_files() -> list[Path]:
    return [f for f in setup_files(real=False) if declared(f).correct]


def broken_files(probe_id: str | None = None) -> list[Path]:
    out = []
    for f in setup_files(real=False):
        claim = declared(f)
        if not claim.correct and claim.expect and (probe_id is None or probe_id in claim.expect):
            out.append(f)
    return out


def run_file(path: str | Path, seed: int = 0, budget: str = "full", **overrides: Any) -> SetupReport:
    """Run the battery (or `only=[...]`) on a setup file with defaults only (no pyproject lookup)."""
    setup = load_setup(str(path))
    sr = run_setup(setup, Config(), dict(seed=seed, budget=budget, **overrides))
    assert sr.error is None, f"{path}: setup error: {sr.error}"
    return sr


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))
