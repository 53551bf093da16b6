"""Docs stay true: every probe documents itself in ruff-rule shape, docs/probes.md matches the docstrings, and the
README's probe table lists every probe."""

from __future__ import annotations

import pytest
from helpers import ROOT

from nncheck.cli import explain_markdown
from nncheck.registry import registry

SECTIONS = ("What it does", "Why is this bad?", "Thresholds", "How to fix", "Example")


@pytest.mark.parametrize("probe_id", list(registry()))
def test_probe_docstring_has_every_section(probe_id):
    doc = registry()[probe_id].doc
    missing = [s for s in SECTIONS if s not in doc]
    assert not missing, f"{probe_id}: docstring lacks {missing}"


def test_docs_probes_md_is_current():
    current = (ROOT / "docs" / "probes.md").read_text()
    assert current == explain_markdown(registry()), (
        "docs/probes.md is stale: run `nncheck explain --all --markdown > docs/probes.md`"
    )


def test_readme_lists_every_probe():
    readme = (ROOT / "README.md").read_text()
    for pid in registry():
        assert f"docs/probes.md#{pid}" in readme, f"README's probe table lacks {pid}"
