"""The package's layers: each imports only the layers below it, and no
modules of one package import each other in a cycle.

Every module under ``carsim/`` is parsed (not imported) and every import of
a ``carsim`` module is collected, including imports inside functions: an
import that runs only when a command runs still ties the layers together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "carsim"

# Lowest first; a layer may import itself and the layers before it.
LAYERS = [
    ("base", ("carsim", "carsim._units", "carsim._limits", "carsim._io", "carsim.errors")),
    ("scenario", ("carsim.scenario",)),
    ("model", ("carsim.model",)),
    ("experiment", ("carsim.experiment",)),
    ("analysis", ("carsim.analysis",)),
    ("calibration", ("carsim.calibration",)),
    ("cli", ("carsim.cli", "carsim.__main__")),
    ("api", ("carsim.api",)),
]

# Imports against the layering that this package keeps on purpose, as
# (importing module, imported module): the package's lazy attributes
# (carsim.run, carsim.load, ...) import the API on first use, never on
# ``import carsim`` (test_import_carsim_is_cheap checks it).
ALLOWED: set[tuple[str, str]] = {("carsim", "carsim.api")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every ``carsim`` module name the file imports (anywhere in it), as written:
    ``from package import module`` names the module, ``from module import name`` the module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == "carsim" or t.startswith("carsim."))
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The carsim modules ``name`` imports (anywhere in the file), except itself."""
    return {target for target in imported_names(name, path, known) if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(module: str) -> int:
    for rank, (_label, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "carsim" and module.startswith(prefix + ".")):
                return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


def package_of(module: str) -> str:
    return LAYERS[layer_of(module)][0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_parser_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "carsim.errors" in graph["carsim.cli"]  # from .errors import CarsimError
    assert "carsim.scenario" in graph["carsim.cli"]  # from .scenario import load_scenario, in a function
    assert "carsim.experiment.metrics" in graph["carsim.experiment.evaluate"]


def test_every_import_names_an_existing_module():
    """A wrong relative import inside a function fails only when that code runs: catch it here."""
    known = modules()
    missing = [f"{name} imports {target}" for name, path in known.items()
               for target in sorted(imported_names(name, path, known)) if target not in known]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_every_module_belongs_to_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_package_imports_a_layer_above_it():
    violations = []
    for module, imported in import_graph().items():
        for target in imported:
            if layer_of(target) > layer_of(module) and (module, target) not in ALLOWED:
                violations.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                                  f"({LAYERS[layer_of(target)][0]})")
    assert not violations, "imports against the layering:\n" + "\n".join(sorted(violations))


def test_no_import_cycle_within_a_package():
    graph = import_graph()
    found = []
    for package in sorted({package_of(m) for m in graph}):
        members = {m for m in graph if package_of(m) == package}
        within = {m: {t for t in graph[m] if t in members and (m, t) not in ALLOWED} for m in members}
        found += [" -> ".join(cycle) for cycle in cycles(within)]
    assert not found, "import cycles between modules of one package:\n" + "\n".join(found)


def test_import_carsim_is_cheap():
    """``import carsim`` loads neither the API nor the libraries it needs."""
    import subprocess
    import sys

    code = ("import sys, carsim; heavy = [m for m in ('carsim.api', 'carsim.cli', 'numpy', 'pandas', 'matplotlib', "
            "'pydantic') if m in sys.modules]; print(heavy); carsim.read_results; "
            "print('carsim.api' in sys.modules, 'pandas' in sys.modules)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.split("\n")[:2] == ["[]", "True False"]
