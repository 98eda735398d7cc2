"""The engine's layout stays readable: no import cycles (lazy imports inside functions count), small files.

A cycle hidden in a function is still a cycle: it makes the import order matter and
the layers meaningless. Checked on the source with ``ast``, so it costs nothing.
"""

import ast
from pathlib import Path
from typing import Dict, List, Set

LIB = Path(__file__).resolve().parents[1] / "TransferSegLib"
ROOT = LIB.parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Module → the TransferSegLib modules it imports anywhere in its file (package imports resolved to modules)."""
    modules = {_module(p): p for p in LIB.rglob("*.py")}
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_among_the_engine_modules():
    graph = import_graph()
    assert len(graph) > 60 and graph["TransferSegLib.models.resolve"]  # the walk sees the engine
    assert cycles(graph) == []


def test_the_contract_layer_imports_nothing_heavy_from_the_engine():
    graph = import_graph()
    for module in ("TransferSegLib.specs", "TransferSegLib.model_card", "TransferSegLib.paths"):
        reachable, todo = set(), [module]
        while todo:
            for dep in graph[todo.pop()] - reachable:
                reachable.add(dep)
                todo.append(dep)
        heavy = sorted(m for m in reachable if m.split(".")[1] in ("training", "inference", "jobs", "scene", "models"))
        assert not heavy, f"{module} reaches {heavy}"


def test_engine_files_stay_small_and_the_top_level_short():
    big = {str(p.relative_to(ROOT)): n for p in LIB.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not big, f"files over 400 lines (split them by concept): {big}"
    assert len([p for p in LIB.iterdir() if p.is_file() and p.suffix == ".py"]) <= 12
