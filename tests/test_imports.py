"""The package's architecture, checked: no import cycle, and the lesson (``labkit/core/``) imports
nothing of labkit but itself and the config, and nothing outside torch, NumPy and the standard
library. Every module imports on its own.

A cycle (config -> maskgit -> transformer -> config, say) works only as long as the modules
happen to be imported in a lucky order; lazy imports inside functions hide it. So the test
reads every module's imports, at the top and inside functions.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labkit"


def module_name(path: Path) -> str:
    """labkit/core/maskgit.py -> "core.maskgit"; labkit/core/__init__.py -> "core"."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


FILES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
MODULES = sorted(name for name in FILES if name not in ("__init__", "__main__"))   # __main__ runs the CLI


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute labkit module (without "labkit.") a relative import refers to."""
    package = module.split(".") if FILES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> tuple[set[str], set[str]]:
    """(labkit modules, other top-level packages) that ``module`` imports anywhere in its code."""
    tree = ast.parse(FILES[module].read_text())
    found, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = resolve(module, node)
            elif (node.module or "").split(".")[0] == "labkit":
                target = node.module[len("labkit."):] if node.module != "labkit" else "__init__"
            else:
                outside.add(node.module.split(".")[0])
                continue
            # "from . import distributed" names modules; "from .x import y" names one module
            named = {f"{target}.{alias.name}".lstrip(".") for alias in node.names}
            found |= (named & set(FILES)) or {target or "__init__"}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "labkit":
                    found.add(alias.name[len("labkit."):] or "__init__")
                else:
                    outside.add(alias.name.split(".")[0])
    return found & set(FILES), outside


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for child in sorted(graph.get(node, ())):
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


def test_the_import_reader_resolves_relative_imports():
    assert imports("core.maskgit")[0] >= {"config", "core.schedules", "core.transformer"}
    assert "lab.distributed" in imports("lab.run")[0]               # from . import distributed


def test_labkit_has_no_import_cycle_counting_lazy_imports():
    graph = {module: imports(module)[0] - {module} for module in FILES}
    graph["__init__"] = set()     # the package exports names; the modules never import it back
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


CORE = [module for module in MODULES if module.split(".")[0] == "core"]
STANDARD = set(sys.stdlib_module_names)


@pytest.mark.parametrize("module", CORE)
def test_the_lesson_imports_only_the_lesson_and_the_config(module):
    inside, outside = imports(module)
    assert inside <= set(CORE) | {"config", "core"}, (
        f"labkit/{module.replace('.', '/')}.py imports {sorted(inside - set(CORE) - {'config'})}: "
        "the core reaches plumbing, data and evaluation only as calls made from outside it")
    assert outside <= STANDARD | {"torch", "numpy", "__future__"}, sorted(outside - STANDARD)


def test_the_lesson_is_the_size_of_mingpt():
    """The whole method (conditioning and generation included) in about 1,300 lines; the checks
    of its inputs (core/checks.py) are not the lesson and are left out of the count."""
    lines = sum(len(FILES[module].read_text().splitlines()) for module in CORE if module != "core.checks")
    assert lines <= 1350, f"labkit/core/ holds {lines} lines of the method: it should stay readable in a sitting"


def test_schedules_is_a_leaf_and_config_does_not_need_the_models():
    assert imports("core.schedules")[0] == set()
    assert imports("config")[0] == {"core.schedules"}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import labkit.{module}"], capture_output=True,
                          text=True, cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


MAX_PARAMETERS = 8


def public_signatures():
    """(where, name, parameter count) of every public function, method and constructor."""
    for module, path in FILES.items():
        tree = ast.parse(path.read_text())
        scopes = [(node, "") for node in tree.body]
        scopes += [(item, f"{node.name}.") for node in tree.body
                   if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
                   for item in node.body]
        for node, owner in scopes:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("_") and node.name != "__init__":
                continue
            args = node.args
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            if owner and names and names[0] in ("self", "cls"):
                names = names[1:]
            yield f"labkit/{path.relative_to(PACKAGE).as_posix()}", owner + node.name, len(names)


def test_public_signatures_stay_short():
    """At most about eight parameters: the config or a small settings object carries the rest."""
    long = [f"{where}: {name} takes {count}" for where, name, count in public_signatures()
            if count > MAX_PARAMETERS]
    assert not long, "\n".join(long)
