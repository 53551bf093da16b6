"""The corpus: every probe on every setup of checks/ and examples/, on seeds 0-2 (fast budget) and 0 (full); the
real-architecture setups of checks/real/ (the `real` extra: transformers, x-transformers, diffusers, torch_geometric)
on seeds 0-2 under the fast budget only.

Each setup file declares its claim at module level (read with ``ast``, without importing it):

- ``CORRECT = True``: a correct setup. Every probe passes or skips, except the probes named in ``ALLOW``, which may
  give at most the status written there (``ALLOW = {"activations": "warn"}``); the file's docstring or a comment says
  why that is right.
- ``EXPECT = {"probe-id": "fail" | "warn"}``: a broken setup. Each named probe gives exactly that status, with a hint.
  ``EXPECT_FAST`` overrides it for the fast budget where that budget gives less (documented in the file, listed in
  the README); a value may name alternatives, ``"warn|fail"``.
  The other probes may flag the same bug (the setup is broken), but none may end in ``error`` (a crash, or a probe
  blaming the user's code for what is the data's fault) unless ``ALLOW`` names it with ``"error"``.

The battery runs once per (file, seed, budget) in each test worker and is cached; the tests of one file share a
worker (``xdist_group`` by file, ``--dist loadgroup`` in pyproject.toml).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from helpers import declared, is_real, rel, run_file, setup_files

from nncheck.registry import registry
from nncheck.report import SetupReport, Status

# Every pair on 3 seeds under the fast budget (the CI gate's), and on seed 0 under the full one.
SEEDS = {"fast": (0, 1, 2), "full": (0,)}
PROBES = [pid for pid, p in registry().items() if p.default]
RANK = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}


@functools.cache
def battery(path: Path, seed: int, budget: str) -> SetupReport:
    return run_file(path, seed=seed, budget=budget)


def cases() -> list[pytest.param]:
    out = []
    for path in setup_files():
        group = pytest.mark.xdist_group(rel(path))
        for budget, seeds in SEEDS.items():
            if is_real(path) and budget != "fast":
                continue  # checks/real/: third-party architectures, the CI gate's budget only
            for seed in seeds:
                for pid in PROBES:
                    out.append(
                        pytest.param(path, seed, budget, pid, id=f"{rel(path)}-{budget}-{seed}-{pid}", marks=group)
                    )
    return out


@pytest.mark.parametrize(("path", "seed", "budget", "pid"), cases())
def test_corpus(path: Path, seed: int, budget: str, pid: str) -> None:
    claim = declared(path)
    report = battery(path, seed, budget)
    if pid not in {x.id for x in report.results}:  # turned off by the setup's `nncheck = {"skip": [...]}`
        assert pid not in claim.expect, f"{rel(path)}: expects {pid} but skips it"
        return
    r = report.result(pid)
    where = f"{rel(path)} seed {seed} budget {budget}: {pid} gave {r.status.value}: {r.message}"
    if pid in claim.expect:
        expected = claim.expect_fast.get(pid, claim.expect[pid]) if budget == "fast" else claim.expect[pid]
        assert r.status.value in expected.split("|"), f"{where}; expected {expected}"
        assert r.hint or r.status.value == "skip", f"{where}; a {r.status.value} without a hint"
        return
    allowed = claim.allow.get(pid, "skip" if claim.correct else "fail")
    assert RANK[r.status.value] <= RANK[allowed], f"{where}; allowed at most {allowed}" + (
        f" (hint: {r.hint})" if r.status is Status.ERROR else ""
    )


def test_every_setup_makes_a_claim() -> None:
    for path in setup_files():
        claim = declared(path)
        assert claim.correct != bool(claim.expect), f"{rel(path)}: declare either CORRECT = True or EXPECT = {{...}}"
        unknown = (set(claim.expect) | set(claim.allow) | set(claim.expect_fast)) - set(PROBES)
        assert not unknown, f"{rel(path)}: unknown probe ids {sorted(unknown)}"
