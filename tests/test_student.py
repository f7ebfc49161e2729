"""The student copy: generated from the repository's tracked files into a temporary folder;
every stub raises naming its TODO, nothing of the solutions survives, the grader says "not yet"
to everything; with the solutions put back everything is done and notebook 04 (the student
edition's cells) runs under nbval."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.teaching.exercises import EXERCISES
from labkit.teaching.student import (BEGIN, END, HINT, TOOLS, MarkerError, strip_instructor, strip_solutions,
                                     write_student_copy)

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def run(copy: Path, *args, timeout=300, **env_vars):
    env = {**os.environ, "PYTHONPATH": str(copy), "LABKIT_PROFILE": "smoke",
           "LABKIT_RUNS": str(copy / "runs"), "LABKIT_PROGRESS": "text", **env_vars}
    return subprocess.run([PYTHON, *args], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    copy = tmp_path_factory.mktemp("student") / "lab"
    summary = write_student_copy(copy, root=REPO)
    return copy, summary


@pytest.fixture(scope="module")
def solved_copy(tmp_path_factory):
    copy = tmp_path_factory.mktemp("solved") / "lab"
    write_student_copy(copy, root=REPO, with_solutions=True)
    return copy


def solution_lines(text):
    """(the solution lines of every region (code, not comments or blanks), the other lines)"""
    lines, others, inside = [], set(), False
    for line in text.splitlines():
        if BEGIN.match(line):
            inside = True
        elif END.match(line):
            inside = False
        elif inside and not HINT.match(line) and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
        elif not inside:
            others.add(line.strip())
    return lines, others


def test_instructor_copy_unchanged_and_every_exercise_marked(student_copy):
    status = subprocess.run(["git", "status", "--porcelain", "--", "labkit", "notebooks"], cwd=REPO,
                            capture_output=True, text=True).stdout
    copy, summary = student_copy
    assert summary["regions"].keys() == {e.todo for e in EXERCISES}
    assert sorted(summary["notebook_exercises"]) == sorted(e.name for e in EXERCISES)
    assert subprocess.run(["git", "status", "--porcelain", "--", "labkit", "notebooks"], cwd=REPO,
                          capture_output=True, text=True).stdout == status
    assert not (copy / "tests" / "test_grade.py").exists()
    assert (copy / "README.md").read_text().startswith("# MaskGIT inpainting lab: student edition")


def test_no_solution_text_survives(student_copy):
    copy, _ = student_copy
    checked = 0
    for path in sorted((REPO / "labkit").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name in TOOLS:
            continue
        original = path.read_text()
        stubbed = (copy / name).read_text()
        assert "BEGIN SOLUTION" not in stubbed and "END SOLUTION" not in stubbed
        solution, outside = solution_lines(original)
        for line in solution:
            if line not in outside:                    # a line that also exists outside a region
                assert line not in {l.strip() for l in stubbed.splitlines()}, (name, line)
                checked += 1
    assert checked > 30


STUB_CALLS = {
    "TODO1": "MultiHeadAttention(32, 4)(torch.zeros(1, 3, 32))",
    "TODO2 step1-1": "MaskGit(cfg).encode_to_z(torch.zeros(1, 3, 32, 32))",
    "TODO2 step1-2": "[schedules.FORMULAS[name](np.array(0.5), np) for name in schedules.SCHEDULES]",
    "TODO2 step1-3": "MaskGit(cfg).random_token_mask(2)",
    "TODO2 step2": "mvtm_step(MaskGit(cfg), None, torch.zeros(2, 64).long(), None, 1.0, print)",
    "TODO3": "MaskGit(cfg).inpainting(*[None] * 6)",
}


def test_every_stub_raises_naming_its_todo(student_copy):
    copy, _ = student_copy
    script = ["import numpy as np, torch", "from labkit.core import schedules",
              "from labkit.core.attention import MultiHeadAttention", "from labkit.core.maskgit import MaskGit",
              "from labkit.core.train import mvtm_step", "from labkit.config import get_config",
              "cfg = get_config('smoke', train_mask='random', condition=())"]
    for todo, call in STUB_CALLS.items():
        script += ["try:", f"    {call}", "    print('no error:', %r)" % todo,
                   "except NotImplementedError as error:", "    print('raised:', error)"]
    result = run(copy, "-c", "\n".join(script))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == list(STUB_CALLS), lines
    assert all(line.startswith("raised:") for line in lines)
    # the five schedules are five stubs with their own hints
    formulas = (copy / "labkit/core/schedules.py").read_text()
    assert formulas.count("raise NotImplementedError('TODO2 step1-2:") == 5
    assert "gamma(r) = 1 - r^2" in formulas


def test_grader_says_not_yet_to_everything(student_copy):
    copy, _ = student_copy
    result = run(copy, "-m", "labkit", "grade")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXERCISES) and all(" not yet: " in line for line in lines), lines


def test_student_notebooks_have_exercise_and_check_cells(student_copy):
    copy, _ = student_copy
    notebook = json.loads((copy / "notebooks/04_inpaint.ipynb").read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    at = next(i for i, s in enumerate(sources) if s.startswith("# TODO3 (inpainting)"))
    assert "labkit/core/maskgit.py: MaskGit.inpainting" in sources[at]
    assert 'labkit.grade("inpainting")' in sources[at + 1].replace("'", '"')
    assert not any("inspect.getsource" in s for s in sources)


def test_gate_names_the_missing_exercise(student_copy):
    copy, _ = student_copy
    result = run(copy, "-c", "from labkit.teaching.grade import require; require('04')")
    assert result.returncode == 1
    assert "notebook 04 needs these exercises first" in result.stderr
    assert "TODO2 step1-2 (gamma_func, labkit/core/schedules.py" in result.stderr


def test_marker_errors_name_the_line():
    with pytest.raises(MarkerError, match="<text>:1: .*has no '# END SOLUTION'"):
        strip_solutions("# BEGIN SOLUTION TODO3\n# HINT: x\nx = 1\n")
    with pytest.raises(MarkerError, match="unknown exercise 'TODO9'"):
        strip_solutions("# BEGIN SOLUTION TODO9\n# HINT: x\n# END SOLUTION\n")
    with pytest.raises(MarkerError, match="no '# HINT:' line"):
        strip_solutions("    # BEGIN SOLUTION TODO3\n    x = 1\n    # END SOLUTION\n")
    text, todos = strip_solutions("def f():\n    # BEGIN SOLUTION TODO3\n    # HINT: a hint\n"
                                  "    return 1\n    # END SOLUTION\n")
    assert todos == ["TODO3"]
    assert text == ("def f():\n    # HINT: a hint\n"
                    "    raise NotImplementedError('TODO3: a hint')\n")


def test_solutions_restored_everything_done(solved_copy):
    checked = 0
    for path in (REPO / "labkit").rglob("*.py"):
        name = path.relative_to(REPO).as_posix()
        assert (solved_copy / name).read_text() == path.read_text(), name
        checked += 1
    assert checked > 40
    result = run(solved_copy, "-m", "labkit", "grade")
    assert result.returncode == 0, result.stdout
    assert all(line.split()[-1] == "done" for line in result.stdout.splitlines())


# the copy's own suite, with the solutions: the part that can differ from this checkout's run.
# The copy changes the notebooks (exercise and check cells, no solution-view cells), README.md,
# the Makefile, conftest.py, and leaves out INSTRUCTOR_ONLY; its labkit/ is this one's (tested
# above). So the test modules that read those files run there (selected by what their source
# names), with the copy's notebooks under its strict nbval; every module is collected (an
# import of a left-out file fails there). The other modules run the same code on the same
# inputs as here. Measured on 2 cores: this part 5.1 min, the whole copy suite 14.5 min.
READS_WHAT_THE_COPY_CHANGES = re.compile(r'"README|"Makefile|NOTEBOOKS|\.ipynb|"benchmarks"|"\.ci"|conftest')


def test_solved_copy_passes_its_own_suite(solved_copy):
    collected = run(solved_copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-2000:]
    modules = sorted(path.relative_to(solved_copy).as_posix() for path in (solved_copy / "tests").glob("test_*.py")
                     if READS_WHAT_THE_COPY_CHANGES.search(path.read_text()) and path.name != "test_browser.py")
    assert {"tests/test_notebooks.py", "tests/test_decode_teaching.py", "tests/test_packaging.py"} <= set(modules)
    result = run(solved_copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
                 "tests/test_exercises.py", *modules, "notebooks", timeout=1500)
    assert result.returncode == 0, result.stdout[-5000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"^\d+ passed in ", summary), summary        # nothing failed, nothing skipped


def test_student_suite_waits_for_the_exercises(student_copy):
    copy, _ = student_copy
    result = run(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                 "tests/test_exercises.py", "tests/test_config.py")
    assert result.returncode == 1
    assert "6 failed" in result.stdout and "skipped" in result.stdout
    assert "needs the exercises TODO1 (attention), TODO2 step1-1 (encode_to_z)" in result.stdout


# the essential expressions of each solution, in the forms a region writes them (not the
# formulas its hints already give): none may appear in the copy, whole line or not
ESSENTIAL = (
    # (not the softmax over the last dim: TODO1's hint says it, and notebook 01's sqrt(d_k)
    # experiment applies it to random scores, its lesson)
    "k.transpose(-2, -1) / math.sqrt", "self.dropout(attention) @ v",
    "z_indices.reshape(x.shape[0], -1)", "xp.cos(r * math.pi / 2)",
    "torch.ceil(gamma(r) * hideable)", "scores.masked_fill(~region, 2.0)",
    "z_indices.masked_fill(mask, self.mask_token_id)",
    "confidence.masked_fill(~still_masked, math.inf)", "confidence.argsort(dim=1).argsort(dim=1)",
    "torch.where(still_masked, chosen, token_ids)", "chosen = log_probs.argmax(dim=-1)",
    "clip_grad_norm_(maskgit.transformer.parameters(), grad_clip)",
)


def copy_leaks(copy: Path, notebooks: bool) -> list[str]:
    """"file: text" for each solution line (of a region, and found nowhere outside the regions
    of labkit/) and each ESSENTIAL expression in the copy's notebooks (sources and outputs) or
    in its other text files."""
    lines, generic = set(), set()
    for path in (REPO / "labkit").rglob("*.py"):
        solution, outside = solution_lines(path.read_text())
        generic |= outside
        if path.relative_to(REPO).as_posix() not in TOOLS:
            lines.update(solution)
    lines = {line for line in lines if len(line) > 12 and not any(line in other for other in generic)}
    assert len(lines) > 25
    found = set()
    for path in copy.rglob("*"):
        if (not path.is_file() or ".git" in path.relative_to(copy).parts
                or (path.suffix == ".ipynb") != notebooks or path.suffix not in {".py", ".ipynb", ".md", ".txt"}):
            continue
        text = path.read_text(errors="replace")
        if notebooks:
            text = "\n".join("".join(cell["source"]) + "".join(
                "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
                for output in cell.get("outputs", [])) for cell in json.loads(text)["cells"])
        name = path.relative_to(copy).as_posix()
        found |= {f"{name}: {piece}" for piece in (*lines, *ESSENTIAL) if piece in text}
    return sorted(found)


def test_no_solution_anywhere_in_the_copys_code(student_copy):
    copy, _ = student_copy
    leaks = copy_leaks(copy, notebooks=False)
    assert not leaks, "\n".join(leaks)


def test_no_solution_in_the_copys_notebooks(student_copy):
    copy, _ = student_copy
    leaks = copy_leaks(copy, notebooks=True)
    assert not leaks, "\n".join(leaks)


def test_copy_is_a_git_repository_with_one_commit(student_copy):
    copy, summary = student_copy
    if summary["git"]:
        pytest.skip(summary["git"])
    log = subprocess.run(["git", "log", "--oneline"], cwd=copy, capture_output=True, text=True).stdout
    assert len(log.splitlines()) == 1
    assert subprocess.run(["git", "status", "--porcelain"], cwd=copy, capture_output=True, text=True).stdout == ""
    readme = (copy / "README.md").read_text()
    assert "WITH_SOLUTIONS" not in readme and "pytest tests/test_exercises.py" in readme


def test_the_student_readmes_commands_and_the_makefile_work_in_the_copy(solved_copy):
    readme = (solved_copy / "README.md").read_text()
    commands = [command.split() for command in re.findall(r"`(pytest[^`]*)`", " ".join(readme.split()))]
    assert ["pytest", "tests/test_exercises.py"] in commands and len(commands) >= 3, commands
    for command in commands:                                  # each one collects (options, paths)
        result = run(solved_copy, "-m", *command, "-q", "-p", "no:cacheprovider", "--collect-only")
        assert result.returncode == 0, (command, result.stdout[-2000:] + result.stderr[-2000:])
    assert re.search(r"about \d+ min on 2 CPU cores", " ".join(readme.split()))
    environment = re.search(r"^name: (\S+)", (solved_copy / "environment.yml").read_text(), re.MULTILINE)[1]
    assert f"conda activate {environment}" in readme
    makefile = (solved_copy / "Makefile").read_text()
    assert "INSTRUCTOR" not in makefile and "student" not in makefile and "WITH_SOLUTIONS" not in makefile
    dry_run = subprocess.run(["make", "-n", "test"], cwd=solved_copy, capture_output=True, text=True)
    assert dry_run.returncode == 0 and "pytest" in dry_run.stdout, dry_run.stderr


def test_without_a_browser_the_copys_browser_test_skips_and_says_why(solved_copy):
    result = run(solved_copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_browser.py",
                 LABKIT_CHROMIUM=str(solved_copy / "no-chromium"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "skipped" in result.stdout and "the browser test needs chromium at" in result.stdout


def test_instructor_blocks_are_left_out_and_bad_ones_named():
    text = "a\n# BEGIN INSTRUCTOR (why)\nb\n# END INSTRUCTOR\nc\n"
    assert strip_instructor(text) == "a\nc\n"
    with pytest.raises(MarkerError, match="<text>:1: '# BEGIN INSTRUCTOR' has no '# END INSTRUCTOR'"):
        strip_instructor("# BEGIN INSTRUCTOR\nb\n")
    with pytest.raises(MarkerError, match="<text>:2: '# END INSTRUCTOR' without"):
        strip_instructor("a\n# END INSTRUCTOR\n")
    with pytest.raises(MarkerError, match="<text>:2: an instructor block starts inside the one of line 1"):
        strip_instructor("# BEGIN INSTRUCTOR\n# BEGIN INSTRUCTOR\n")
