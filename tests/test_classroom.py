"""Grading a class: one copy per student, each exercise in its own bounded process, the
instructor's grader whatever the copy holds, one CSV row per student and exercise."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.teaching.classroom import grade_class

REPO = Path(__file__).resolve().parent.parent
SQUARE = "    return 1 - r ** 2\n"
COSINE = "    return xp.cos(r * math.pi / 2)\n"


def _student(root: Path, name: str, old: str | None = None, new: str | None = None,
             grader: str | None = None) -> Path:
    folder = root / name
    shutil.copytree(REPO / "labkit", folder / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    if old is not None:
        path = folder / "labkit" / "core" / "schedules.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
    if grader is not None:
        (folder / "labkit" / "teaching" / "grade.py").write_text(grader)
    return folder


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class") / "submissions"
    _student(root, "alice")                                                    # right
    _student(root, "bob", SQUARE, "    while True:\n        pass\n")              # never returns
    _student(root, "carol", COSINE, "    import sys\n    sys.exit(0)\n")          # exits "successfully"
    # a wrong square and a grade.py of her own that calls everything done
    _student(root, "dave", SQUARE, "    return 1 - r * 2\n",
             grader="def grade_one(name, _seen=None):\n    return 'done', ''\n")
    (root / "notes").mkdir()                                                   # not a copy: skipped
    out = root.parent / "grades"
    results = grade_class(root, out, names=["gamma_func"], timeout=20, log=lambda *a: None, jobs=2)
    return results, out


def test_each_student_gets_the_verdict_of_the_instructors_grader(graded):
    results, _ = graded
    assert sorted(results) == ["alice", "bob", "carol", "dave"]
    assert results["alice"]["gamma_func"] == ("done", "")
    status, message = results["bob"]["gamma_func"]
    assert status == "wrong" and "still running after 20 s" in message
    status, message = results["carol"]["gamma_func"]
    assert status == "wrong" and "sys.exit" in message and "exit code 0" in message
    status, message = results["dave"]["gamma_func"]
    assert status == "wrong" and "labkit/core/schedules.py" in message   # her grade.py is not used


def test_one_csv_row_per_student_and_exercise_and_a_feedback_file_each(graded):
    results, out = graded
    with open(out / "grades.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["student"], row["exercise"], row["status"]) for row in rows] == [
        (student, "gamma_func", results[student]["gamma_func"][0]) for student in sorted(results)]
    assert all(float(row["seconds"]) > 0 for row in rows)
    for student in results:
        feedback = (out / "feedback" / f"{student}.txt").read_text()
        assert feedback.startswith(student) and "gamma_func" in feedback
    assert "1 of 1 done" in (out / "feedback" / "alice.txt").read_text()


def test_the_command_line_names_a_folder_without_copies(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "labkit", "grade", "--class", str(tmp_path / "empty")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "no student copy" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "labkit", "grade", "--timeout", "5"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "go with --class" in done.stderr
    done = subprocess.run([sys.executable, "-m", "labkit", "grade", "--class", str(tmp_path / "empty"),
                           "--jobs", "0"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "--jobs 0: give at least 1" in done.stderr
    assert not (tmp_path / "grades").exists()                  # refused before writing anything
