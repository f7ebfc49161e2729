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

import json
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .config import LabConfig
from .datasets import ImageSet, load_dataset
from .maskgit import MaskGit
from .masks import pixel_to_token_mask
from .metrics import masked_l1, masked_psnr
from .plots import image_grid, plot_history, save_figure, show_reconstructions
from .train import extract_tokens, run_dir, train_mvtm, train_vqgan
from .utils import get_device
from .vqgan import codebook_usage

GAMMA, TOTAL_ITER = "cosine", 8        # the decoding the pipeline reports (the course's default)
N_SHOW = 8                             # images in inpaint_grid.png
ROWS = {                               # table rows: what is compared with the ground truth
    "masked_input": "masked input (grey hole)",
    "vqgan_masked": "VQGAN round trip of the masked input",
    "maskgit_composite": "MaskGIT inpainting (composite)",
    "maskgit_raw": "MaskGIT inpainting (raw decoder output)",
    "vqgan_truth": "VQGAN round trip of the ground truth (ceiling)",
}


def prepare_data(cfg: LabConfig, data: str | Path = "data", data_root: str | Path | None = None
                 ) -> dict[str, ImageSet]:
    """{"train", "val", "test"}: the toy cats (cached under ``data``) or the dataset at
    ``data_root`` (the course's layout or any image folder)."""
    with distributed.main_first():          # under torchrun rank 0 writes the cache, the others read it
        return load_dataset(cfg, data_root, cache_root=data)


def stage_tokenizer(cfg: LabConfig, splits: dict, runs: str | Path = "runs", device=None,
                    progress: bool = True):
    """Stage 1: train (or resume, or load) the VQGAN; writes reconstructions.png."""
    out = run_dir(cfg, runs)
    vqgan, history = train_vqgan(cfg, splits["train"], out, device=device, progress=progress)
    if distributed.is_main():
        shown = splits["val"].tensors(range(min(N_SHOW, len(splits["val"]))))
        save_figure(show_reconstructions(vqgan, shown), out / "reconstructions.png")
    return vqgan, history


def stage_mvtm(cfg: LabConfig, vqgan, splits: dict, runs: str | Path = "runs", device=None,
               progress: bool = True, compile: bool | None = None):
    """Stage 2: encode the train / val images once (cached), then train (or resume, or
    load) the transformer (``compile``: see ``train_mvtm``). Returns (maskgit, history,
    train tokens)."""
    out = run_dir(cfg, runs)
    with distributed.main_first():          # under torchrun rank 0 encodes and caches, the others read
        tokens = extract_tokens(vqgan, splits["train"], cfg, out / "tokens-train.safetensors",
                                progress=progress and distributed.is_main())
        val_tokens = extract_tokens(vqgan, splits["val"], cfg, out / "tokens-val.safetensors",
                                    progress=progress and distributed.is_main())
    maskgit, history = train_mvtm(cfg, vqgan, tokens, out, device=device, progress=progress,
                                  val_tokens=val_tokens, compile=compile)
    return maskgit, history, tokens


