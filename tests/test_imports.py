"""The package graph: no import circle, and no layer imports one above it (common < nerf < pruning <
study, and inside study: its top-level modules < search < record < run < paper < measure < cli). Every
import counts, the ones inside functions and under TYPE_CHECKING too: a late import hides a circle from
Python, not from the reader. Library code imports at the top; only the heavy services (ray, mlflow,
optuna) may be imported inside a function."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("common", "nerf", "pruning", "study")
STUDY_PACKAGES = ("search", "record", "run", "paper", "measure", "cli")
"""study's packages, lowest first; its top-level modules (durable, chaos) sit below them all."""
LATE_IMPORTS_ALLOWED = ("ray", "mlflow", "optuna")


def modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (`from pkg import name` counts as pkg.name where that is a
    module, else as pkg)."""

    def module(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {module(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {module(f"{node.module}.{alias.name}") or module(node.module) for alias in node.names}
    return found - {None}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def cycle_through(edges: dict[str, set[str]]) -> list[str] | None:
    """Some import circle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_the_packages_and_their_imports():
    edges = graph()
    assert {"nerf.occupancy", "nerf.render", "pruning.surgery", "study.run.runner"} <= set(edges)
    assert "nerf.occupancy" in edges["nerf.render"]  # a known import is found
    assert cycle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_through({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    found = cycle_through(graph())
    assert found is None, "import circle: " + " -> ".join(found or [])


def test_no_layer_imports_a_layer_above_it():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if rank[target.split(".")[0]] > rank[source.split(".")[0]]
    ]
    assert not upward, upward


def level(module: str) -> tuple[int, int]:
    parts = module.split(".")
    inner = (
        STUDY_PACKAGES.index(parts[1]) + 1
        if parts[0] == "study" and parts[1:2] and parts[1] in STUDY_PACKAGES
        else 0
    )
    return LAYERS.index(parts[0]), inner


def test_study_packages_import_downward_only():
    assert level("study.run.runner") > level("study.record.store") > level("study.durable")
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if source.startswith("study.") and level(target) > level(source)
    ]
    assert not upward, upward
    assert len([p for p in (ROOT / "study").glob("*.py")]) <= 6  # the rest lives in the packages


def late_imports(path: Path) -> list[str]:
    """Imports inside a function or class body, by module name (not counting ray, mlflow, optuna)."""
    tree = ast.parse(path.read_text())
    found = []
    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(scope):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] not in LATE_IMPORTS_ALLOWED
            ]
    return found


def test_only_ray_mlflow_and_optuna_are_imported_late():
    late = [hit for path in modules().values() for hit in late_imports(path)]
    assert not late, late


def test_the_late_import_walk_finds_an_import_inside_a_function(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    snippet = tmp_path / "snippet.py"
    snippet.write_text("import os\n\ndef f():\n    import json\n    import ray\n    return json\n")
    assert late_imports(snippet) == ["snippet.py:4 json"]
