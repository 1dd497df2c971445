"""The floors of the house (docs/ARCHITECTURE.md), checked on the source: every `import` under toolkit/
(at the top of a module or inside a function, since a lazy import is still a dependency) goes to the
same floor or one below, siblings on the domain floor do not import one another, nothing imports in a
circle, nobody imports another package's private names, and no module grows past 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"

# module-name prefix -> floor; the longest matching prefix wins
FLOORS = {
    "toolkit": 0,  # the package itself (__version__) and the leaves below
    "toolkit.errors": 0,
    "toolkit.units": 0,
    "toolkit.console": 0,
    "toolkit.atomic": 0,
    "toolkit.glossary": 0,
    "toolkit.resources": 0,
    "toolkit.nvml": 0,
    "toolkit.catalog": 0,
    "toolkit.detect": 0,
    "toolkit.history": 0,
    "toolkit.bench": 1,
    "toolkit.health": 1,
    "toolkit.provision": 1,
    "toolkit.fleet": 2,
    "toolkit.report": 2,
    "toolkit.commands": 3,
    "toolkit.cli": 4,
    "toolkit.__main__": 4,
}
FLOOR_NAMES = ("leaves", "domain", "orchestration", "commands", "cli")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of a toolkit module in `path`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # `from toolkit.bench import report` imports the module toolkit.bench.report
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if submodules:
                found += [(s, [], node.lineno) for s in submodules]
            taken = [n for n in names if f"{target}.{n}" not in MODULES]
            if target in MODULES and taken:
                found.append((target, taken, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name in MODULES]
    return found


def floor(module: str) -> int:
    prefix = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[prefix]


def domain(module: str) -> str:
    """The sibling a domain module belongs to: bench, health or provision."""
    return module.split(".")[1]


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_is_on_a_floor():
    assert all(floor(m) in range(len(FLOOR_NAMES)) for m in MODULES)


def test_no_import_runs_up_a_floor_or_across_the_domain():
    wrong = []
    for module, imports in GRAPH.items():
        for target, _, line in imports:
            if target == "toolkit":
                continue  # the package's own __init__ (the version) is below everything
            up = floor(target) > floor(module)
            across = floor(module) == floor(target) == 1 and domain(module) != domain(target)
            if up or across:
                where = f"{module}:{line} -> {target}"
                wrong.append(f"{where} ({FLOOR_NAMES[floor(module)]} -> {FLOOR_NAMES[floor(target)]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    edges = {m: {t for t, _, _ in imports if t != m} for m, imports in GRAPH.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_imported_from_another_package():
    wrong = [
        f"{module}:{line} imports {name} from {target}"
        for module, imports in GRAPH.items()
        for target, names, line in imports
        for name in names
        if name.startswith("_")
        and not name.endswith("__")  # __version__ is public
        and target.rpartition(".")[0] != module.rpartition(".")[0]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (split it by what it does)"


def test_the_checks_see_a_wrong_import(tmp_path):
    """The checker itself: an upward and a circular import written into a scratch copy are caught."""
    fake = {"toolkit.bench.x": [("toolkit.fleet.bench", [], 1)], "toolkit.fleet.bench": []}
    assert floor("toolkit.bench.x") == 1 and floor("toolkit.fleet.bench") == 2
    up = [(m, t) for m, imps in fake.items() for t, _, _ in imps if floor(t) > floor(m)]
    assert up == [("toolkit.bench.x", "toolkit.fleet.bench")]
    scratch = tmp_path / "m.py"
    scratch.write_text("from toolkit.bench import _hidden\nfrom toolkit.bench.request import BenchRequest\n")
    found = _imports("toolkit.health.y", scratch)
    assert ("toolkit.bench", ["_hidden"], 1) in found
    assert ("toolkit.bench.request", ["BenchRequest"], 2) in found
