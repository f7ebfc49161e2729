"""Write the student copy of the lab: ``python -m labkit student OUT_DIR [--with-solutions]``
(or ``make student``).

The copy holds the repository's tracked files (``git ls-files``), with:

- every exercise region of ``labkit/`` replaced by its hints and a stub that raises
  ``NotImplementedError("TODO2 step1-2: <the hints>")``: nothing of the solution is left;
- the notebooks' exercise cells replaced by where to write (the cell keeps its ``exercise:``
  tag), each followed by a check cell (``labkit.grade("gamma_func")``);
- notebook cells tagged ``solution-view`` (teaching cells that show part of a solution)
  replaced by a short note;
- ``README.md`` the student's own (the instructor's is not copied), and the other files'
  ``# BEGIN INSTRUCTOR`` ... ``# END INSTRUCTOR`` blocks left out (the Makefile's ``student``
  target);
- the instructor-only files left out (``INSTRUCTOR_ONLY``: the mutation tests, the template
  reference and what runs it);
- the copy made a git repository with one commit, so that a student's work is a diff;
- the tests adapted: until ``python -m labkit grade`` reports every exercise done, pytest runs
  only ``tests/test_exercises.py`` (one test per exercise) and skips the rest, naming the
  exercises left; the browser test skips where chromium or Playwright is missing; the tests
  that read the notebooks ask ``is_student_edition()`` which edition they read.

``--with-solutions`` keeps the reference solutions (the copy is then the student edition,
solved: what the tests check). The instructor's copy is only read.

Marker syntax, in the package's ``.py`` files (nbgrader's marker words, with the course's
TODO id after them)::

    def half(r, xp):
        # BEGIN SOLUTION TODO2 step1-2
        # HINT: half: gamma(r) = r / 2                    (one or more HINT lines, kept)
        return r / 2                                      (the solution, removed)
        # END SOLUTION

The TODO id must be one of ``labkit.teaching.exercises.EXERCISES``. In a notebook, a code cell tagged
``exercise:NAME`` (NAME = the grader's name, e.g. ``exercise:gamma_func``; several names
separated by commas) is the instructor's view of the code (``inspect.getsource``); the student
copy replaces it. To add an exercise: mark its region(s), add it to ``labkit.teaching.exercises``, add a
check ``check_NAME`` in ``labkit.grade``, and tag the notebook cell that shows it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .exercises import BY_NAME, BY_TODO, EXERCISES

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION (?P<todo>TODO\d+(?: step[\w-]+)?)\s*$")
HINT = re.compile(r"^\s*# HINT: ?(?P<hint>.*)$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
# instructor-only lines of the other files (the Makefile's `student` target), left out of the copy
INSTRUCTOR_BEGIN = re.compile(r"^# BEGIN INSTRUCTOR\b")
INSTRUCTOR_END = re.compile(r"^# END INSTRUCTOR\s*$")
TAG = "exercise:"
# a teaching cell that shows (part of) a solution: the copy replaces it by a short note
SOLUTION_VIEW = "solution-view"
SOLUTION_VIEW_NOTE = ("*This cell shows part of the reference solution in the instructor's edition; "
                      "in yours, the code is what you write (`python -m labkit grade` checks it).*")
# the student edition's own modules: they describe the markers, they hold no region
TOOLS = {"labkit/teaching/student.py", "labkit/teaching/exercises.py", "labkit/teaching/grade.py"}
# instructor-only files, left out of the copy: the mutation tests hold near-solutions, the
# template reference (and the benchmark and the test that run it) a whole solution
INSTRUCTOR_ONLY = {"tests/test_grade.py", "tests/test_student.py", "tests/test_fastpath.py", "tests/test_classroom.py",
                   "benchmarks/template_reference.py", "benchmarks/bench_speed.py"}


# the file the copy adds: how the copy's own tests know they run in the student edition
STUDENT_MARK = "tests/test_exercises.py"


def is_student_edition(root: str | Path | None = None) -> bool:
    """Whether the checkout at ``root`` (default: this one) is a student copy: its tests then
    expect the student's notebooks (exercise and check cells, no solution-view cells)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    return (root / STUDENT_MARK).is_file()


class MarkerError(ValueError):
    """A badly formed exercise region (names the file and the line)."""


