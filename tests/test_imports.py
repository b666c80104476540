"""The package has no import circle: every module imports alone, and no two import each other.

- each ``mcdpf`` module is imported first in a fresh interpreter (an import order that
  works only because another module was imported before fails here);
- the graph of every ``import`` statement between ``mcdpf`` modules (at module level or
  inside functions, where a circle hides from the first check) has no cycle.
"""

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mcdpf

PACKAGE = Path(mcdpf.__file__).parent
MODULES = sorted(["mcdpf", *(info.name for info in pkgutil.walk_packages(
    [str(PACKAGE)], prefix="mcdpf.") if info.name != "mcdpf.__main__")])


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_alone_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def imported_modules(module: str) -> set[str]:
    """The ``mcdpf`` modules that ``module``'s import statements name (anywhere in it)."""
    spec = importlib.util.find_spec(module)
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found |= {name for name in [base, *(f"{base}.{a.name}" for a in node.names)]
                      if name in MODULES}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
    return found - {module}


def test_no_two_modules_import_each_other_even_lazily():
    graph = {module: imported_modules(module) for module in MODULES}
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
