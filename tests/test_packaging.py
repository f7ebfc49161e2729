"""environment.yml and pyproject.toml list the same packages; CI runs the README's command."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower().replace("_", "-")


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


def test_environment_yml_matches_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = sorted(normalise(dep) for dep in project["dependencies"])
    listed = sorted(normalise(dep) for dep in environment_pip_list() if dep != "-e .")
    assert listed == expected
    assert "-e ." in environment_pip_list()


def test_torch_and_torchvision_are_pinned_as_a_pair():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split("==")[0]: d.split("==")[1] for d in deps if "==" in d}
    assert pins.get("torch") and pins.get("torchvision")
    assert any(d.startswith("scipy") and "<1.18" in d for d in deps)   # pytorch-fid 0.3.0


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^make test$", ci, re.MULTILINE)
    assert command, ".ci/run must call `make test`"
    assert "make test" in readme