@torch.no_grad()
def evaluate_inpainting(cfg: LabConfig, maskgit: MaskGit, test: ImageSet, runs: str | Path = "runs",
                        batch_size: int = 128, progress: bool = True) -> dict:
    """Inpaint every test image in its fixed hole (cosine schedule, T = 8) and score the
    hole against the ground truth; writes inpaint_grid.png.

    Returns {"rows": {row: {hole_l1, hole_psnr, image_l1, image_psnr}}, ...}: means over
    the test images of the masked-region ("hole") and whole-image L1 / PSNR of every
    row of ``ROWS``.
    """
    out = run_dir(cfg, runs)
    maskgit.eval()
    device = maskgit.device
    generator = torch.Generator().manual_seed(cfg.seed)
    scores = {row: {"hole_l1": [], "hole_psnr": [], "image_l1": [], "image_psnr": []} for row in ROWS}
    shown, token_share, pixel_share = None, [], []
    start = time.perf_counter()
    for begin in tqdm(range(0, len(test), batch_size), desc="inpainting", disable=not progress):
        index = range(begin, min(begin + batch_size, len(test)))
        truth, masks = test.tensors(index), test.mask_tensors(index)
        result = maskgit.inpaint(truth, masks, gamma=GAMMA, total_iter=TOTAL_ITER,
                                 choice_temperature=cfg.choice_temperature, generator=generator)
        vqgan = maskgit.vqgan
        outputs = {
            "masked_input": result.masked_input,
            "vqgan_masked": vqgan.decode_indices(vqgan.encode(result.masked_input)[1]),
            "maskgit_composite": result.images,
            "maskgit_raw": result.raw_steps[-1],
            "vqgan_truth": vqgan.decode_indices(vqgan.encode(truth.to(device))[1]),
        }
        everywhere = torch.ones_like(masks)
        for row, images in outputs.items():
            images = images.cpu()
            scores[row]["hole_l1"].append(masked_l1(images, truth, masks))
            scores[row]["hole_psnr"].append(masked_psnr(images, truth, masks))
            scores[row]["image_l1"].append(masked_l1(images, truth, everywhere))
            scores[row]["image_psnr"].append(masked_psnr(images, truth, everywhere))
        token_share.append(pixel_to_token_mask(masks, cfg.downsample).float().mean(1))
        pixel_share.append(masks.float().mean(dim=(1, 2, 3)))
        if shown is None:
            n = min(N_SHOW, len(truth))
            shown = [result.masked_input[:n].cpu(), result.images[:n].cpu(), truth[:n]]
    fig = image_grid(shown, ["masked input", f"MaskGIT ({GAMMA}, T={TOTAL_ITER})", "ground truth"],
                     title=f"held-out test images, profile {cfg.profile}")
    save_figure(fig, out / "inpaint_grid.png")
    rows = {row: {key: float(torch.cat(values).nanmean()) for key, values in parts.items()}
            for row, parts in scores.items()}
    return {"gamma": GAMMA, "total_iter": TOTAL_ITER, "choice_temperature": cfg.choice_temperature,
            "n_images": len(test), "missing_pixels": float(torch.cat(pixel_share).mean()),
            "missing_tokens": float(torch.cat(token_share).mean()),
            "seconds": time.perf_counter() - start, "rows": rows}


def format_table(inpainting: dict) -> str:
    """The inpainting scores as a fixed-width text table."""
    lines = [f"{'':48s} {'hole L1':>8s} {'hole PSNR':>10s} {'image L1':>9s} {'image PSNR':>11s}"]
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


def run_pipeline(cfg: LabConfig, runs: str | Path = "runs", data: str | Path = "data",
                 data_root: str | Path | None = None, device=None, progress: bool = True,
                 compile: bool | None = None) -> dict:
    """Data -> stage 1 -> tokens -> stage 2 -> inpainting of the test split.

    Writes ``runs/<profile>/summary.json`` and the figures, prints the table, returns the
    summary dict. Under torchrun all ranks train; rank 0 alone evaluates and writes, the
    others return None.
    """
    device = get_device(device)
    out = run_dir(cfg, runs)
    splits = prepare_data(cfg, data, data_root)
    vqgan, vq_history = stage_tokenizer(cfg, splits, runs, device, progress)
    maskgit, mvtm_history, tokens = stage_mvtm(cfg, vqgan, splits, runs, device, progress, compile)
    if not distributed.is_main():
        return None
    save_figure(plot_history(vq_history, ["l1", "used_fraction"], title="stage 1: VQGAN"),
                out / "training_curves_vqgan.png")
    keys = ["loss", "accuracy"] + (["val_accuracy"] if "val_accuracy" in mvtm_history[-1] else [])
    save_figure(plot_history(mvtm_history, keys, title="stage 2: MVTM"), out / "training_curves_mvtm.png")
    inpainting = evaluate_inpainting(cfg, maskgit, splits["test"], runs, progress=progress)

    summary = {
        "profile": cfg.profile, "device": str(device), "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(), "world_size": distributed.world_size(),
        "data": {split: {"n": len(s), "source": s.source} for split, s in splits.items()},
        "stage1": {**_stage_summary(vq_history, cfg.vq_steps),
                   "codebook_train": codebook_usage(tokens, cfg.num_codebook_vectors)},
        "stage2": _stage_summary(mvtm_history, cfg.mvtm_steps),
        "inpainting": inpainting,
        "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
        f"{inp['missing_tokens']:.0%} of tokens missing), {inp['gamma']} schedule, "
        f"T={inp['total_iter']}, {inp['seconds']:.0f} s",
        format_table(inp),
    ]
    return "\n".join(lines)


__all__ = ["prepare_data", "stage_tokenizer", "stage_mvtm", "evaluate_inpainting", "run_pipeline",
           "format_table", "format_summary", "ROWS"]
