"""Compare the learning-rate probe's range test with torch-lr-finder's on the same models, batches and optimizers.

A benchmark note, not a test and not a dependency: torch-lr-finder is imported here only.

    pip install torch-lr-finder          # (and its tqdm dependency)
    OMP_NUM_THREADS=1 python benchmarks/compare_lr_finder.py [--seeds 3] [-k mlp]

For every setup of examples/ and checks/lr_*.py with the default forward (``x, y`` batches), and each seed, both
tools start from the same initial model (nncheck's pristine copy under the seed), the user's optimizer class and
hyperparameters, the same loss and the same first 4 batches cycled, and sweep the LR exponentially from 1e-7 to 10
over 100 steps:

- nncheck: EMA 0.98 (bias-corrected), stop at 4x the smoothed minimum, steepest descent after the first 25 steps
  and before the smoothed minimum.
- torch-lr-finder (0.2.x) defaults: EMA with smooth_f=0.05 (i.e. 0.95, no bias correction), stop at 5x the best
  smoothed loss, steepest gradient of the curve with the first 10 and last 5 points skipped (``LRFinder.plot``).
- torch-lr-finder with smooth_f=0.02 (the same EMA factor as nncheck's 0.98).

It prints each suggestion, the divergence LR where each sweep stopped, and |log10(ours / theirs)| (decades apart).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import correct_files, run_file  # noqa: E402

from nncheck.context import Context  # noqa: E402
from nncheck.setup import call_model, load_setup  # noqa: E402

START_LR, END_LR, STEPS, BATCHES = 1e-7, 10.0, 100, 4


def setups(pattern: str) -> list[Path]:
    files = list(correct_files()) + sorted((ROOT / "checks").glob("lr_*.py"))
    out = []
    for f in dict.fromkeys(files):
        if pattern in f.name and not load_setup(str(f)).custom_forward:  # LRFinder feeds `inputs, labels = batch`
            out.append(f)
    return out


class Positional(torch.nn.Module):
    """LRFinder calls ``model(inputs)``: unpack tuple / dict inputs as nncheck's default forward does."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Any) -> Any:
        return call_model(self.inner, x)


def theirs(ctx: Context, smooth_f: float) -> tuple[float | None, float | None]:
    """torch-lr-finder's steepest-gradient suggestion and the LR where it stopped (None: it ran to the end)."""
    from torch_lr_finder import LRFinder

    ctx.seed_all()
    model = ctx.fresh_model(train=True)
    opt = ctx.optimizer(model)
    batches = ctx.batches(BATCHES)
    cycled = [batches[i % len(batches)] for i in range(STEPS)]
    loader = torch.utils.data.DataLoader(cycled, batch_size=None, shuffle=False)
    finder = LRFinder(Positional(model), opt, ctx.loss_fn, device=str(ctx.device))
    finder.range_test(loader, start_lr=START_LR, end_lr=END_LR, num_iter=STEPS, smooth_f=smooth_f, diverge_th=5)
    lrs, losses = finder.history["lr"], finder.history["loss"]
    stopped = lrs[-1] if len(lrs) < STEPS else None
    lrs, losses = lrs[10:-5], losses[10:-5]  # LRFinder.plot(skip_start=10, skip_end=5)
    finite = [v if math.isfinite(v) else float("inf") for v in losses]
    suggestion = float(lrs[int(np.gradient(np.array(finite)).argmin())]) if len(lrs) >= 2 else None
    return suggestion, stopped


def ours(path: Path, seed: int) -> tuple[float | None, float | None]:
    r = run_file(path, seed=seed, only=["learning-rate"]).result("learning-rate")
    return r.measured.get("suggested_lr"), r.measured.get("divergence_lr")


def decades(a: float | None, b: float | None) -> float | None:
    return abs(math.log10(a / b)) if a and b else None


def fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("-k", default="", help="only setups whose file name contains this")
    args = parser.parse_args()
    try:
        import torch_lr_finder  # noqa: F401
    except ImportError:
        sys.exit("torch-lr-finder is not installed: pip install torch-lr-finder")
    torch.set_num_threads(1)
    print(
        f"{'setup':28s} seed  {'ours':>7s} {'tlf0.05':>7s} {'tlf0.02':>7s}  {'d(0.05)':>7s} {'d(0.02)':>7s}  "
        f"{'div ours':>8s} {'div tlf':>8s}"
    )
    gaps: dict[str, list[float]] = {"0.05": [], "0.02": []}
    for path in setups(args.k):
        for seed in range(args.seeds):
            sug, div = ours(path, seed)
            ctx = Context(load_setup(str(path)), seed=seed)
            ctx.preflight(time_steps=False)
            t05, stop05 = theirs(ctx, 0.05)
            t02, _ = theirs(ctx, 0.02)
            d05, d02 = decades(sug, t05), decades(sug, t02)
            for key, d in (("0.05", d05), ("0.02", d02)):
                if d is not None:
                    gaps[key].append(d)
            print(
                f"{path.name[:28]:28s} {seed:4d}  {fmt(sug):>7s} {fmt(t05):>7s} {fmt(t02):>7s}  {fmt(d05):>7s} "
                f"{fmt(d02):>7s}  {fmt(div):>8s} {fmt(stop05):>8s}"
            )
    for key, values in gaps.items():
        if values:
            within = sum(v <= 1 for v in values) / len(values)
            print(
                f"torch-lr-finder smooth_f={key}: median {statistics.median(values):.2f} decades apart, "
                f"max {max(values):.2f}; within one decade in {within:.0%} of {len(values)} runs"
            )


if __name__ == "__main__":
    main()