def strip_solutions(text: str, where: str = "<text>") -> tuple[str, list[str]]:
    """``text`` with every solution region replaced by its hints and a stub; also the TODO ids
    found, in order."""
    out, todos, lines = [], [], text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        begin = BEGIN.match(line)
        if not begin:
            if END.match(line) or "# BEGIN SOLUTION" in line:
                raise MarkerError(f"{where}:{i + 1}: {line.strip()!r} outside a region or without "
                                  "a TODO id (write '# BEGIN SOLUTION TODO2 step1-2')")
            out.append(line)
            i += 1
            continue
        todo, indent, start = begin["todo"], begin["indent"], i + 1
        if todo not in BY_TODO:
            raise MarkerError(f"{where}:{start}: unknown exercise {todo!r}; the registry "
                              f"(labkit/exercises.py) has {', '.join(BY_TODO)}")
        hints = []
        i += 1
        while i < len(lines) and HINT.match(lines[i]):
            hints.append(HINT.match(lines[i])["hint"].strip())
            out.append(lines[i])                                # the hints stay, as comments
            i += 1
        while i < len(lines) and not END.match(lines[i]):
            if BEGIN.match(lines[i]):
                raise MarkerError(f"{where}:{i + 1}: a region starts inside the region of line {start}")
            i += 1
        if i == len(lines):
            raise MarkerError(f"{where}:{start}: '# BEGIN SOLUTION {todo}' has no '# END SOLUTION'")
        if not hints:
            raise MarkerError(f"{where}:{start}: region {todo} has no '# HINT:' line after its BEGIN")
        message = f"{todo}: " + " ".join(hints)
        out.append(f"{indent}raise NotImplementedError({message!r})\n")
        todos.append(todo)
        i += 1                                              # the END line
    return "".join(out), todos


def strip_instructor(text: str, where: str = "<text>") -> str:
    """``text`` without its ``# BEGIN INSTRUCTOR`` ... ``# END INSTRUCTOR`` blocks (the markers
    included)."""
    out, start = [], None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if INSTRUCTOR_BEGIN.match(line):
            if start is not None:
                raise MarkerError(f"{where}:{number}: an instructor block starts inside the one of line {start}")
            start = number
        elif INSTRUCTOR_END.match(line):
            if start is None:
                raise MarkerError(f"{where}:{number}: '# END INSTRUCTOR' without a '# BEGIN INSTRUCTOR'")
            start = None
        elif start is None:
            out.append(line)
    if start is not None:
        raise MarkerError(f"{where}:{start}: '# BEGIN INSTRUCTOR' has no '# END INSTRUCTOR'")
    return "".join(out)


def tracked_files(root: Path) -> list[str]:
    """The repository's tracked files (what a clean clone holds)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                                capture_output=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"{root} is not a git checkout ({error}): the student copy is made from "
                         "the tracked files of a clone of the lab") from None
    return [name for name in listed.split("\0") if name]


def exercise_cell_text(names: list[str]) -> str:
    lines = []
    for name in names:
        exercise = BY_NAME[name]
        lines.append(f"# {exercise.todo} ({name}): {exercise.what}.")
        lines.append(f"#   Write it in {exercise.where}, where it raises NotImplementedError;")
    lines.append("#   the '# HINT:' lines there give the formula and the shapes.")
    lines.append("# Then run the next cell to check your code (it reloads labkit as you edit it).")
    return "\n".join(lines)


def check_cell_text(names: list[str]) -> str:
    quoted = ", ".join(repr(name) for name in names)
    return ("%load_ext autoreload\n%autoreload 2\nimport labkit\n\n"
            f"labkit.grade({quoted})     # done / not yet / wrong, with what is likely wrong")


def _code_cell(source: str, cell_id: str, tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": cell_id,
            "metadata": {"tags": tags} if tags else {}, "outputs": [], "source": source.splitlines(keepends=True)}


def student_notebook(notebook: dict) -> tuple[dict, list[str]]:
    """The student version of a notebook: each ``exercise:`` cell -> where to write + a check cell."""
    cells, names_seen = [], []
    for cell in notebook["cells"]:
        if SOLUTION_VIEW in cell.get("metadata", {}).get("tags", []):
            cells.append({"cell_type": "markdown", "id": cell.get("id", f"solution-view-{len(cells)}"),
                          "metadata": {}, "source": [SOLUTION_VIEW_NOTE]})
            continue
        tags = [tag for tag in cell.get("metadata", {}).get("tags", []) if tag.startswith(TAG)]
        if cell["cell_type"] != "code" or not tags:
            cells.append(cell)
            continue
        names = [name.strip() for tag in tags for name in tag[len(TAG):].split(",")]
        unknown = [name for name in names if name not in BY_NAME]
        if unknown:
            raise MarkerError(f"notebook cell tagged {tags}: unknown exercise {unknown}; "
                              f"choose from {', '.join(BY_NAME)}")
        base = cell.get("id", f"exercise-{len(cells)}")
        # the cell keeps its tags: in both editions it is the exercise's cell (the tests find it so)
        cells.append(_code_cell(exercise_cell_text(names), base, tags))
        cells.append(_code_cell(check_cell_text(names), f"{base}-check"))
        names_seen += names
    return {**notebook, "cells": cells}, names_seen


# measured on a solved copy (2-core AMD EPYC, no GPU, the smoke profile; benchmarks/README.md,
# "The student copy's suite and class grading"): the README below quotes them
STUDENT_TIMES = {"exercise_seconds": 15, "quick_seconds": 25, "suite_minutes": 15}

STUDENT_README = """# MaskGIT inpainting lab: student edition

