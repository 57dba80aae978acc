"""House rules of ``src/bruno_memstore``, checked on the syntax tree of every module:

* **No import cycle.** Imports under ``if TYPE_CHECKING:`` are left out (they never run);
  imports inside functions count (they run, only later).
* **No module reaches into another module's private names**: ``module._name``,
  ``from module import _name``, ``obj._name`` and ``getattr(obj, "_name")`` on an object
  that is not ``self``/``cls``/``super()``. An object's private name is fine where the module
  owns the name: it defines it, and no module it imports (directly or not) defines it too.
  Besides ``namedtuple``'s API, the one exception is the protected surface of a backend
  (its primitives and :data:`PROTECTED`), open to the backends built over other backends
  and to the suite that checks the vector primitive's contract (:data:`COMBINATORS`).

Each failure lists every violation as ``path:line``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "bruno_memstore"

COMBINATORS = (
    f"{PACKAGE}.backends.",
    f"{PACKAGE}.testing.suite.vector_filters",
    f"{PACKAGE}.testing.suite.conditional_writes",
)
"""Where a module may use another backend's protected surface: a backend built over other
backends (``HybridMemory``) implements its primitives with theirs, and the two suites that
check a primitive's own contract, which no public call can isolate (``_vector_search``
filters inside the engine's query; ``_replace_session`` writes only over what it expects).
Tools (``copy``, the CLI) and the other shipped tests use the public API."""

PROTECTED: dict[str, str] = {
    "_run": "MemoryBackend: a tier's primitive runs through the tier's own choke point "
    "(connect, timeout, retry, metrics and error mapping are the tier's)",
    "_redact": "MemoryBackend hook: a combinator's messages carry its tiers' secrets",
}
"""The protected surface of a backend besides its primitives (every method of
``StoragePrimitives``, ``VectorPrimitives`` and ``MessagePruning``, each with its contract
in ``primitives.py``): members documented on ``MemoryBackend`` that a combinator calls on
its tiers, and why."""

SURFACE = {f"{PACKAGE}.primitives": ("StoragePrimitives", "VectorPrimitives", "MessagePruning")}
HOOKS = {f"{PACKAGE}.base": ("MemoryBackend",)}

STDLIB_PUBLIC = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})
"""``namedtuple``'s documented API, underscored so as not to clash with field names."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class Module:
    name: str  # dotted
    path: Path
    tree: ast.Module
    is_package: bool
    imports: list[tuple[str, int]] = field(default_factory=list)  # (module, line), run-time
    typing_imports: list[tuple[str, int]] = field(default_factory=list)  # TYPE_CHECKING only
    defines: set[str] = field(default_factory=set)  # private names defined here

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def where(self, line: int) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{line}"


def _load() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        modules[name] = Module(name, path, tree, is_package)
    for module in modules.values():
        _collect_imports(module, modules)
        module.defines = set(_defined_names(module.tree))
    return modules


# ==================================================================== imports


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST, typing_only: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement under ``node``, with whether it runs only for type checkers."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, typing_only
    elif isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _import_nodes(stmt, True)
        for stmt in node.orelse:
            yield from _import_nodes(stmt, typing_only)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _import_nodes(child, typing_only)


