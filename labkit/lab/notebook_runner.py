"""Run the notebook series in order with papermill, and refresh the committed outputs.

    python -m labkit notebooks                        # the cpu profile (or $LABKIT_PROFILE)
    python -m labkit notebooks --profile smoke        # seconds per notebook
    python -m labkit notebooks --only 04_inpaint -p gamma linear -p total_iter 12
    python -m labkit notebooks --profile cpu --refresh

Each notebook of ``notebooks/`` runs in a kernel of this Python environment, in order (a
later notebook loads the checkpoints an earlier one wrote), with ``notebooks/`` as its
working directory. The profile reaches the kernel twice: as the ``LABKIT_PROFILE``
environment variable and as an injected ``profile`` parameter. Executed copies go to
``runs/<profile>/notebooks/`` and the wall time of each notebook to
``runs/<profile>/series_summary.json``. The series stops at the first notebook that fails;
its executed copy shows the failing cell.

``--refresh`` also writes each executed notebook back over its source in ``notebooks/``,
without papermill's injected cell and bookkeeping metadata, so the committed notebooks show
the outputs of a real run of the current code. Refresh only with the embedded defaults
(no ``-p``): the committed outputs must be what a reader gets by running the notebook as is.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import papermill

from ..config import PROFILES, default_profile
from .params import check_parameters
from .command import run_command
from .utils import atomic_write_text, runs_root as default_runs_root

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SERIES = (
    "00_data_and_tokenizer",
    "01_attention",
    "02_train_mvtm",
    "03_loss_comparison",
    "04_inpaint",
    "05_fid",
    "06_pitfalls",
    "07_generation",
)
# "python3" resolves to this interpreter: jupyter_client starts the kernel with
# sys.executable when a kernel spec's command is plain "python".
KERNEL_NAME = "python3"


def notebook_path(name: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    path = Path(notebooks_dir) / f"{Path(name).stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(
            f"no notebook {path}; the series is {', '.join(SERIES)} (run from a source checkout: "
            "the notebooks are not part of an installed wheel)")
    return path


def notebook_parameters(path: Path) -> list[str]:
    """The names assigned in the notebook's cell tagged ``parameters`` (papermill's defaults)."""
    notebook = nbformat.read(path, as_version=4)
    names = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
                names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameter_names(parameters: dict, sources: list[Path]) -> None:
    """Refuse a ``-p`` name that no notebook of the run declares: papermill would inject it
    into a cell of its own, where nothing reads it, and the run would report ok."""
    declared = {source.stem: notebook_parameters(source) for source in sources}
    known = {name for names in declared.values() for name in names}
    unknown = [name for name in parameters if name not in known]
    if unknown:
        listing = "; ".join(f"{stem}: {', '.join(names) or '(none)'}" for stem, names in declared.items())
        raise ValueError(f"-p {', '.join(unknown)}: no notebook of this run has "
                         f"{'this parameter' if len(unknown) == 1 else 'these parameters'} "
                         f"(check the spelling). Parameters: {listing}")


def clean_for_commit(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip what papermill adds (injected cell, timings, status) and renumber executions."""
    notebook.cells = [cell for cell in notebook.cells
                      if "injected-parameters" not in cell.metadata.get("tags", [])]
    notebook.metadata.pop("papermill", None)
    count = 0
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = count
    return notebook


def run_notebook(source: Path, output: Path, profile: str, parameters: dict | None = None,
                 kernel_name: str = KERNEL_NAME) -> float:
    """Execute ``source`` into ``output`` with papermill; returns the wall time in seconds."""
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(source), str(output),
        parameters={"profile": profile, **(parameters or {})},
        kernel_name=kernel_name,
        cwd=str(source.parent),
        progress_bar=False,
    )
    return time.perf_counter() - start


