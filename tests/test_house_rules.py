"""House rules checked on the source (with `ast`, nothing imported), so they stay true:

1. Settings are read in one place. `os.environ` / `os.getenv` are read only in
   fhirserver/config.py (the `Settings` object), except the reads in `ENV_READS_ALLOWED`, each
   with its reason. Writing a variable (for child processes) is not reading it.
2. No module-level mutable state. A name bound at module level to a mutable value (a dict, list
   or set literal or comprehension, or a call of `dict`, `list`, `set`, `collections.*`, ...)
   is a constant: it is spelled UPPER_CASE and is never mutated (item assignment or deletion,
   augmented assignment, `.append/.update/.add/.setdefault/...`) in any module, its own or one
   that imports it. Locks, thread-locals and counters at module level are state whatever their
   name. No `global` statement anywhere.
3. No per-app cache at module level. `functools.cache` / `lru_cache` memoise pure functions of
   immutable inputs (schema tables, statements per dialect); a cached function that takes an
   engine, a connection, an app, its services or `self` would keep one app's (or database's)
   objects alive in a process-wide table and hand them to another: such a cache belongs on the
   owning object (see `fhirserver.services.Services`).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fhirserver", "smart_auth", "portal", "dicom", "console", "conformance")
SETTINGS_MODULE = "fhirserver/config.py"

# (module path, variable) -> why this read cannot go through Settings
ENV_READS_ALLOWED: dict[tuple[str, str], str] = {
    ("fhirserver/metrics.py", "PROMETHEUS_MULTIPROC_DIR"):
        "prometheus_client reads this variable itself (in every process `serve` forks or starts) "
        "to pick its multiprocess mode; /metrics and the dead-worker cleanup must follow the same "
        "variable to agree with the library",
}

_CONSTANT_NAME = re.compile(r"_*[A-Z][A-Z0-9_]*$")
_MUTABLE_FACTORIES = {
    "dict", "list", "set", "bytearray", "defaultdict", "OrderedDict", "Counter", "deque", "ChainMap",
    "WeakValueDictionary", "WeakKeyDictionary", "WeakSet", "fromkeys",
}
# state whatever the name: each one exists to be changed by whoever runs
_STATEFUL_FACTORIES = {
    "Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier", "local",
    "Queue", "SimpleQueue", "LifoQueue", "PriorityQueue", "count",
}
_MUTATORS = {
    "append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault", "add",
    "discard", "sort", "reverse", "appendleft", "extendleft", "popleft", "rotate", "difference_update",
    "intersection_update", "symmetric_difference_update", "__setitem__", "__delitem__",
}
_CACHES = {"cache", "lru_cache"}
_STATE_PARAMS = {"self", "cls", "engine", "conn", "connection", "app", "services", "repo", "repository",
                 "tx", "session", "db", "store"}
_STATE_TYPES = re.compile(r"\b(Engine|Connection|Flask|Services|Repository|Tx|Session|BlobStore)\b")


@dataclass
class Module:
    path: str                      # relative to the repository root, with /
    name: str                      # dotted module name
    tree: ast.Module = field(repr=False)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node


def parse(path: str, source: str) -> Module:
    name = path[:-3].replace("/", ".")
    name = name[: -len(".__init__")] if name.endswith(".__init__") else name
    return Module(path, name, ast.parse(source, path))


def package_modules() -> list[Module]:
    out = []
    for pkg in PACKAGES:
        for file in sorted((ROOT / pkg).rglob("*.py")):
            rel = file.relative_to(ROOT).as_posix()
            out.append(parse(rel, file.read_text(encoding="utf-8")))
    return out


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run at import: the body, into if/try/with blocks, not into defs."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(stmt, block, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _module_level(handler.body)


def _string_constants(mod: Module) -> dict[str, str]:
    out = {}
    for stmt in _module_level(mod.tree.body):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            out.update({t.id: stmt.value.value for t in stmt.targets if isinstance(t, ast.Name)})
    return out


def _callee(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


# -- 1. environment reads ---------------------------------------------------------------------
def env_reads(mod: Module) -> list[tuple[int, str]]:
    """(line, variable) of every read of the environment; `?` when the name is computed."""
    os_names = {a.asname or a.name for n in ast.walk(mod.tree) if isinstance(n, ast.Import)
                for a in n.names if a.name == "os"}
    consts = _string_constants(mod)

    def name_of(arg: ast.AST | None) -> str:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name) and arg.id in consts:
            return consts[arg.id]
        return "?"

    out = []
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            out += [(node.lineno, f"? (from os import {a.name})") for a in node.names
                    if a.name in ("environ", "environb", "getenv", "getenvb")]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in os_names):
            continue
        parent = mod.parents.get(node)
        if node.attr in ("getenv", "getenvb") and isinstance(parent, ast.Call):
            out.append((node.lineno, name_of(parent.args[0] if parent.args else None)))
        elif node.attr in ("environ", "environb"):
            if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del)):
                continue  # setting (or removing) a variable for child processes
            if isinstance(parent, ast.Subscript):
                out.append((node.lineno, name_of(parent.slice)))
            elif isinstance(parent, ast.Attribute) and isinstance(mod.parents.get(parent), ast.Call):
                call = mod.parents[parent]
                if parent.attr == "update":
                    continue
                out.append((node.lineno, name_of(call.args[0] if call.args else None)))
            elif isinstance(parent, ast.Compare):
                out.append((node.lineno, name_of(parent.left)))
            else:
                out.append((node.lineno, "? (the whole environment)"))
    return out


def env_violations(modules: list[Module]) -> list[str]:
    return [f"{m.path}:{line}: reads {var} from the environment (put it in fhirserver.config.Settings)"
            for m in modules if m.path != SETTINGS_MODULE
            for line, var in env_reads(m) if (m.path, var) not in ENV_READS_ALLOWED]


# -- 2. module-level mutable state ------------------------------------------------------------
def _mutable_bindings(mod: Module) -> Iterator[tuple[ast.stmt, str, bool]]:
    """(statement, name, stateful) for each module-level name bound to a mutable value."""
    for stmt in _module_level(mod.tree.body):
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        literal = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp))
        callee = _callee(value) if isinstance(value, ast.Call) else None
        if not literal and callee not in _MUTABLE_FACTORIES | _STATEFUL_FACTORIES:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and not (target.id.startswith("__") and target.id.endswith("__")):
                yield stmt, target.id, callee in _STATEFUL_FACTORIES


def _imports(mod: Module, known: set[str]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Local names bound to modules of the packages, and to names imported from them."""
    modules: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in known:
                    modules[a.asname] = a.name
                elif not a.asname:
                    modules.setdefault(a.name.split(".")[0], a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                local = a.asname or a.name
                if f"{node.module}.{a.name}" in known:
                    modules[local] = f"{node.module}.{a.name}"
                else:
                    names[local] = (node.module, a.name)
    return modules, names


def _resolve(expr: ast.AST, mod: Module, modules: dict[str, str],
             names: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The (module, name) an expression such as `X`, `mod.X` or `pkg.mod.X` denotes."""
    if isinstance(expr, ast.Name):
        return names.get(expr.id, (mod.name, expr.id))
    chain = []
    while isinstance(expr, ast.Attribute):
        chain.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name) or expr.id not in modules or not chain:
        return None
    chain.reverse()
    return ".".join([modules[expr.id], *chain[:-1]]), chain[-1]


def _root(expr: ast.AST) -> ast.AST:
    """`X` of `X[k]`, `X[k][j]`: mutating an item of a constant mutates the constant."""
    while isinstance(expr, ast.Subscript):
        expr = expr.value
    return expr


def _mutations(mod: Module) -> Iterator[tuple[int, ast.AST]]:
    """(line, expression mutated in place) anywhere in a module."""
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            yield node.lineno, _root(node.value)
        elif isinstance(node, ast.AugAssign):
            yield node.lineno, _root(node.target)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS:
            yield node.lineno, _root(node.func.value)


def state_violations(modules: list[Module]) -> list[str]:
    out = []
    constants: dict[tuple[str, str], str] = {}
    for m in modules:
        for stmt, name, stateful in _mutable_bindings(m):
            where = f"{m.path}:{stmt.lineno}: {name}"
            if stateful:
                out.append(f"{where} is a module-level {_callee(stmt.value)}() (state shared by the "  # type: ignore[arg-type]
                           "whole process: put it on the object that owns it)")
            elif not _CONSTANT_NAME.match(name):
                out.append(f"{where} is a module-level mutable value not named as a constant (UPPER_CASE)")
            constants[(m.name, name)] = where
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Global):
                out.append(f"{m.path}:{node.lineno}: `global {', '.join(node.names)}` (module-level state)")
    known = {m.name for m in modules}
    for m in modules:
        modules_of, names_of = _imports(m, known)
        for line, expr in _mutations(m):
            target = _resolve(expr, m, modules_of, names_of)
            if target in constants and not _shadowed(m, expr, line):
                out.append(f"{m.path}:{line}: mutates the module-level constant {target[1]} ({constants[target]})")
    return out


def _shadowed(mod: Module, expr: ast.AST, line: int) -> bool:
    """A plain name mutated inside a function that binds the same name locally."""
    if not isinstance(expr, ast.Name):
        return False
    node: ast.AST | None = expr
    while node is not None and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        node = mod.parents.get(node)
    if node is None:
        return False
    args = node.args
    params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
    local = {t.id for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.For, ast.With))
             for t in ast.walk(n) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
    return expr.id in params | local


# -- 3. caches of per-app objects -------------------------------------------------------------
def _is_cache(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
    return name in _CACHES


def cache_violations(modules: list[Module]) -> list[str]:
    out = []
    for m in modules:
        for node in ast.walk(m.tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if not any(_is_cache(d) for d in node.decorator_list):
                continue
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                if arg.arg in _STATE_PARAMS or _STATE_TYPES.search(annotation):
                    out.append(f"{m.path}:{node.lineno}: {node.name}() is cached process-wide but takes "
                               f"`{arg.arg}` (per-app state: keep the cache on its owner)")
                    break
    return out


# -- the rules on the code --------------------------------------------------------------------
@pytest.fixture(scope="module")
def modules() -> list[Module]:
    return package_modules()


def test_settings_only_from_the_settings_object(modules: list[Module]) -> None:
    found = env_violations(modules)
    assert not found, "\n".join(found)


def test_every_allowed_env_read_still_exists(modules: list[Module]) -> None:
    """An allow-list entry whose read went away is removed, so the list stays the real one."""
    reads = {(m.path, var) for m in modules for _, var in env_reads(m)}
    assert set(ENV_READS_ALLOWED) <= reads


def test_no_module_level_mutable_state(modules: list[Module]) -> None:
    found = state_violations(modules)
    assert not found, "\n".join(found)


def test_no_process_wide_cache_of_per_app_objects(modules: list[Module]) -> None:
    found = cache_violations(modules)
    assert not found, "\n".join(found)


# -- the rules on examples (each kind of violation is seen) -----------------------------------
def _one(source: str, path: str = "fhirserver/example.py") -> list[Module]:
    return [parse(path, source)]


@pytest.mark.parametrize("source", [
    "import os\nx = os.environ.get('FHIRSERVER_X')\n",
    "import os\nx = os.environ['FHIRSERVER_X']\n",
    "import os as o\nx = o.getenv('FHIRSERVER_X')\n",
    "import os\nx = 'FHIRSERVER_X' in os.environ\n",
    "import os\nenv = dict(os.environ)\n",
    "from os import environ\n",
    "import os\nNAME = 'PROMETHEUS_MULTIPROC_DIR'\nx = os.environ.get(NAME)\n",
])
def test_env_reads_are_found(source: str) -> None:
    assert env_violations(_one(source))


@pytest.mark.parametrize("source", [
    "import os\nos.environ['FHIRSERVER_LOG_LEVEL'] = 'INFO'\n",
    "import os\ndel os.environ['X']\n",
    "import os\nos.environ.update(X='1')\n",
])
def test_env_writes_are_not_reads(source: str) -> None:
    assert env_violations(_one(source)) == []


def test_env_reads_allowed_by_module_and_name() -> None:
    source = "import os\nNAME = 'PROMETHEUS_MULTIPROC_DIR'\nx = os.environ.get(NAME)\n"
    assert env_violations(_one(source, "fhirserver/metrics.py")) == []
    assert env_violations(_one("import os\nx = os.environ.get('X')\n", SETTINGS_MODULE)) == []


@pytest.mark.parametrize("source", [
    "cache = {}\n",                                             # a mutable value not named as a constant
    "import collections\n_seen = collections.defaultdict(list)\n",
    "import threading\n_LOCK = threading.Lock()\n",             # state whatever its name
    "import threading\nLOCAL = threading.local()\n",
    "SEEN = set()\ndef f(x):\n    SEEN.add(x)\n",
    "TABLE = {}\ndef f(k, v):\n    TABLE[k] = v\n",
    "TABLE = {'a': []}\ndef f(v):\n    TABLE['a'].append(v)\n",
    "ITEMS = []\nITEMS += [1]\n",
    "n = 0\ndef f():\n    global n\n    n += 1\n",
])
def test_module_state_is_found(source: str) -> None:
    assert state_violations(_one(source))


def test_module_state_mutated_from_another_module_is_found() -> None:
    owner = parse("fhirserver/a.py", "TYPES = {'x': 1}\n")
    by_name = parse("fhirserver/b.py", "from fhirserver.a import TYPES\ndef f():\n    TYPES['y'] = 2\n")
    by_module = parse("fhirserver/c.py", "from fhirserver import a\ndef f():\n    a.TYPES.update(y=2)\n")
    assert len(state_violations([owner, by_name])) == 1
    assert len(state_violations([owner, by_module, parse("fhirserver/__init__.py", "")])) == 1


@pytest.mark.parametrize("source", [
    "TYPES = {'a': 1}\nNAMES = ['a', 'b']\nCODES = {'x', 'y'}\n",  # constants
    "__all__ = ['a']\n__all__ += ['b']\n",
    "import re\nimport types\nPATTERN = re.compile('x')\nVIEW = types.MappingProxyType({'a': 1})\n",
    "TYPES = {'a': 1}\ndef f():\n    TYPES = {}\n    TYPES['b'] = 2\n",  # a local of the same name
    "import logging\nlog = logging.getLogger(__name__)\n",
])
def test_constants_are_fine(source: str) -> None:
    assert state_violations(_one(source)) == []


@pytest.mark.parametrize("source", [
    "import functools\n@functools.lru_cache(maxsize=4)\ndef f(engine):\n    pass\n",
    "from functools import cache\n@cache\ndef f(x: 'Connection'):\n    pass\n",
    "import functools\nclass A:\n    @functools.cache\n    def f(self, x):\n        pass\n",
    "import functools\n@functools.cache\ndef f(app, name: str):\n    pass\n",
])
def test_caches_of_per_app_objects_are_found(source: str) -> None:
    assert cache_violations(_one(source))


def test_memo_of_immutable_inputs_is_fine() -> None:
    source = "import functools\n@functools.lru_cache(maxsize=4)\ndef statement(dialect: str):\n    pass\n"
    assert cache_violations(_one(source)) == []