You write six pieces of the MaskGIT code; the notebooks and the grader do the rest.

| exercise | grader name | where you write | what |
|---|---|---|---|
{table}

Each place raises `NotImplementedError("TODO...: hint")` until you replace it; the `# HINT:` lines
above it give the formula and the shapes. Check your work at any time:

    python -m labkit grade                 # every exercise: done / not yet / wrong + the likely bug
    python -m labkit grade gamma_func      # one exercise

or run the check cell after each exercise cell in the notebooks (`labkit.grade("gamma_func")`).
A message names the file and the function to edit (and, when your code crashed, its line).
A notebook that needs an exercise you have not finished says so in its first cells.

## Set up

    conda env create -f environment.yml && conda activate maskgit-lab     # or: pip install -e '.[lab,test]'

Work through the notebooks in order ({notebooks}); 00-05 are the lab, the rest
optional. Set `LABKIT_PROFILE=smoke` for a quick try (seconds per notebook). The default `cpu`
profile trains the lab's models once, in the first notebook that needs them (on 2 CPU cores
about 6 min for the tokenizer in 00 and 16 min for the transformer in 02), and later notebooks
load them; 03 and 05 take 15-20 min each: start one, then read it while it runs.

## Tests

Run first `pytest tests/test_exercises.py` (one test per exercise, about {exercise_seconds} s): until
every exercise is done, the rest of the suite is skipped, naming what is left. A quicker check
of your solutions in the rest of the code, once they are done:
`pytest tests/test_attention.py tests/test_maskgit.py tests/test_pitfalls.py` (about {quick_seconds} s).
Then the whole suite, notebooks included: `pytest` (or `make test`, which sets up `.venv` first
and is what `.ci/run` runs), about {suite_minutes} min on 2 CPU cores. Its browser test opens
notebooks 00 and 04 in JupyterLab under a headless Chromium; it skips, saying why, where
chromium or Playwright is missing (`make test` installs both, as root).

## Your changes

