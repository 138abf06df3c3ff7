"""Import contracts of the package, checked on the source (every import statement, module level or
inside a function):

1. **Layers**, top to bottom (:data:`LAYERS`): a module imports only from its own layer or from
   layers below it. Commands sit on top; nothing below them imports a command.
2. **No cycles** between the packages and top-level modules of ``facenet3d``.
3. **The runtime never imports torch**: nothing ``facenet3d.infer`` imports at module level,
   directly or through other modules, imports ``torch`` (or ``mediapipe``) at module level.
   (``tests/test_infer.py`` also runs the runtime in a process where importing torch fails.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Checkout folder of each installed package name (``setup.py``'s mapping).
ROOTS = {"facenet3d": REPO / "facenet3d", "facenet3d.infer": REPO / "infer", "facenet3d.train": REPO / "train"}

#: Layers, top first. A name stands for that module or package and everything under it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("facenet3d.__main__", "facenet3d.cli"),
    ("facenet3d.reconstruct", "facenet3d.train", "facenet3d.evaluate"),
    ("facenet3d.infer", "facenet3d.video", "facenet3d.api"),
    ("facenet3d.batch", "facenet3d.onnx", "facenet3d.refine", "facenet3d.network", "facenet3d.teacher",
     "facenet3d.export", "facenet3d.video_io", "facenet3d.losses", "facenet3d.track"),
    ("facenet3d.decode", "facenet3d.render", "facenet3d.facemodel", "facenet3d.landmarks", "facenet3d.params",
     "facenet3d.camera_math", "facenet3d.geometry", "facenet3d.metrics"),
    ("facenet3d.errors", "facenet3d.atomic", "facenet3d.resources", "facenet3d"),
)
FORBIDDEN_IN_RUNTIME = ("torch", "mediapipe")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Absolute names imported by a module (``from a.b import c`` gives ``a.b.c`` and ``a.b``).

    With ``module_level_only``, the imports executed when the module is imported: its top-level
    statements, including those inside top-level ``if`` / ``try`` blocks, but not ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    if not module_level_only:
        return {name for node in ast.walk(tree) for name in _imports_of(node)}
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes = ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else (node,)
        names.update(name for child in nodes for name in _imports_of(child))
    return names


def _imports_of(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return set()


def _internal(name: str) -> str | None:
    """The project module an imported name refers to (longest known prefix), else None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and n.count(".") > depth:
                best, depth = i, n.count(".")
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def _unit(module: str) -> str:
    """The package or top-level module of ``facenet3d`` a module belongs to (cycle granularity)."""
    for package in ("facenet3d.infer", "facenet3d.train"):
        if module == package or module.startswith(package + "."):
            return package
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def test_every_import_goes_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        for name in _imports(path):
            target = _internal(name)
            if target and target != module and _layer(target) < _layer(module):
                wrong.append(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for name in _imports(path):
            target = _internal(name)
            if target and _unit(target) != _unit(module):
                graph.setdefault(_unit(module), set()).add(_unit(target))

    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_runtime_never_imports_torch_at_module_level():
    seen: set[str] = set()
    todo = [m for m in MODULES if _unit(m) == "facenet3d.infer"]
    parents: dict[str, str] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(MODULES[module], module_level_only=True):
            top = name.split(".")[0]
            if top in FORBIDDEN_IN_RUNTIME:
                chain = [module]
                while chain[-1] in parents:
                    chain.append(parents[chain[-1]])
                pytest.fail(f"the runtime imports {top}: {' <- '.join(chain)}")
            target = _internal(name)
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
            while target:
                if target not in seen:
                    parents.setdefault(target, module)
                    todo.append(target)
                target = _internal(target.rpartition(".")[0]) if "." in target else None


def test_a_violation_is_caught(tmp_path, monkeypatch):
    """The layer check fails on an upward import (the contracts are not vacuous)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from facenet3d.cli import main\n")
    monkeypatch.setitem(MODULES, "facenet3d.geometry_probe", bad)
    with pytest.raises(AssertionError, match="imports facenet3d.cli"):
        test_every_import_goes_down_the_layers()
