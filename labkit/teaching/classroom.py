"""Grading a class: one student copy per sub-folder, every exercise in its own process.

    python -m labkit grade --class submissions/ --out grades/        # grades/grades.csv, grades/feedback/
    python -m labkit grade --class submissions/ gamma_func --timeout 60 --jobs 4

``submissions/alice/`` is Alice's copy of the student edition (it holds ``labkit/``). Each
exercise runs in a fresh Python process whose ``labkit`` is the student's, graded by THIS
grader (``labkit/teaching/grade.py`` of the instructor's checkout, loaded by path), so a
student cannot pass by editing the grader. A process that runs past ``timeout`` seconds (an
infinite loop) or ends without reporting (``sys.exit`` in the student's code, a crash of the
interpreter) counts as "wrong" with the reason, and the class goes on. One CSV row per student
and exercise (nbgrader's habit: student, todo, exercise, status, message, seconds), and one
short feedback file per student. ``--jobs`` (default: the CPU count) grades that many exercises
at once; each process is single-threaded (OMP_NUM_THREADS=1), so the timeout stays fair.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .exercises import EXERCISES

GRADER = Path(__file__).resolve().with_name("grade.py")
MARK = "LABKIT-GRADE-RESULT "           # the line a grading process reports its result on
DEFAULT_TIMEOUT = 120.0                 # seconds per exercise; the checks take a few

# Run inside the student's folder: the student's labkit, the instructor's grader.
_SCRIPT = """
import importlib.abc, importlib.util, json, sys


class InstructorGrader(importlib.abc.MetaPathFinder):   # labkit.teaching.grade is always ours
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_file_location(name, {grader!r}) if name == "labkit.teaching.grade" else None


sys.meta_path.insert(0, InstructorGrader())
sys.path.insert(0, {folder!r})
from labkit.teaching import grade as grader
status, message = grader.grade_one({name!r})
sys.stdout.write("\\n" + {mark!r} + json.dumps([status, message]) + "\\n")
sys.stdout.flush()
"""


def student_folders(root: str | Path) -> list[Path]:
    """The sub-folders of ``root`` that hold a student copy (a ``labkit/`` package), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--class {str(root)!r} is not a folder: give the folder that holds one "
                         "student copy per sub-folder (e.g. submissions/alice/labkit/...)")
    found = sorted(path for path in root.iterdir() if (path / "labkit" / "__init__.py").is_file())
    if not found:
        raise ValueError(f"no student copy in {root}: each sub-folder must hold the student "
                         "edition's labkit/ (python -m labkit student OUT writes one)")
    return found


def grade_exercise(folder: Path, name: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, str, float]:
    """(status, message, seconds) of exercise ``name`` in the student copy ``folder``."""
    mark = f"{MARK}{secrets.token_hex(8)} "           # a result line the student's code cannot know
    script = _SCRIPT.format(folder=str(folder.resolve()), grader=str(GRADER), name=name, mark=mark)
    env = {**os.environ, "PYTHONPATH": str(folder.resolve()), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ("wrong", f"still running after {timeout:g} s and stopped: an endless loop? "
                         "(the checks take a few seconds)", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(mark):
            status, message = json.loads(line[len(mark):])
            return status, message, seconds
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return ("wrong", f"the process ended (exit code {done.returncode}) before the grader could report: "
                     f"does the code call sys.exit or exit? last line: {tail}", seconds)


def grade_class(root: str | Path, out: str | Path, names=None, timeout: float = DEFAULT_TIMEOUT,
                log=print, jobs: int = 1) -> dict:
    """Grade every student copy under ``root``: ``out``/grades.csv and ``out``/feedback/<student>.txt,
    ``jobs`` exercise processes at a time (each single-threaded). Returns {student: {exercise:
    (status, message)}}."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: give at least 1 (the number of exercises graded at once)")
    folders = student_folders(root)
    names = list(names) if names else [exercise.name for exercise in EXERCISES]
    by_name = {exercise.name: exercise for exercise in EXERCISES}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown exercise {', '.join(unknown)}; choose from {', '.join(by_name)}")
    out = Path(out)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    results, rows = {}, []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        graded = pool.map(lambda task: grade_exercise(*task, timeout), [(f, n) for f in folders for n in names])
        for folder in folders:                                  # results in order, as they come
            student = folder.name
            results[student] = {}
            lines = [f"{student}: the exercises of the MaskGIT lab, graded by calling your code"]
            for name in names:
                status, message, seconds = next(graded)
                results[student][name] = (status, message)
                todo = by_name[name].todo
                rows.append({"student": student, "todo": todo, "exercise": name, "status": status,
                             "message": message, "seconds": f"{seconds:.1f}"})
                lines.append(f"{todo:<14} {name:<12} {status}" + (f": {message}" if message else ""))
            done = sum(status == "done" for status, _ in results[student].values())
            lines.append(f"{done} of {len(names)} done")
            (out / "feedback" / f"{student}.txt").write_text("\n".join(lines) + "\n")
            log(f"{student}: {done} of {len(names)} done")
    with open(out / "grades.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["student", "todo", "exercise", "status", "message", "seconds"])
        writer.writeheader()
        writer.writerows(rows)
    log(f"{len(folders)} students: {out / 'grades.csv'}, one feedback file each in {out / 'feedback'}")
    return results


__all__ = ["grade_class", "grade_exercise", "student_folders", "DEFAULT_TIMEOUT"]
