"""One Config from three sources: defaults < ``[tool.nncheck]`` in pyproject.toml < CLI / API arguments.

``[tool.nncheck]`` keys: ``only``, ``skip``, ``seed``, ``device``, ``strict``, ``budget``, ``time_budget_s``,
``threads``, and per-probe tables ``[tool.nncheck.probes.<probe-id>]`` whose keys are that probe's parameters
(``nncheck explain <id>`` lists them). A setup file may carry a ``nncheck = {...}`` dict with the same keys;
it applies to that setup only and sits between pyproject and the command line.
Unknown keys and probe ids are errors that name the nearest valid one.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUDGETS = ("full", "fast")
DEFAULT_SEED = 0

TOP_KEYS = ("only", "skip", "seed", "device", "strict", "budget", "time_budget_s", "threads", "probes")


class ConfigError(Exception):
    """A wrong key or value in the configuration (exit code 2)."""


def nearest(word: str, options: list[str] | tuple[str, ...]) -> str:
    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" Did you mean `{m[0]}`?" if m else ""


@dataclass
class Config:
    only: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    seed: int = DEFAULT_SEED
    device: str = "cpu"
    strict: bool = False
    budget: str = "full"
    # wall-clock limit of the import, the preflight and each probe; None: 300 s (import, preflight) and 5000 steps
    time_budget_s: float | None = None
    threads: int | None = None  # torch CPU threads during the run; None: automatic (runner.auto_threads)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "defaults"

    def merged(self, overrides: dict[str, Any], source: str) -> Config:
        """A new Config with ``overrides`` (already validated) applied; per-probe tables merge key by key."""
        changes = {k: v for k, v in overrides.items() if k != "probes" and v is not None}
        probes = {k: dict(v) for k, v in self.probes.items()}
        for pid, table in (overrides.get("probes") or {}).items():
            probes.setdefault(pid, {}).update(table)
        return replace(self, **changes, probes=probes, source=source)

    def selected(self, all_ids: list[str], default_ids: list[str] | None = None) -> list[str]:
        """The probe ids to run, in battery order."""
        base = self.only or (default_ids if default_ids is not None else all_ids)
        return [p for p in all_ids if p in base and p not in self.skip]


def check_device(value: str, where: str) -> None:
    """Raise ConfigError unless ``value`` names a device that this torch build can use."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{where}: `device` {value!r} is not a torch device; use cpu, cuda, cuda:1 or mps.") from None
    if dev.type == "cpu":
        return
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }.get(dev.type, True)
    if dev.type == "cuda" and available and dev.index is not None and dev.index >= torch.cuda.device_count():
        available = False
    if not available:
        raise ConfigError(
            f"{where}: device `{value}` is not available with this torch build ({torch.__version__}); use "
            "`cpu`, or install the torch build for your accelerator (see the README's quick start)."
        )


def validate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Check keys, probe ids, parameter names and value types; return a normalised dict. Reads the probes from the
    torch-free catalogue when it is current (``nncheck._catalog``), so that the CLI's parent never imports torch."""
    from nncheck._catalog import probes as catalogue

    probes = catalogue()
    ids = list(probes)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in TOP_KEYS and key in probes:
            raise ConfigError(
                f"{where}: unknown key `{key}`. Probe parameters go in a per-probe table: "
                f"[tool.nncheck.probes.{key}] in pyproject.toml, or `probes = {{'{key}': {{...}}}}` in a setup file."
            )
        if key not in TOP_KEYS:
            raise ConfigError(
                f"{where}: unknown key `{key}`.{nearest(key, TOP_KEYS)} Valid keys: {', '.join(TOP_KEYS)}."
            )
        if key in ("only", "skip"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: `{key}` must be a list of probe ids.")
            for pid in value:
                if pid not in probes:
                    raise ConfigError(
                        f"{where}: unknown probe id `{pid}` in `{key}`.{nearest(pid, ids)} Valid ids: {', '.join(ids)}."
                    )
            out[key] = list(value)
        elif key == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: `seed` must be an integer; got {value!r}.")
            out[key] = value
        elif key == "device":
            if not isinstance(value, str):
                raise ConfigError(f"{where}: `device` must be a string such as 'cpu' or 'cuda'; got {value!r}.")
            check_device(value, where)
            out[key] = value
        elif key == "strict":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: `strict` must be true or false; got {value!r}.")
            out[key] = value
        elif key == "budget":
            if value not in BUDGETS:
                raise ConfigError(f"{where}: `budget` must be one of {', '.join(BUDGETS)}; got {value!r}.")
            out[key] = value
        elif key == "threads":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}: `threads` must be a positive integer; got {value!r}.")
            out[key] = value
        elif key == "time_budget_s":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{where}: `time_budget_s` must be a positive number of seconds; got {value!r}.")
            out[key] = float(value)
        elif key == "probes":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: `probes` must be a table of per-probe tables.")
            tables: dict[str, dict[str, Any]] = {}
            for pid, table in value.items():
                if pid not in probes:
                    raise ConfigError(
                        f"{where}: unknown probe id `{pid}` in `probes`.{nearest(pid, ids)} "
                        f"Valid ids: {', '.join(ids)}."
                    )
                if not isinstance(table, dict):
                    raise ConfigError(f"{where}: `probes.{pid}` must be a table of parameters.")
                known = {i.name: i for i in probes[pid].param_info}
                checked: dict[str, Any] = {}
                for pk, pv in table.items():
                    if pk not in known:
                        names = ", ".join(known) or "none"
                        raise ConfigError(
                            f"{where}: probe `{pid}` has no parameter `{pk}`.{nearest(pk, tuple(known))} "
                            f"Its parameters: {names}."
                        )
                    try:
                        checked[pk] = known[pk].check(pv, f"`probes.{pid}.{pk}`")
                    except TypeError as e:
                        raise ConfigError(f"{where}: {e}") from None
                tables[pid] = checked
            out[key] = tables
    return out


def find_pyproject(start: str | os.PathLike[str]) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (a file or a folder)."""
    p = Path(start).resolve()
    if p.is_file():
        p = p.parent
    for folder in (p, *p.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}.") from None
    section = data.get("tool", {}).get("nncheck", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.nncheck] must be a table.")
    return validate(section, f"{path} [tool.nncheck]")


def load_config(start: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults < nearest pyproject.toml's [tool.nncheck] (from ``start`` or the cwd) < ``overrides``."""
    cfg = Config()
    pyproject = find_pyproject(start or os.getcwd())
    if pyproject is not None:
        section = read_pyproject(pyproject)
        if section:
            cfg = cfg.merged(section, str(pyproject))
    return with_arguments(cfg, overrides)


def given(overrides: dict[str, Any]) -> dict[str, Any]:
    """The options actually given: ``None`` and empty lists mean "not set" (click's and the API's defaults)."""
    return {k: v for k, v in overrides.items() if v is not None and v != [] and v != ()}


def with_arguments(cfg: Config, overrides: dict[str, Any] | None) -> Config:
    """``cfg`` with the CLI / API / pytest options that were given, validated, on top."""
    clean = given(overrides or {})
    return cfg.merged(validate(clean, "arguments"), "arguments") if clean else cfg
