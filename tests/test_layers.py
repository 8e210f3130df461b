"""Import layering: every module imports only its own layer or lower ones, modules form no
import cycles, and a fresh interpreter imports every module in topological order.

Imports inside functions (deferred imports) count: ``grimp`` reads every import statement of a
module, wherever it stands.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

grimp = pytest.importorskip("grimp", reason="grimp is in the dev extra: pip install -e .[dev]")

PACKAGE = "recbackdoor"
# low to high; a module may import modules of its own layer and of lower layers only
LAYERS = (
    ("errors", "io_utils"),
    ("data",),
    ("attack",),
    ("models",),
    ("victims",),
    ("eval",),
    ("defense",),
    ("experiments",),
    ("cli", "__main__"),
)
NOT_IMPORTABLE = {f"{PACKAGE}.__main__"}  # runs the CLI when imported


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE, cache_dir=None)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the package's own __init__ (imports nothing)
    for level, names in enumerate(LAYERS):
        if parts[1] in names:
            return level
    raise AssertionError(f"{module} is in no layer; add its top-level name to LAYERS")


def _edges(graph) -> dict[str, set[str]]:
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}


def _cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    out.append(frozenset(component))
    return out


def _topological(edges: dict[str, set[str]]) -> list[str]:
    """Modules with everything they import first."""
    deps = {m: {d for d in imported if d != m} for m, imported in edges.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = sorted(m for m, d in deps.items() if m not in done and d <= done)
        assert ready, f"import cycle among {sorted(set(deps) - done)}"
        order.extend(ready)
        done.update(ready)
    return order


def test_no_module_imports_a_higher_layer(graph):
    wrong = []
    for importer, imported in _edges(graph).items():
        for target in imported:
            if _layer(target) > _layer(importer):
                lines = graph.get_import_details(importer=importer, imported=target)
                where = ", ".join(f"line {d['line_number']}" for d in lines)
                wrong.append(f"{importer} imports {target} ({where})")
    assert not wrong, "imports of a higher layer:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles(graph):
    cycles = [sorted(c) for c in _cycles(_edges(graph))]
    assert not cycles, f"import cycles between modules: {cycles}"


def test_every_module_imports_in_a_fresh_interpreter(graph):
    order = [m for m in _topological(_edges(graph)) if m not in NOT_IMPORTABLE]
    assert f"{PACKAGE}.data.prepare" in order and f"{PACKAGE}.cli" in order
    code = f"import importlib\nfor name in {order!r}:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
