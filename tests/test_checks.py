"""The corpus (checks/) and the examples: every broken setup is flagged by its expected probe with the expected
status; every correct setup has no fail and no error in the whole battery.

Each file declares `EXPECT = {"probe-id": "fail" | "warn"}` (broken) or `CORRECT = True` (correct).
Broken setups run only the probes they name (the other probes' verdicts are not part of the claim);
correct setups run the whole default battery under the fast budget.
"""

from __future__ import annotations

import pytest
from helpers import broken_files, correct_files, declared, rel, run_file

BROKEN = broken_files()
CORRECT = correct_files()


@pytest.mark.parametrize("path", BROKEN, ids=rel)
def test_broken_setup_is_flagged(path):
    _, expect = declared(path)
    sr = run_file(path, budget="fast", only=list(expect))
    for pid, status in expect.items():
        r = sr.result(pid)
        assert r.status.value == status, f"{rel(path)}: {pid} gave {r.status.value} ({r.message}); expected {status}"
        assert r.hint, f"{rel(path)}: {pid} {status} without a hint"


@pytest.mark.parametrize("path", CORRECT, ids=rel)
def test_correct_setup_passes(path):
    sr = run_file(path, budget="fast")
    bad = [f"{r.id}: {r.status.value}: {r.message}" for r in sr.results if r.status.value in ("fail", "error")]
    assert not bad, f"{rel(path)}:\n" + "\n".join(bad)