def _base_of(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.package.split(".")
    if node.level > 1:
        parts = parts[: -(node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def _targets(module: Module, node: ast.stmt, modules: dict[str, Module]) -> Iterator[str]:
    """The package's modules an import statement runs."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                yield alias.name
        return
    assert isinstance(node, ast.ImportFrom)
    base = _base_of(module, node)
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            yield sub
        elif base in modules:
            yield base


def _collect_imports(module: Module, modules: dict[str, Module]) -> None:
    for node, typing_only in _import_nodes(module.tree):
        for target in _targets(module, node, modules):
            if target == module.name:
                continue
            into = module.typing_imports if typing_only else module.imports
            into.append((target, node.lineno))


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target, _line in modules[name].imports:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return groups


def _reachable(modules: dict[str, Module], start: str) -> set[str]:
    """Modules ``start`` imports, directly or not (type-checking imports included)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        current = modules[todo.pop()]
        for target, _line in [*current.imports, *current.typing_imports]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    seen.discard(start)
    return seen


# ==================================================================== private names


def _documented(modules: dict[str, Module], where: dict[str, tuple[str, ...]]) -> set[str]:
    """Private methods with a docstring in the given classes."""
    names = set()
    for module_name, classes in where.items():
        for node in modules[module_name].tree.body:
            if isinstance(node, ast.ClassDef) and node.name in classes:
                names |= {
                    item.name
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and _is_private(item.name)
                    and ast.get_docstring(item)
                }
    return names


def _defined_names(tree: ast.Module) -> Iterator[str]:
    """Private names a module defines: functions, classes, methods, class and module
    attributes, attributes set on ``self``/``cls``, ``__slots__`` entries."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                yield node.attr
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield node.id
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            for const in ast.walk(node.value):
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    yield const.value


def _own_object(node: ast.expr) -> bool:
    """``self``, ``cls``, ``super()``, ``type(self)``, ``self.__class__``."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "super":
            return True
        if node.func.id == "type" and len(node.args) == 1:
            return _own_object(node.args[0])
    if isinstance(node, ast.Attribute) and node.attr == "__class__":
        return _own_object(node.value)
    return False


def _module_aliases(module: Module, modules: dict[str, Module]) -> dict[str, str]:
    """Local names bound to one of the package's modules."""
    aliases: dict[str, str] = {}
    for node, _typing in _import_nodes(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _base_of(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def _private_accesses(
    module: Module, modules: dict[str, Module], protected: frozenset[str] = frozenset()
) -> Iterator[str]:
    aliases = _module_aliases(module, modules)
    foreign: set[str] = set()
    for other in _reachable(modules, module.name):
        foreign |= modules[other].defines
    if not module.name.startswith(COMBINATORS):
        protected = frozenset()

    def owned(name: str) -> bool:
        return (name in module.defines and name not in foreign) or name in protected

    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            base = _base_of(module, node)
            for alias in node.names:
                if not _is_private(alias.name):
                    continue
                sub = f"{base}.{alias.name}"
                if sub in modules and module.name.startswith(base + "."):
                    continue  # a private module of the importer's own package
                yield f"{module.where(node.lineno)}: imports {alias.name} from {base}"
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            name, value = node.attr, node.value
            if _own_object(value) or name in STDLIB_PUBLIC:
                continue
            if isinstance(value, ast.Name) and value.id in aliases:
                target = aliases[value.id]
                if f"{target}.{name}" in modules and module.name.startswith(target + "."):
                    continue
                yield f"{module.where(node.lineno)}: uses {target}.{name}"
            elif not owned(name):
                yield f"{module.where(node.lineno)}: uses {ast.unparse(value)}.{name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and not _own_object(node.args[0])
        ):
            name = node.args[1].value
            if not owned(name):
                yield (
                    f"{module.where(node.lineno)}: {node.func.id}"
                    f"({ast.unparse(node.args[0])}, {name!r})"
                )


# ==================================================================== tests


def _by_line(problem: str) -> int:
    return int(problem.split(":", 2)[1])


MODULES = _load()


def test_the_package_is_found() -> None:
    assert f"{PACKAGE}.base" in MODULES and len(MODULES) > 20


def test_no_import_cycle() -> None:
    problems = []
    for group in _cycles(MODULES):
        members = set(group)
        edges = [
            f"  {MODULES[name].where(line)}: {name} imports {target}"
            for name in group
            for target, line in MODULES[name].imports
            if target in members
        ]
        problems.append("cycle among " + ", ".join(group) + ":\n" + "\n".join(edges))
    assert not problems, "\n".join(problems)


def test_the_protected_surface_is_documented() -> None:
    primitives = _documented(MODULES, SURFACE)
    assert {"_append_messages", "_read_window", "_export"} <= primitives
    assert set(PROTECTED) <= _documented(MODULES, HOOKS), "document each on MemoryBackend"


def test_no_module_uses_another_modules_private_names() -> None:
    protected = frozenset(_documented(MODULES, SURFACE) | set(PROTECTED))
    problems = [
        problem
        for name in sorted(MODULES)
        for problem in sorted(_private_accesses(MODULES[name], MODULES, protected), key=_by_line)
    ]
    assert not problems, f"{len(problems)} private names used across modules:\n" + "\n".join(
        problems
    )


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    source = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\nfrom .b import _hidden\nb._hidden()\n",
        "pkg/b.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from . import a\n"
            "def f():\n    from . import c\n"
            "def _hidden():\n    pass\n"
        ),
        "pkg/c.py": (
            "from . import b\n"
            "class C:\n"
            "    def __init__(self, other):\n        self._mine = other\n"
            "    def g(self, other):\n"
            "        return other._mine, other._elsewhere, getattr(other, '_x'), self._y\n"
        ),
    }
    for rel, text in source.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = {}
    for rel in source:
        parts = rel[:-3].split("/")
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, ROOT / rel, ast.parse(source[rel]), is_package)
    for module in modules.values():
        _collect_imports(module, modules)
        module.defines = set(_defined_names(module.tree))
    # b -> c (a function-level import) and c -> b; a -> b is no cycle (b imports a only for
    # type checkers).
    assert _cycles(modules) == [["pkg.b", "pkg.c"]]
    found = [p.split(": ", 1)[1] for m in modules.values() for p in _private_accesses(m, modules)]
    assert sorted(found) == sorted(
        [
            "imports _hidden from pkg.b",
            "uses pkg.b._hidden",
            "uses other._elsewhere",
            "getattr(other, '_x')",
        ]
    )
