"""Command line: ``python -m labkit <command> --profile cpu``.

    pipeline          everything below, then summary.json and the printed table
    make-data         render (or load) the toy cats and their test masks
    train-tokenizer   stage 1: train or resume the VQGAN
    train-mvtm        stage 2: encode the images once, train or resume the transformer
    inpaint           inpaint the test split with the trained model, print the scores

    fid PRED GT       FID (or FD) of your inpainted images against the ground truth
    notebooks         run the notebook series with papermill (``--only``, ``-p``, ``--refresh``)
    grade [NAME ...]  grade the student's exercises
    student OUT_DIR   write the student edition

Every command calls the same functions as the notebooks (``labkit.lab.pipeline``), and
resumes from the checkpoints in ``<runs>/<profile>/`` (``--fresh`` starts again).
``--set key=value`` changes any config field: ``--set mvtm_steps=200 --set vq_channels=16,32,64``.

A mistake (a bad value, file or folder) prints one message saying what to do and exits 2;
a problem of the machine (no space left, a missing package) exits 3; Ctrl-C or SIGTERM stops
after the current step, saves a checkpoint and exits 130 (SIGTERM 143); ``--debug`` (or
LABKIT_DEBUG=1) adds the traceback.

Several GPUs: start the same command with torchrun, one process per GPU
(``torchrun --nproc_per_node=4 -m labkit train-mvtm --profile gpu``). Both training
stages then run with DistributedDataParallel; rank 0 writes every file and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import distributed
from ..config import PROFILES, LabConfig, default_profile, get_config
from .pipeline import evaluate_inpainting, format_table, prepare_data, run_pipeline, stage_mvtm, stage_tokenizer
from .run import RunOptions
from .training import load_maskgit, load_vqgan
from .command import run_command
from .utils import data_root, get_device, run_dir, runs_root


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default=None,
                        help="config profile (default: $LABKIT_PROFILE or cpu)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config field, e.g. --set mvtm_steps=200 (repeatable; "
                             "tuples as 16,32,64, None as none)")
    common.add_argument("--fresh", action="store_true",
                        help="train from scratch instead of resuming the checkpoints in the run folder")
    common.add_argument("--runs", default=None,
                        help=f"folder of run outputs (default: $LABKIT_RUNS or {runs_root()})")
    common.add_argument("--data", default=None,
                        help=f"cache folder of the toy cats (default: $LABKIT_DATA or {data_root()})")
    common.add_argument("--data-root", default=None,
                        help="use the dataset in this folder (the course's layout or any image "
                             "folder) instead of the toy cats")
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the transformer for stage-2 training "
                             "(default: on CUDA only)")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")

    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, text in (("pipeline", "data, both stages, inpainting of the test split, summary"),
                       ("make-data", "render or load the dataset"),
                       ("train-tokenizer", "stage 1: train or resume the VQGAN"),
                       ("train-mvtm", "stage 2: train or resume the transformer"),
                       ("inpaint", "inpaint the test split and print the scores")):
        commands.add_parser(name, parents=[common], help=text, description=text)
    for name, text in (("fid", "FID of a folder of images: python -m labkit fid --help"),
                       ("notebooks", "run the notebook series: python -m labkit notebooks --help"),
                       ("grade", "grade the exercises: python -m labkit grade --help"),
                       ("student", "write the student edition: python -m labkit student --help")):
        commands.add_parser(name, help=text, add_help=False)
    return parser


# ----------------------------------------------------------------------------- --set key=value

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(LabConfig)}
_NONE_WORDS = ("none", "null")
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_as(text: str, annotation: str):
    """``text`` as one value of the type ``annotation`` ("int", "float", "str", "bool",
    "tuple[int, ...]", "int | None"); ValueError when it is none of them."""
    for option in (part.strip() for part in annotation.split("|")):
        if option == "None" and text.strip().lower() in _NONE_WORDS:
            return None
        if option.startswith("tuple["):
            inner = option[len("tuple["):-1].split(",")[0].strip()
            try:
                return tuple(_parse_as(item, inner) for item in text.split(",") if item.strip())
            except ValueError:
                continue
        parsers = {"int": int, "float": float, "str": str, "bool": _BOOL_WORDS.__getitem__}
        if option in parsers:
            try:
                return parsers[option](text.strip().lower() if option == "bool" else text.strip())
            except (KeyError, ValueError):
                continue
    raise ValueError(text)


def parse_overrides(pairs: list[str]) -> dict:
    """``["mvtm_steps=200", "vq_channels=16,32,64"]`` -> {field: value of the field's type}.

    Only the types are checked here; the values are checked by ``LabConfig`` itself.
    """
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set mvtm_steps=200")
        if key == "profile":
            raise ValueError("--set profile=...: choose the profile with --profile")
        if key not in _FIELD_TYPES:
            valid = ", ".join(name for name in _FIELD_TYPES if name != "profile")
            raise ValueError(f"--set {key}: no such config field; valid fields: {valid}")
        annotation = _FIELD_TYPES[key]
        annotation = annotation if isinstance(annotation, str) else annotation.__name__
        try:
            overrides[key] = _parse_as(text, annotation)
        except ValueError:
            raise ValueError(f"--set {key}={text!r}: {key} takes a value of type {annotation} "
                             "(tuples as 16,32,64; None as none)") from None
    return overrides


# ----------------------------------------------------------------------------- the commands

def _main(argv) -> int:
    args = _parser().parse_args(argv)
    cfg = get_config(args.profile or default_profile(), **parse_overrides(args.overrides))
    runs = runs_root(args.runs)
    if runs.exists() and not runs.is_dir():
        raise NotADirectoryError(f"the runs folder {runs} is a file, not a folder: pass a folder "
                                 "as --runs (or $LABKIT_RUNS; it is created if missing), or move "
                                 "the file away")
    device = get_device(args.device)        # a device this machine lacks is refused here
    device = distributed.init(args.device) or device
    try:
        return _run(args, cfg, runs, data_root(args.data), device)
    finally:
        distributed.cleanup()


def _run(args, cfg: LabConfig, runs: Path, data: Path, device) -> int:
    options = RunOptions(device=device, resume=not args.fresh, progress=not args.no_progress,
                         compile=args.compile)
    if args.command == "pipeline":
        run_pipeline(cfg, runs, data, args.data_root, options)
        return 0
    splits = prepare_data(cfg, data, args.data_root, options.progress)
    if not distributed.is_main() and args.command in ("make-data", "inpaint"):
        return 0                            # nothing to share out: rank 0 does it alone
    if args.command == "make-data":
        for split, images in splits.items():
            print(f"{split:5s} {len(images):6d} images  {images.source}")
    elif args.command == "train-tokenizer":
        stage_tokenizer(cfg, splits, runs, options)
    elif args.command == "train-mvtm":
        stage_mvtm(cfg, load_vqgan(run_dir(cfg, runs), cfg, device), splits, runs, options)
    elif args.command == "inpaint":
        maskgit = load_maskgit(run_dir(cfg, runs), cfg, device)
        print(format_table(evaluate_inpainting(cfg, maskgit, splits["test"], runs,
                                               progress=options.progress)))
    return 0


def _tool(name: str):
    """The ``main(argv)`` of a tool with options of its own (imported only when asked for: the
    notebook runner needs the notebook extras)."""
    if name == "fid":
        from ..eval.fid import main
    elif name == "notebooks":
        from .notebook_runner import main
    elif name == "grade":
        from ..teaching.grade import main
    else:
        from ..teaching.student import main
    return main


TOOLS = ("fid", "notebooks", "grade", "student")


def main(argv=None) -> int:
    """``python -m labkit ...``: errors as one message, Ctrl-C as exit 130 (see the docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        # Each tool reports its own errors; its import runs under run_command too, so that a
        # missing extra (the notebook runner's papermill) gets the install hint.
        return run_command(lambda tool_argv: _tool(argv[0])(tool_argv), argv[1:])
    return run_command(_main, argv)
