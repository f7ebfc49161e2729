"""Every labkit module imports on its own, and the package has no import cycle.

A cycle (config -> maskgit -> transformer -> config, say) works only as long as the modules
happen to be imported in a lucky order; lazy imports inside functions hide it. So the test
reads every module's imports, at the top and inside functions, and checks that the graph of
labkit modules importing each other has no cycle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labkit"
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def labkit_imports(module: str) -> set[str]:
    """The labkit modules that ``labkit/<module>.py`` imports anywhere in its code."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:                 # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:                               # from . import x, y
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and (node.module or "").startswith("labkit."):
                found.add(node.module.split(".")[1])
            elif node.module == "labkit":
                found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("labkit."))
    return found & set(MODULES)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_labkit_has_no_import_cycle_counting_lazy_imports():
    graph = {module: labkit_imports(module) for module in MODULES}
    assert graph["maskgit"] >= {"config", "schedules"}           # the reader sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_schedules_is_a_leaf_and_config_does_not_need_the_models():
    assert labkit_imports("schedules") == set()
    assert labkit_imports("config") == {"schedules"}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import labkit.{module}"], capture_output=True,
                          text=True, cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
