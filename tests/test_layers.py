"""The package's floors: every import (function-level ones included) points at a module that
exists, at the importer's own floor or one below, and no modules import each other in a circle.
Imports under ``if TYPE_CHECKING:`` never run, so they cannot close a circle (two modules of
one floor may name each other's types); they must still respect the floors.

The floors, lowest first (the README's layout section describes them):
base (the package root, _compat, atomic_io, records, distributed) < guidance < pipelines
< models < runs < training < prompts < shapes < eval < cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "contrastive_diffusers"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Each floor and the top-level names (modules or subpackages) on it, lowest first.
FLOORS = (
    ("base", {"", "_compat", "atomic_io", "records", "distributed"}),
    ("guidance", {"guidance"}),
    ("pipelines", {"pipelines"}),
    ("models", {"models"}),
    ("runs", {"runs"}),
    ("training", {"training"}),
    ("prompts", {"prompts"}),
    ("shapes", {"shapes"}),
    ("eval", {"eval"}),
    ("cli", {"cli", "__main__"}),
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST, runtime_only: bool):
    """``ast.walk``, leaving out ``if TYPE_CHECKING:`` blocks when ``runtime_only``."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if runtime_only and _is_type_checking_block(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: dict, runtime_only: bool = False) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body (``from x import y``
    counts as importing ``x.y`` when that is a module, else ``x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _walk(ast.parse(path.read_text(encoding="utf-8")), runtime_only):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
                found.update(submodules or [target])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + "."))
    found.discard(name)
    return found


def _graph(runtime_only: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules, runtime_only) for name, path in modules.items()}


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, (_, names) in enumerate(FLOORS):
        if top in names:
            return index
    raise AssertionError(f"{module} is on no floor: add its top-level name to FLOORS (and to the README's layout)")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_import_names_a_module_of_the_package():
    graph = _graph()
    missing = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                     if target not in graph)
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_every_module_is_on_a_floor():
    for module in _graph():
        _floor(module)


def test_no_import_runs_up_a_floor():
    graph = _graph()
    upward = sorted(
        f"{source} ({FLOORS[_floor(source)][0]}) -> {target} ({FLOORS[_floor(target)][0]})"
        for source, targets in graph.items()
        for target in targets
        if target in graph and _floor(target) > _floor(source)
    )
    assert not upward, "imports that run against the floors:\n" + "\n".join(upward)


def test_no_import_cycles():
    assert _cycles(_graph(runtime_only=True)) == []


def test_the_checks_see_function_level_imports_and_cycles():
    # The graph must count an import inside a function, and the cycle finder must report a circle.
    graph = _graph()
    assert f"{PACKAGE}.models.tiny" in graph[f"{PACKAGE}.models.loading"]  # imported inside load_pipeline
    # An annotation-only import counts for the floors, not for circles.
    method = f"{PACKAGE}.training.method"
    assert f"{PACKAGE}.training.trainer" in graph[method]
    assert f"{PACKAGE}.training.trainer" not in _graph(runtime_only=True)[method]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
