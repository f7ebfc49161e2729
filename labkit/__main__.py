"""Command line: ``python -m labkit <command> --profile cpu``.

    pipeline          everything below, then summary.json and the printed table
    make-data         render (or load) the toy cats and their test masks
    train-tokenizer   stage 1: train or resume the VQGAN
    train-mvtm        stage 2: encode the images once, train or resume the transformer
    inpaint           inpaint the test split with the trained model, print the scores

Every command calls the same functions as the notebooks (``labkit.pipeline``), and
resumes from the checkpoints in ``runs/<profile>/``.

Several GPUs: start the same command with torchrun, one process per GPU
(``torchrun --nproc_per_node=4 -m labkit train-mvtm --profile gpu``). Both training
stages then run with DistributedDataParallel; rank 0 writes every file and prints.
"""

from __future__ import annotations

import argparse
import sys

from . import distributed
from .config import PROFILES, default_profile, get_config
from .pipeline import (evaluate_inpainting, format_table, prepare_data, run_pipeline, stage_mvtm,
                       stage_tokenizer)
from .train import load_maskgit, load_vqgan, run_dir
from .utils import get_device


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default=default_profile(),
                        help="config profile (default: $LABKIT_PROFILE or cpu)")
    common.add_argument("--runs", default="runs", help="folder of run outputs (default: runs)")
    common.add_argument("--data", default="data", help="cache folder of the toy cats (default: data)")
    common.add_argument("--data-root", default=None,
                        help="use the dataset in this folder (the course's layout or any image "
                             "folder) instead of the toy cats")
    common.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the transformer for stage-2 training "
                             "(default: on CUDA only)")

    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, text in (("pipeline", "data, both stages, inpainting of the test split, summary"),
                       ("make-data", "render or load the dataset"),
                       ("train-tokenizer", "stage 1: train or resume the VQGAN"),
                       ("train-mvtm", "stage 2: train or resume the transformer"),
                       ("inpaint", "inpaint the test split and print the scores")):
        commands.add_parser(name, parents=[common], help=text, description=text)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = distributed.init(args.device) or get_device(args.device)
    try:
        return _run(args, device)
    finally:
        distributed.cleanup()


def _run(args, device) -> int:
    cfg = get_config(args.profile)
    progress = not args.no_progress
    if args.command == "pipeline":
        run_pipeline(cfg, args.runs, args.data, args.data_root, device, progress, args.compile)
        return 0
    splits = prepare_data(cfg, args.data, args.data_root)
    if not distributed.is_main() and args.command in ("make-data", "inpaint"):
        return 0                            # nothing to share out: rank 0 does it alone
    if args.command == "make-data":
        for split, images in splits.items():
            print(f"{split:5s} {len(images):6d} images  {images.source}")
    elif args.command == "train-tokenizer":
        stage_tokenizer(cfg, splits, args.runs, device, progress)
    elif args.command == "train-mvtm":
        stage_mvtm(cfg, load_vqgan(run_dir(cfg, args.runs), cfg, device), splits, args.runs,
                   device, progress, args.compile)
    elif args.command == "inpaint":
        maskgit = load_maskgit(run_dir(cfg, args.runs), cfg, device)
        print(format_table(evaluate_inpainting(cfg, maskgit, splits["test"], args.runs,
                                               progress=progress)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
