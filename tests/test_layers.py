"""The import graph of the project's layers, imports inside functions included: no cycle between the packages
and loose modules of tasks/ (each a unit: tasks.iqs, tasks.select, ...), flows/, deployments/ and storage/;
layers point one way (deployments → flows → tasks → storage); nothing below the stage declarations imports
them."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("deployments", "flows", "tasks", "storage")  # each may import only those after it


def unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 1 else parts[0]


def resolve(name: str) -> str | None:
    """The project module an import names (`from tasks.x import y` may name a module or a name in one)."""
    while name:
        path = ROOT / name.replace(".", "/")
        if path.with_suffix(".py").is_file() or path.is_dir():
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    target = resolve(name) if name.split(".")[0] in LAYERS else None
                    if target is not None and unit(target) != unit(module):
                        graph.setdefault(unit(module), set()).add(unit(target))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_units():
    assert cycles(import_graph()) == []


def test_layers_point_one_way():
    wrong = [(src, dst) for src, targets in import_graph().items() for dst in targets
             if LAYERS.index(dst.split(".")[0]) < LAYERS.index(src.split(".")[0])]
    assert wrong == []


def test_nothing_below_the_stage_declarations_imports_them():
    importers = sorted(src for src, targets in import_graph().items()
                       if "tasks.stages" in targets and src.startswith(("tasks", "storage")))
    assert importers == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "tasks.evaluate" in graph["tasks.scorers"]  # ifd imports the loss machinery inside a function
    assert "flows" in graph["deployments"] and "deployments" not in graph["flows"]  # serve: an entry point
