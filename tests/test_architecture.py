"""The package's import structure: layers that import only downward, no cycles, no probe importing another probe.

Read with ``ast`` (lazy imports inside functions count; imports under ``if TYPE_CHECKING:`` do not, they never run).
Adding a module to nncheck means placing it in ``LAYERS``: the test fails for a module it does not know.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nncheck"

# Lowest first. A module imports only modules of a lower layer; inside one package it may also import the package's
# __init__ and its private (``_``) helper modules. ``nncheck.probes.*`` stands for every module of that package.
LAYERS: list[set[str]] = [
    {"nncheck._version", "nncheck.tensors", "nncheck.files", "nncheck.state"},
    {"nncheck.deadline", "nncheck._catalog_data"},
    {"nncheck.report", "nncheck.registry", "nncheck.lightning"},
    {"nncheck.setup", "nncheck.config", "nncheck.render", "nncheck.render.*", "nncheck._catalog"},
    {"nncheck.losses", "nncheck.modelgraph", "nncheck.schedule"},
    {"nncheck.trace"},
    {"nncheck.context"},
    {"nncheck.kit"},
    {"nncheck.probes", "nncheck.probes.*"},
    {"nncheck.runner"},
    {"nncheck.worker", "nncheck._preload"},
    {"nncheck", "nncheck.cli", "nncheck.pytest_plugin"},
    {"nncheck.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer or any(p.endswith(".*") and name.startswith(p[:-1]) for p in layer):
            return i
    raise KeyError(name)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(path: Path) -> set[str]:
    """nncheck modules imported by ``path`` (``from nncheck.x import y`` is nncheck.x.y when that is a module)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    known = set(MODULES)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "nncheck"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nncheck":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_layer(name):
    rank(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name):
    for target in GRAPH[name]:
        same_package = target.rpartition(".")[0] == name.rpartition(".")[0] or target == name.rpartition(".")[0]
        private = target.rpartition(".")[2].startswith("_") or target == name.rpartition(".")[0]
        assert rank(target) < rank(name) or (same_package and private), (
            f"{name} (layer {rank(name)}) imports {target} (layer {rank(target)}): imports must go to a lower layer"
        )


def test_no_probe_imports_another_probe():
    for name, targets in GRAPH.items():
        if name.startswith("nncheck.probes."):
            others = [
                t for t in targets if t.startswith("nncheck.probes.") and not t.rpartition(".")[2].startswith("_")
            ]
            assert not others, f"{name} imports the probe module(s) {others}: shared code goes in a _helper module"


def test_no_core_module_imports_a_probe():
    for name, targets in GRAPH.items():
        if not name.startswith("nncheck.probes"):
            assert not [t for t in targets if t.startswith("nncheck.probes")], f"{name} imports {targets}"


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in GRAPH.get(n, ()):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(t) :], t]))
            if t in GRAPH and not state.get(t):
                visit(t, [*stack, t])
        state[n] = 2

    for n in GRAPH:
        if not state.get(n):
            visit(n, [n])
