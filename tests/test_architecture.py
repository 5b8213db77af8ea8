"""The architecture, checked independently of import-linter: every import of a vaelab module, wherever it stands in
a file (function-local ones included), points down the layers, and no set of modules imports itself in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vaelab

SRC = Path(vaelab.__file__).parent
#: top to bottom; a layer may import itself and the layers after it (probability and nn are independent of each other)
LAYERS = [["cli"], ["api"], ["sweeps"], ["presets"], ["viz"], ["eval"], ["training"], ["runs"], ["data"], ["models"]]
LAYERS += [["probability", "nn"], ["core"]]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def resolve(name: str) -> str:
    """The module an imported name refers to: itself if it is a module, else the nearest enclosing module."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported vaelab module, inside a function or class body, line) for every import statement in the file."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            if isinstance(child, ast.Import):
                found.extend(
                    (resolve(a.name), nested, child.lineno) for a in child.names if a.name.startswith("vaelab")
                )
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("vaelab"):
                for alias in child.names:  # `from vaelab.models import vae` imports the module vaelab.models.vae
                    found.append((resolve(f"{child.module}.{alias.name}"), nested, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


GRAPH = {name: {target for target, _, _ in imports(path) if target != name} for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_no_function_local_imports_of_vaelab_modules():
    local = [
        f"{name}:{line} imports {target}"
        for name, path in MODULES.items()
        for target, nested, line in imports(path)
        if nested
    ]
    assert not local, "function-local imports of vaelab modules:\n" + "\n".join(local)


def test_imports_point_down_the_layers():
    wrong = []
    for name, targets in GRAPH.items():
        if name == "vaelab":  # the package itself re-exports the API
            continue
        for target in targets:
            if target == "vaelab":
                wrong.append(f"{name} imports the package vaelab itself")
                continue
            a, b = layer_of(name), layer_of(target)
            if b < a or (a == b and len(LAYERS[a]) > 1 and name.split(".")[1] != target.split(".")[1]):
                wrong.append(f"{name} (layer {LAYERS[a]}) imports {target} (layer {LAYERS[b]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_among_modules():
    """Tarjan's strongly connected components over every vaelab module: each must be a single module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", ["models"])
def test_model_files_never_see_paths_data_runs_or_figures(layer):
    """A model file is math only: no imports of data, runs, training, eval, viz, matplotlib, PIL or pathlib."""
    banned = ("vaelab.data", "vaelab.runs", "vaelab.training", "vaelab.eval", "vaelab.viz", "matplotlib", "PIL")
    for name, path in MODULES.items():
        if not name.startswith(f"vaelab.{layer}"):
            continue
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not [m for m in names if m.startswith(banned) or m == "pathlib"], (name, names)
