"""The import structure: layers call down, and no import cycle anywhere.

The contracts themselves are in pyproject.toml ([tool.importlinter]); the cycle check counts the
imports inside functions too, so a cycle cannot be hidden by moving an import into a function.

Each package's `__init__.py` is its API: another package imports its names from there, never from
one of its modules (the units are the top-level packages and fhirserver's subpackages).
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fhirserver", "smart_auth", "portal", "dicom", "console", "conformance")


NESTED = frozenset({"fhirserver"})  # its subpackages are the units; the other top-level packages are units

# Imports of a module of another unit that are allowed, (importer, imported module), each with why.
WIRING = {
    # The app factory wires each package's blueprint or job module into the app.
    ("fhirserver.app", "dicom.web"),
    ("fhirserver.app", "fhirserver.api.health"),
    ("fhirserver.app", "fhirserver.api.openapi"),
    ("fhirserver.app", "fhirserver.operations.export"),
    # The operations registry wires the Subscriptions package's $status/$events handlers the same way.
    ("fhirserver.operations", "fhirserver.subscriptions.operations"),
    # CLI entry points: each package adds its own commands, imported when the CLI runs so that neither
    # `fhirserver --help` nor `import dicom` loads the other package.
    ("fhirserver.cli", "dicom.cli"),
    ("fhirserver.cli", "smart_auth.cli"),
    # The HTTP face of $export (kick-off, status polling, file download) is the Flask adapter of that
    # operation's job module: its states, manifest and files are one concept with two sides.
    ("fhirserver.api.export", "fhirserver.operations.export"),
}


def _unit(module: str, nested: frozenset[str] = NESTED) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in nested else parts[0]


def _is_exported_name(graph: grimp.ImportGraph, importer: str, imported: str) -> bool:
    """`from fhirserver.interactions import reindex` names the package's `reindex` function, but grimp reads
    it as the module fhirserver.interactions.reindex (a module of that name exists): it is the API when the package
    exports that name as something other than the module and every such import goes through the package."""
    package, _, name = imported.rpartition(".")
    api = importlib.import_module(package)
    if name not in getattr(api, "__all__", ()) or inspect.ismodule(getattr(api, name, None)):
        return False
    details = graph.get_import_details(importer=importer, imported=imported)
    return bool(details) and all(d["line_contents"].strip().startswith(f"from {package} import ") for d in details)


def _cross_unit_imports(graph: grimp.ImportGraph, nested: frozenset[str] = NESTED) -> set[tuple[str, str]]:
    """(importer, imported) where the importer imports a module inside another unit (not its package)."""
    found = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            unit = _unit(imported, nested)
            if _unit(importer, nested) == unit or imported == unit:
                continue
            if imported.rpartition(".")[0] == unit and _is_exported_name(graph, importer, imported):
                continue
            found.add((importer, imported))
    return found


def _describe_imports(graph: grimp.ImportGraph, pairs: set[tuple[str, str]]) -> str:
    return "\n".join(f"  {importer}:{d['line_number']}  {d['line_contents']}"
                     for importer, imported in sorted(pairs)
                     for d in graph.get_import_details(importer=importer, imported=imported))


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



def test_other_packages_import_only_a_package_api() -> None:
    """A name another unit uses is exported by its package's `__init__.py` (explicit import and
    `__all__`) and imported from there, so a module can be split or renamed without touching its callers."""
    graph = _graph()
    found = _cross_unit_imports(graph)
    new = found - WIRING
    assert not new, ("import the name from the package (add it to the package's __init__.py and __all__), "
                     "not from its module:\n" + _describe_imports(graph, new))
    stale = WIRING - found
    assert not stale, f"allowed imports that no longer happen (remove them from WIRING): {sorted(stale)}"


def test_the_package_api_check_sees_a_module_import_even_inside_a_function(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A module of another unit imported inside a function, or as a namespace, is found; its package's
    exported names (even one named like a module, `from shop.model import prices`) are not."""
    def write(path: str, text: str = "") -> None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)

    write("shop/__init__.py")
    write("shop/model/__init__.py", "from shop.model.prices import prices\nfrom shop.model.tax import rate\n"
                                    "__all__ = ['prices', 'rate']\n")
    write("shop/model/prices.py", "def prices():\n    return {}\n")
    write("shop/model/tax.py", "rate = 0.2\n")
    write("shop/api/__init__.py")
    write("shop/api/views.py", "from shop.model import prices, rate\n\n"
                               "def total():\n    from shop.model.tax import rate\n    return rate\n")
    write("till/__init__.py")
    write("till/scan.py", "from shop.model import tax\nfrom shop.model.prices import prices\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("shop", "till", cache_dir=None)
    assert _cross_unit_imports(graph, frozenset({"shop"})) == {
        ("shop.api.views", "shop.model.tax"), ("till.scan", "shop.model.tax"), ("till.scan", "shop.model.prices")}
