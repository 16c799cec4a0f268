"""The package's layout, as a newcomer and a user meet it: one import name, and no import loop
(an import inside a function counts; one under `if TYPE_CHECKING:` is for the type checker
only, and does not)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: folder -> the package name it is installed as (pyproject.toml: package-dir)
PACKAGES = {"conformance": "adamw_conformance", "spec": "adamw_conformance.spec"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _runtime_imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: resolve against this module's package
                package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
    return {m for m in out if m in modules and m != name}


def test_one_import_name() -> None:
    assert set(_modules()) and all(m.startswith("adamw_conformance") for m in _modules())


def test_no_import_loop() -> None:
    modules = _modules()
    graph = {name: _runtime_imports(path, name, modules) for name, path in modules.items()}
    # A package's __init__ is imported with each of its modules: an edge to it is not a loop
    # of the modules themselves unless __init__ itself imports back.
    loops = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                loops.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not loops, "\n".join(" -> ".join(loop) for loop in loops)
