"""Use nncheck from pytest: the `nncheck` fixture (installed with the package) checks a setup inside a test.

Copy this file into your tests and replace `make_model` and `make_data` with yours, then run
`pytest test_example_pytest.py`. A failing probe fails the test with its message, numbers and hint; a warning
shows up in pytest's warnings summary. `budget="fast"` keeps the check to a few dozen training steps.
(This file is an example for users; nncheck's own test run does not collect it: its testpaths is tests/.)
"""

from pathlib import Path

import torch
from torch import nn


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))


def make_data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(256, 20, generator=g)
    y = (x @ w).argmax(dim=1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)]


def test_mlp(nncheck):
    nncheck.check(model=make_model, data=make_data, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), budget="fast")


def test_setup_file(nncheck):
    report = nncheck.check_file(Path(__file__).parent / "mlp.py", budget="fast")
    assert report["initial-loss"].status == "pass"  # the Report can be inspected further
