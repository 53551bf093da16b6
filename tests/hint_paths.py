"""Every module path a probe prints (`model[0].bias`, `model.heads['a']`) must evaluate on the setup's model()."""

from __future__ import annotations

import re
from pathlib import Path

from nncheck.setup import load_setup

# `model` followed by at least one `.name` / `[index]` / `['key']`; getattr(model, 'x') forms are evaluated whole.
PATH_RE = re.compile(r"(?<![\w.])model(?:\.[A-Za-z_]\w*|\[[^\]\[]+\])+|getattr\(model[^`]*?\)")
# words after `model.` that are prose, not paths
PROSE = {"model.eval", "model.train", "model.parameters", "model.modules", "model.named_parameters"}


def module_paths(text: str) -> list[str]:
    return [m.group(0) for m in PATH_RE.finditer(text or "") if m.group(0) not in PROSE]


def bad_paths(path: str | Path, texts: list[str]) -> list[str]:
    """The module paths in ``texts`` that do not evaluate on a fresh ``model()`` of the setup file."""
    model = load_setup(str(path)).model()
    bad = []
    for expr in {p for t in texts for p in module_paths(t)}:
        try:
            eval(expr, {"model": model})
        except Exception as e:
            bad.append(f"{expr}: {type(e).__name__}: {e}")
    return bad


def bare_names(text: str, names: list[str]) -> list[str]:
    """Qualified module names (`0`, `features.3`) shown bare in backticks instead of as a code path."""
    return [n for n in names if n and f"`{n}`" in (text or "")]