This folder is a git repository with one commit, the edition as you received it: `git diff`
shows what you wrote, `git add -A && git commit` keeps a step.
"""

STUDENT_CONFTEST = '''

# ---- student edition (written by labkit.teaching.student): the suite waits for the exercises;
# the browser test (the lab's own CI check of JupyterLab) skips where no browser is installed
def pytest_collection_modifyitems(config, items):
    import importlib.util
    import os

    import pytest
    from labkit.teaching.grade import grade_one
    from labkit.teaching.exercises import EXERCISES

    chromium = os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium")
    missing = [what for what, there in ((f"chromium at {chromium}", os.access(chromium, os.X_OK)),
                                        ("Playwright", importlib.util.find_spec("playwright") is not None))
               if not there]
    if missing:
        browser = pytest.mark.skip(reason="the browser test needs " + " and ".join(missing) + " (`make test` "
                                   "installs both; or apt-get install -y chromium, pip install playwright)")
        for item in items:
            if item.nodeid.startswith("tests/test_browser.py"):
                item.add_marker(browser)
    left = [f"{e.todo} ({e.name})" for e in EXERCISES if grade_one(e.name)[0] != "done"]
    if not left:
        return
    skip = pytest.mark.skip(reason="needs the exercises " + ", ".join(left)
                            + " (python -m labkit grade says what is left)")
    for item in items:
        if not item.nodeid.startswith("tests/test_exercises.py"):
            item.add_marker(skip)
'''

EXERCISE_TESTS = '''"""One test per exercise of the lab (labkit.teaching.exercises), graded by labkit.grade."""

import pytest

from labkit.teaching.exercises import EXERCISES
from labkit.teaching.grade import grade_one


@pytest.mark.parametrize("name", [exercise.name for exercise in EXERCISES])
def test_exercise(name):
    status, message = grade_one(name)
    assert status == "done", f"{name}: {status}: {message}"
'''


def write_student_copy(out_dir: str | Path, root: str | Path | None = None,
                       with_solutions: bool = False) -> dict:
    """Write the student copy of the repository at ``root`` (default: this checkout) into
    ``out_dir`` (which must not exist or be empty). Returns {"files": n, "regions": {todo: n},
    "notebook_exercises": [names]}."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give a new folder for the student copy")
    files = tracked_files(root)
    regions: dict[str, int] = {}
    shown = []
    for name in files:
        source, target = root / name, out / name
        if not source.is_file() or name in INSTRUCTOR_ONLY:
            continue                                           # deleted in the work tree, or the instructor's
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("labkit/") and name.endswith(".py") and name not in TOOLS:
            text = source.read_text()
            stripped, todos = strip_solutions(text, name)
            for todo in todos:
                regions[todo] = regions.get(todo, 0) + 1
            target.write_text(text if with_solutions else stripped)
        elif name.startswith("notebooks/") and name.endswith(".ipynb"):
            notebook, names = student_notebook(json.loads(source.read_text()))
            shown += names
            target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        elif name not in TOOLS and _has_instructor_block(source):
            target.write_text(strip_instructor(source.read_text(), name))
            shutil.copymode(source, target)
        else:
            shutil.copy2(source, target)
    missing = [e.todo for e in EXERCISES if e.todo not in regions]
    if missing:
        raise MarkerError(f"no region marked for {', '.join(missing)} in labkit/: every exercise of "
                          "labkit/exercises.py needs at least one '# BEGIN SOLUTION TODO...' region")
    table = "\n".join(f"| {e.todo} | `{e.name}` | {e.where} | {e.what} |" for e in EXERCISES)
    series = sorted(name[len("notebooks/"):len("notebooks/") + 2] for name in files
                    if re.fullmatch(r"notebooks/\d\d_\w+\.ipynb", name))
    (out / "README.md").write_text(STUDENT_README.format(table=table, notebooks=", ".join(series), **STUDENT_TIMES))
    (out / "tests").mkdir(exist_ok=True)
    (out / STUDENT_MARK).write_text(EXERCISE_TESTS)
    conftest = out / "conftest.py"
    conftest.write_text((conftest.read_text() if conftest.is_file() else "") + STUDENT_CONFTEST)
    return {"files": len(files), "regions": regions, "notebook_exercises": shown, "git": first_commit(out)}


def _has_instructor_block(path: Path) -> bool:
    try:
        return any(INSTRUCTOR_BEGIN.match(line) for line in path.read_text().splitlines())
    except UnicodeDecodeError:                                 # a binary file (a PNG, a checkpoint)
        return False


def first_commit(out: Path) -> str | None:
    """Make ``out`` a git repository with one commit (the edition as handed out), so that a
    student's work is a diff; None when done, else why not (the copy is usable without)."""
    author = ["-c", "user.name=labkit student edition", "-c", "user.email=student@labkit.invalid",
              "-c", "commit.gpgsign=false"]
    try:
        for args in (["init", "-q"], ["add", "-A"], [*author, "commit", "-q", "-m", "The student edition"]):
            subprocess.run(["git", *args], cwd=out, check=True, capture_output=True)
    except FileNotFoundError:
        return "git is not installed: the copy is not a git repository (install git, then git init)"
    except subprocess.CalledProcessError as error:
        return f"`{' '.join(error.cmd)}` failed ({error.stderr.decode().strip()}): the copy is not a git repository"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit student",
                                     description="Write the student copy of the lab (see the module docstring).")
    parser.add_argument("out_dir", help="a new (or empty) folder")
    parser.add_argument("--with-solutions", action="store_true",
                        help="keep the reference solutions (the student edition, solved)")
    args = parser.parse_args(argv)
    try:
        summary = write_student_copy(args.out_dir, with_solutions=args.with_solutions)
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    regions = ", ".join(f"{todo} x{n}" for todo, n in summary["regions"].items())
    print(f"wrote the student copy ({summary['files']} files{', solutions kept' if args.with_solutions else ''}) "
          f"to {args.out_dir}: regions {regions}; notebook exercise cells: "
          f"{', '.join(summary['notebook_exercises']) or 'none'}")
    if summary["git"]:
        print(f"note: {summary['git']}", file=sys.stderr)
    return 0


__all__ = ["write_student_copy", "strip_solutions", "strip_instructor", "is_student_edition", "student_notebook", "MarkerError", "main"]