def run_series(profile: str | None = None, notebooks=None, parameters: dict | None = None,
               refresh: bool = False, runs_root=None, notebooks_dir: Path = NOTEBOOKS_DIR,
               kernel_name: str = KERNEL_NAME, log=print) -> dict:
    """Run ``notebooks`` (default: the whole series) in order; returns the summary it writes."""
    profile = profile or default_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if refresh and parameters:
        raise ValueError("--refresh writes the outputs into the committed notebooks, which must "
                         "show the embedded defaults: drop the -p parameters, or run without --refresh")
    if parameters and parameters.get("profile", profile) != profile:
        raise ValueError(f"-p profile {parameters['profile']!r} disagrees with the run's profile "
                         f"{profile!r} (--profile, else $LABKIT_PROFILE, else cpu): choose the "
                         f"profile once, with --profile {parameters['profile']}, and drop -p profile")
    names = [Path(name).stem for name in (notebooks or SERIES)]
    sources = [notebook_path(name, notebooks_dir) for name in names]
    # a wrong -p name or value fails here, before any kernel starts
    check_parameter_names(parameters or {}, sources)
    check_parameters({**(parameters or {}), "profile": profile})
    # the kernel is this Python's ipykernel: without it, it would die with no word of why
    importlib.import_module("ipykernel.kernelapp")
    run_root = default_runs_root(runs_root)
    if run_root.exists() and not run_root.is_dir():
        raise NotADirectoryError(f"runs root {run_root} is a file, not a folder: pass a folder "
                                 "(--runs-root), or move the file away")
    out_dir = run_root / profile / "notebooks"
    # The kernel inherits this process's environment: every labkit default then agrees
    # with the injected profile, including code that reads $LABKIT_PROFILE itself.
    os.environ["LABKIT_PROFILE"] = profile
    # Executed headless, progress bars print whole lines and end on their final line (labkit.lab.progress).
    os.environ.setdefault("LABKIT_PROGRESS", "text")
    if runs_root:
        parameters = {**(parameters or {}), "runs_root": str(Path(runs_root).resolve())}

    summary = {
        "profile": profile,
        "parameters": parameters or {},
        "refresh": refresh,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "notebooks": [],
    }
    series_start = time.perf_counter()
    for source in sources:
        output = out_dir / source.name
        log(f"[{profile}] {source.name} ...", flush=True)
        entry = {"name": source.stem, "output": str(output), "status": "ok"}
        start = time.perf_counter()
        try:
            run_notebook(source, output, profile, parameters, kernel_name)
        except papermill.PapermillExecutionError as error:
            first_line = next((line for line in error.source.splitlines() if line.strip()), "")
            entry.update(status="failed", cell=error.exec_count, cell_source=first_line,
                         error=f"{error.ename}: {error.evalue}")
        entry["seconds"] = round(time.perf_counter() - start, 1)
        summary["notebooks"].append(entry)
        if entry["status"] != "ok":
            log(f"[{profile}] {source.name} FAILED after {entry['seconds']} s in cell "
                f"[{entry['cell']}] ({entry['cell_source']}): {entry['error']}; see cell "
                f"[{entry['cell']}] of {output}", flush=True)
            break
        if refresh:
            executed = nbformat.read(output, as_version=4)
            nbformat.write(clean_for_commit(executed), source)
        log(f"[{profile}] {source.name} done in {entry['seconds']} s"
            + (f", outputs written back to {source}" if refresh else ""), flush=True)

    summary["total_seconds"] = round(time.perf_counter() - series_start, 1)
    summary["ok"] = (len(summary["notebooks"]) == len(sources)
                     and all(entry["status"] == "ok" for entry in summary["notebooks"]))
    summary_path = atomic_write_text(run_root / profile / "series_summary.json",
                                     json.dumps(summary, indent=2) + "\n")
    log(f"[{profile}] series {'ok' if summary['ok'] else 'FAILED'} in {summary['total_seconds']} s; "
        f"summary: {summary_path}", flush=True)
    return summary


def _parse_parameter(pair) -> tuple[str, object]:
    """(NAME, VALUE) from the command line: VALUE read as JSON (numbers, lists, true/false,
    null) when it parses, else kept as a string: -p gamma linear, -p image_indices "[0, 5]"."""
    name, value = pair
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return name, parsed


def _main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit notebooks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="config profile (default: $LABKIT_PROFILE, else cpu)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                        help=f"run these notebooks only, in the order given (names from {', '.join(SERIES)})")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="a papermill parameter, e.g. -p gamma linear")
    parser.add_argument("--refresh", action="store_true",
                        help="write the executed outputs back into notebooks/ (the committed outputs)")
    parser.add_argument("--runs-root", default=None,
                        help=f"where <profile>/ lives (default: $LABKIT_RUNS or {default_runs_root()})")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    parameters = dict(_parse_parameter(p) for p in args.parameter)
    summary = run_series(args.profile, args.only, parameters, args.refresh, args.runs_root)
    return 0 if summary["ok"] else 1


def main(argv=None) -> int:
    """``python -m labkit notebooks ...``: errors as one message (``labkit.lab.command.run_command``)."""
    return run_command(_main, argv)
