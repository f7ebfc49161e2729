"""The lab's main job, end to end: data -> stage 1 -> tokens -> stage 2 -> inpainting.

    summary = run_pipeline(get_config("cpu"))      # or: python -m labkit pipeline --profile cpu

Each stage is also a function of its own (the ``python -m labkit`` sub-commands call them,
and so can a notebook). Every stage resumes or loads its checkpoint under
``runs/<profile>/``, so running the pipeline again after a finished run only evaluates.

Files written to ``runs/<profile>/``: vqgan.safetensors / .json, tokens-*.safetensors,
mvtm.safetensors / .json, reconstructions.png, training_curves_vqgan.png,
training_curves_mvtm.png, inpaint_grid.png and summary.json (the table printed at the end).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from . import distributed
from . import utils
from ..config import LabConfig
from ..data.datasets import ImageSet, load_dataset
from ..data.holes import FAMILIES
from ..data.toycats import condition_ids
from ..eval.families import family_holes
from ..eval.scoring import ROWS, gap_closed, inpaint_and_score, mean_scores
from ..core.maskgit import MaskGit
from ..core.masks import pixel_to_token_mask
from ..teaching.plots import image_grid, plot_history, save_figure, show_reconstructions
from .progress import tqdm
from .run import RunOptions
from .training import extract_tokens, train_mvtm, train_vqgan
from .utils import get_device, run_dir
from ..core.vqgan import codebook_usage

N_SHOW = 8                             # images in inpaint_grid.png


def prepare_data(cfg: LabConfig, data: str | Path | None = None, data_root: str | Path | None = None,
                 progress: bool = True) -> dict[str, ImageSet]:
    """{"train", "val", "test"}: the toy cats (cached under ``data``, default
    ``labkit.lab.utils.data_root()``; ``progress``: a bar while they are rendered) or the
    dataset at ``data_root`` (the course's layout or any image folder)."""
    with distributed.main_first():          # under torchrun rank 0 writes the cache, the others read it
        return load_dataset(cfg, data_root, cache_root=utils.data_root(data), progress=progress)


def conditions_of(cfg: LabConfig, images: ImageSet):
    """(n, A) the attribute ids a conditioned transformer (``cfg.condition``) trains on, from the
    images' labels; None for an unconditioned one."""
    return condition_ids(images.labels, cfg.condition) if cfg.condition else None


def stage_tokenizer(cfg: LabConfig, splits: dict, runs: str | Path | None = None,
                    options: RunOptions | None = None):
    """Stage 1: train (or resume, or load) the VQGAN; writes reconstructions.png."""
    out = run_dir(cfg, runs)
    vqgan, history = train_vqgan(cfg, splits["train"], out, options)
    if distributed.is_main():
        shown = splits["val"].tensors(range(min(N_SHOW, len(splits["val"]))))
        save_figure(show_reconstructions(vqgan, shown), out / "reconstructions.png")
    return vqgan, history


def stage_mvtm(cfg: LabConfig, vqgan, splits: dict, runs: str | Path | None = None,
               options: RunOptions | None = None):
    """Stage 2: encode the train / val images once (cached), then train (or resume, or load)
    the transformer. Returns (maskgit, history, train tokens)."""
    options = options or RunOptions()
    out = run_dir(cfg, runs)
    tokens = {}
    with distributed.main_first():          # under torchrun rank 0 encodes and caches, the others read
        for split in tqdm(("train", "val"), desc="encoding", unit="split",
                          disable=not (options.progress and distributed.is_main())):
            tokens[split] = extract_tokens(vqgan, splits[split], cfg, out / f"tokens-{split}.safetensors")
    source = f"tokens of {getattr(splits['train'], 'source', 'the training images')}"
    conditions = conditions_of(cfg, splits["train"])
    maskgit, history = train_mvtm(cfg, vqgan, tokens["train"], out,
                                  dataclasses.replace(options, data_source=source),
                                  val_tokens=tokens["val"], conditions=conditions)
    return maskgit, history, tokens["train"]


@torch.no_grad()
def evaluate_inpainting(cfg: LabConfig, maskgit: MaskGit, test: ImageSet, runs: str | Path | None = None,
                        batch_size: int = 128, progress: bool = True) -> dict:
    """Inpaint every test image in its fixed hole with the config's decoding settings and
    score it against the ground truth (``labkit.eval.scoring``); writes inpaint_grid.png.

    Returns {"settings": the decoding settings, "rows": {row: {hole_l1, hole_psnr, image_l1,
    image_psnr}}, ...}: means over the test images of every row of ``ROWS``.
    """
    test.require_ground_truth()
    out = run_dir(cfg, runs)
    maskgit.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    scored = inpaint_and_score(maskgit, test.tensors(), test.mask_tensors(), generator=generator,
                               batch_size=batch_size)
    batches = list(tqdm(scored, desc="inpainting", total=-(-len(test) // batch_size), disable=not progress))
    masks = torch.cat([scored.pixel_masks for scored in batches])
    first = batches[0]
    n = min(N_SHOW, len(first.truth))
    settings = first.settings
    fig = image_grid([first.rows["masked_input"][:n], first.rows["maskgit"][:n], first.truth[:n]],
                     ["masked input", "MaskGIT", "ground truth"],
                     title=f"held-out test images, profile {cfg.profile}; {settings}")
    save_figure(fig, out / "inpaint_grid.png")
    rows = mean_scores(batches)
    hole_l1 = {row: rows[row]["hole_l1"] for row in rows}
    return {"settings": settings.to_dict(), "n_images": len(test),
            "missing_pixels": float(masks.float().mean()),
            "missing_tokens": float(pixel_to_token_mask(masks, cfg.downsample).float().mean()),
            "seconds": time.perf_counter() - start, "rows": rows,
            "gap_closed": gap_closed(hole_l1["masked_input"], hole_l1["maskgit"], hole_l1["tokenizer_ceiling"])}


FAMILY_IMAGES = 256                    # test cats per hole family in the pipeline's table


@torch.no_grad()
def evaluate_families(cfg: LabConfig, maskgit: MaskGit, test: ImageSet, progress: bool = True) -> dict:
    """Hole L1 of MaskGIT (the config's decoding) and of the smooth fill on the first
    ``FAMILY_IMAGES`` test cats, in a hole of every family of ``labkit.data.holes`` but
    "everything": {family: {"missing_tokens", "maskgit", "smooth_fill"}}. Hole L1 cannot see
    structure (a blur scores well): notebook 05 adds FD_catnet and the hidden attributes."""
    test = test.subset(range(min(FAMILY_IMAGES, len(test))))
    out = {}
    for family in tqdm([f for f in FAMILIES if f != "everything"], desc="hole families", disable=not progress):
        masks = family_holes(test, family, cfg.data_seed)[:, None]
        batches = list(inpaint_and_score(maskgit, test.tensors(), masks, generator=torch.Generator().manual_seed(cfg.seed),
                                         decode_every_step=False))
        rows = mean_scores(batches)
        out[family] = {"missing_tokens": float(pixel_to_token_mask(masks, cfg.downsample).float().mean()),
                       "maskgit": rows["maskgit"]["hole_l1"], "smooth_fill": rows["smooth_fill"]["hole_l1"]}
    return out


def format_families(families: dict) -> str:
    lines = [f"hole L1 per hole family ({FAMILY_IMAGES} test cats; FD_catnet and the hidden parts: notebook 05)",
             f"{'family':>10} {'tokens':>7} {'MaskGIT':>8} {'smooth fill':>12}"]
    for family, row in families.items():
        lines.append(f"{family:>10} {row['missing_tokens']:>7.0%} {row['maskgit']:>8.4f} {row['smooth_fill']:>12.4f}")
    return "\n".join(lines)


def format_table(inpainting: dict) -> str:
    """The inpainting scores as a fixed-width text table, under the settings that gave them."""
    s = inpainting["settings"]
    stop = "" if s["sweet_spot"] == s["total_iter"] else f", t*={s['sweet_spot']}"
    lines = [f"decoding: {s['gamma']} schedule, T={s['total_iter']}{stop}, choice temperature "
             f"{s['choice_temperature']:g}, {'sampled' if s['sample'] else 'argmax'} tokens; MaskGIT closes "
             f"{inpainting['gap_closed']:.0%} of the hole-L1 gap between the masked input and the tokenizer's ceiling",
             f"{'':48s} {'hole L1':>8s} {'hole PSNR':>10s} {'image L1':>9s} {'image PSNR':>11s}"]
    for row, label in ROWS.items():
        s = inpainting["rows"][row]
        lines.append(f"{label:48s} {s['hole_l1']:8.4f} {s['hole_psnr']:7.2f} dB {s['image_l1']:9.4f} "
                     f"{s['image_psnr']:8.2f} dB")
    return "\n".join(lines)


def _stage_summary(history: list, steps: int) -> dict:
    final = history[-1] if history else {}
    seconds = final.get("elapsed_s", float("nan"))
    return {"steps": steps, "seconds": seconds, "sec_per_step": seconds / max(steps, 1),
            "final": final}


def run_pipeline(cfg: LabConfig, runs: str | Path | None = None, data: str | Path | None = None,
                 data_root: str | Path | None = None, options: RunOptions | None = None) -> dict:
    """Data -> stage 1 -> tokens -> stage 2 -> inpainting of the test split.

    ``runs`` / ``data`` default to ``labkit.lab.utils.runs_root()`` / ``data_root()``; ``options``:
    the device, resume (False: both stages from scratch), progress bars, compile. Writes
    ``<runs>/<profile>/summary.json`` and the figures, prints the table, returns the summary dict.
    Under torchrun all ranks train; rank 0 alone evaluates and writes, the others return None.
    """
    options = options or RunOptions()
    device = get_device(options.device)
    options = dataclasses.replace(options, device=device)
    out = run_dir(cfg, runs)
    splits = prepare_data(cfg, data, data_root, options.progress)
    splits["test"].require_ground_truth()          # before hours of training, not after
    vqgan, vq_history = stage_tokenizer(cfg, splits, runs, options)
    maskgit, mvtm_history, tokens = stage_mvtm(cfg, vqgan, splits, runs, options)
    if not distributed.is_main():
        return None
    save_figure(plot_history(vq_history, ["l1", "used_fraction"], title="stage 1: VQGAN"),
                out / "training_curves_vqgan.png")
    keys = ["loss", "accuracy"] + (["val_accuracy"] if "val_accuracy" in mvtm_history[-1] else [])
    save_figure(plot_history(mvtm_history, keys, title="stage 2: MVTM"), out / "training_curves_mvtm.png")
    inpainting = evaluate_inpainting(cfg, maskgit, splits["test"], runs, progress=options.progress)
    families = evaluate_families(cfg, maskgit, splits["test"], options.progress) if splits["test"].labels else {}

    summary = {
        "profile": cfg.profile, "device": str(device), "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(), "world_size": distributed.world_size(),
        "data": {split: {"n": len(s), "source": s.source} for split, s in splits.items()},
        "stage1": {**_stage_summary(vq_history, cfg.vq_steps),
                   "codebook_train": codebook_usage(tokens, cfg.num_codebook_vectors)},
        "stage2": _stage_summary(mvtm_history, cfg.mvtm_steps),
        "train_minutes": (_stage_summary(vq_history, cfg.vq_steps)["seconds"]
                          + _stage_summary(mvtm_history, cfg.mvtm_steps)["seconds"]) / 60,
        "inpainting": inpainting,
        "families": families,
        "config": cfg.to_dict(),
    }
    utils.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    """The printed report of ``run_pipeline``: stage times, codebook use and the table."""
    s1, s2, inp = summary["stage1"], summary["stage2"], summary["inpainting"]
    usage = s1["codebook_train"]
    lines = [
        f"profile {summary['profile']} on {summary['device']}",
        f"stage 1 (VQGAN): {s1['steps']} steps in {s1['seconds'] / 60:.1f} min "
        f"({s1['sec_per_step']:.2f} s/step), recon L1 {s1['final'].get('l1', float('nan')):.4f}, "
        f"codebook: {usage['codes_used']} codes used ({usage['used_fraction']:.0%}), "
        f"perplexity {usage['perplexity']:.0f}",
        f"stage 2 (MVTM):  {s2['steps']} steps in {s2['seconds'] / 60:.1f} min "
        f"({s2['sec_per_step']:.2f} s/step), loss {s2['final'].get('loss', float('nan')):.3f}, "
        f"masked-token accuracy {s2['final'].get('accuracy', float('nan')):.1%} (train), "
        f"{s2['final'].get('val_accuracy', float('nan')):.1%} (val)",
        f"inpainting {inp['n_images']} test images ({inp['missing_pixels']:.0%} of pixels, "
        f"{inp['missing_tokens']:.0%} of tokens missing), {inp['seconds']:.0f} s",
        format_table(inp),
        *([format_families(summary["families"])] if summary.get("families") else []),
    ]
    return "\n".join(lines)


__all__ = ["prepare_data", "conditions_of", "stage_tokenizer", "stage_mvtm", "evaluate_inpainting", "evaluate_families",
           "run_pipeline", "format_table", "format_families", "format_summary"]
