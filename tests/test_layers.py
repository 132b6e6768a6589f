"""The import order the folders promise: a library below, trainer and evaluation above it, the commands on top.

Parsed from the source with ``ast`` (imports inside functions count too), so an upward import fails here
before it can tie the library to the trainer. Lower floors never import higher ones:

    config < models < losses < data, export < methods < flops < tcjepa/__init__ < eval < train < app

``export`` (the exported-encoder file format: safetensors + config.json around a ViT) sits with ``data``
below the methods, which read an exported encoder as a frozen teacher.

``eval`` never imports ``train`` (an evaluation must not depend on how a model was trained), while the
trainer may use evaluation primitives (the online probe). Within a floor, modules may import each other,
but no chain of imports may lead back to where it started.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tcjepa"

FLOORS: dict[str, int] = {
    "config": 0,
    "models": 1,
    "losses": 2,
    "data": 3,
    "methods": 4,
    "flops": 5,
    "export": 3,
    "__init__": 6,  # the package root: ``tcjepa.load_encoder`` re-exports export's
    "eval": 7,
    "train": 8,
    "app": 9,
    "__main__": 10,  # ``python -m tcjepa``: the CLI's entry point, above everything
}


def module_name(path: Path) -> str:
    parts = ("tcjepa", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every tcjepa module ``path`` imports, resolved to dotted names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("tcjepa"):
                # `from .pkg import mod` imports the module pkg.mod when it exists
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tcjepa"))
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_floor() -> None:
    units = {unit(m) for m in import_graph()}
    assert units <= set(FLOORS), f"give these top-level modules a floor in FLOORS: {sorted(units - set(FLOORS))}"


def test_no_import_goes_up_a_floor() -> None:
    upward = [
        f"{a} (floor {FLOORS[unit(a)]}) imports {b} (floor {FLOORS[unit(b)]})"
        for a, targets in import_graph().items()
        for b in sorted(targets)
        if unit(a) != unit(b) and FLOORS[unit(b)] >= FLOORS[unit(a)]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    # The rule must be able to fail: a models module importing train is caught.
    fake = tmp_path / "tcjepa"
    (fake / "models").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "models" / "bad.py").write_text("from ..train import loop\n")
    (fake / "train" / "loop.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    graph = import_graph()
    assert graph["tcjepa.models.bad"] == {"tcjepa.train.loop"}
    assert FLOORS[unit("tcjepa.train.loop")] > FLOORS[unit("tcjepa.models.bad")]
