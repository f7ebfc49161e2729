"""Packaging: the library's own dependencies, the lab and test extras, one list for conda."""

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}


def environment_pip_list() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    items = []
    for line in lines[start + 1:]:
        match = re.match(r"^\s{6,}-\s+(.*)$", line)
        if not match:
            break
        items.append(match.group(1).strip())
    return items


def test_environment_yml_installs_the_project_with_its_extras_and_nothing_else():
    assert environment_pip_list() == ["-e .[lab,test]"]


def test_runtime_dependencies_are_only_what_the_library_needs():
    assert names(PROJECT["dependencies"]) == {
        "torch", "torchvision", "numpy", "scipy", "pillow", "matplotlib", "tqdm", "safetensors",
        "pytorch-fid"}
    extras = PROJECT["optional-dependencies"]
    assert names(extras["lab"]) == {"jupyterlab", "ipykernel", "ipywidgets", "ipycanvas", "nbformat", "nbclient",
                                    "papermill"}
    assert names(extras["test"]) == {"pytest", "nbval", "playwright"}


def test_torch_and_torchvision_are_pinned_as_a_pair():
    pins = {d.split("==")[0]: d.split("==")[1] for d in PROJECT["dependencies"] if "==" in d}
    assert pins.get("torch") and pins.get("torchvision")
    assert any(d.startswith("scipy") and "<1.18" in d for d in PROJECT["dependencies"])   # pytorch-fid 0.3.0


def test_python_version_covers_what_the_code_uses():
    assert PROJECT["requires-python"] == ">=3.11"          # tomllib (tests), `X | Y` at runtime


def test_library_code_imports_no_test_tooling():
    for path in (ROOT / "labkit").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                assert not module.startswith(("unittest", "pytest")), f"{path.name} imports {module}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^make test$", ci, re.MULTILINE)
    assert command, ".ci/run must call `make test`"
    assert "make test" in readme
