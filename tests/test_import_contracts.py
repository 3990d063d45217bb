"""The import structure: layers call down, and no import cycle anywhere.

The contracts themselves are in pyproject.toml ([tool.importlinter]); the cycle check counts the
imports inside functions too, so a cycle cannot be hidden by moving an import into a function.
"""
from __future__ import annotations

from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fhirserver", "smart_auth", "portal", "dicom", "console", "conformance")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    members = set(cycle)
    lines = []
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for d in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"  {importer}:{d['line_number']}  {d['line_contents']}")
    return "\n".join(lines)


def test_import_contracts_hold() -> None:
    """api -> operations -> interactions -> access -> search -> storage -> model -> errors, no Flask
    below api, conformance and the other packages only through their APIs (see the report above
    the failure for the import chain that breaks one)."""
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n\n".join(_describe(graph, c) for c in cycles)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """An import moved into a function still closes a cycle: grimp's graph holds it."""
    pkg = tmp_path / "hidden_cycle"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from hidden_cycle import high\n    return high\n")
    (pkg / "high.py").write_text("from hidden_cycle import low\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("hidden_cycle", cache_dir=None)
    assert _cycles(graph) == [["hidden_cycle.high", "hidden_cycle.low"]]
    assert "from hidden_cycle import high" in _describe(graph, _cycles(graph)[0])


def test_the_cycle_finder_finds_a_cycle() -> None:
    class Graph:
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m: str) -> set[str]:
            return self.edges[m]

    assert _cycles(Graph()) == [["a", "b", "c"]]  # type: ignore[arg-type]

