"""The probe catalogue (nncheck/_catalog_data.py): current, identical to what the probes say, and what lets
`nncheck list` / `nncheck explain ID` answer without importing torch (issue 13: under 0.5 s, median of 5)."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys

import pytest
from helpers import ROOT

from nncheck import _catalog
from nncheck.cli import explain_text
from nncheck.registry import registry

STALE = "the probe catalogue is stale: run `python -m nncheck._catalog` (it records the probes' docs and parameters)"


def test_catalogue_is_current():
    assert _catalog.DATA_FILE.read_text(encoding="utf-8") == _catalog.render(_catalog.generate()), STALE


def test_catalogue_says_what_the_probes_say(monkeypatch):
    monkeypatch.setattr(_catalog, "_CACHE", None)
    found = _catalog.catalogued()
    if found is None:
        pytest.fail(STALE)
    probes = registry()
    assert list(found) == list(probes)
    for pid, p in probes.items():
        c = found[pid]
        assert (c.title, c.order, c.default, c.summary) == (p.title, p.order, p.default, p.summary)
        assert explain_text(c) == explain_text(p)
        assert c.resolved_params("fast") == c.params(**{i.name: i.value("fast") for i in p.param_info})


def test_a_stale_catalogue_falls_back_to_the_probes(monkeypatch):
    monkeypatch.setattr(_catalog, "_CACHE", None)
    monkeypatch.setattr(_catalog, "sources_hash", lambda: "edited")
    assert _catalog.catalogued() is None
    monkeypatch.setattr(_catalog._registry, "_LOADED", False)
    monkeypatch.setattr(_catalog._registry, "registry", lambda: {"from": "registry"})
    assert _catalog.probes() == {"from": "registry"}


@pytest.mark.parametrize("args", [["list"], ["explain", "overfit-batch"], ["run", "--help"]])
def test_list_and_explain_answer_without_torch_in_well_under_half_a_second(args):
    _catalog._CACHE = None
    if _catalog.catalogued() is None:
        pytest.fail(STALE)
    code = (
        "import sys\nfrom nncheck.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cpu = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        assert proc.stderr.strip().endswith("NO TORCH"), proc.stderr
    # CPU time, not wall time: what the command costs, whatever else the machine runs (the wall time is the same on
    # an idle machine: 0.15-0.17 s median here)
    assert statistics.median(cpu) < 0.5, cpu
    if args[0] == "list":
        assert "overfit-batch" in proc.stdout and "initial-loss" in proc.stdout
    elif args[0] == "explain":
        assert "What it does" in proc.stdout and "[tool.nncheck.probes.overfit-batch]" in proc.stdout
