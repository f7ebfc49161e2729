"""Inpainting quality against CPU minutes: a profile with one thing changed at a time (issue 12).

    python benchmarks/bench_quality.py --list                        # the variants
    python benchmarks/bench_quality.py --profile cpu                 # the study (hours, idle machine)
    python benchmarks/bench_quality.py --only baseline --scale 0.1   # a quick proxy of one variant
    python benchmarks/bench_quality.py --profile smoke               # the whole harness in seconds
    python benchmarks/bench_quality.py --score runs/cpu --catnet runs/cpu/catnet.safetensors
                                                                     # score finished models only

Each variant is the profile's config with one thing changed (``baseline``: nothing): one
field, or two that make one change (``lr-plateau``: the hold and the floor it decays to;
``batch-half-steps-x2``, ``budget-to-stage2``: the same compute spent another way);
``fill-smooth`` trains nothing: the baseline's model, decoded with the hole filled smoothly
from its edges before it is encoded (``MaskGit.inpaint(fill="smooth")``) instead of grey.
It trains stage 1 into ``<runs>/quality/<tag>/stage1-<hash>/`` (a variant whose stage-1
fields equal another's reuses that tokenizer and its token caches) and stage 2 into
``<runs>/quality/<tag>/<variant>/``; both resume when run again. ``<tag>`` is the
profile, plus ``-scale<s>`` when ``--scale`` shrinks the steps (warmup too) for a proxy.

Scores, on the profile's test cats in their fixed holes, decoded with the config's
settings (``labkit.eval.scoring.inpaint_and_score``, as in the pipeline's table):

    hole_l1, hole_psnr   MaskGIT composite (the raw decode has the same pixels in the hole)
    l1_masked_input, l1_tokenizer_ceiling   the two ends of the gap
    l1_smooth_fill       the hole filled smoothly from its edges, no learning (the yardstick)
    gap_closed           (l1_masked_input - hole_l1) / (l1_masked_input - l1_tokenizer_ceiling)
    token_accuracy       one transformer pass on the test tokens under the test holes
    val_accuracy         stage 2's last validation (random training masks)
    FD_catnet            composite and raw, and raw for every baseline row, against the
                         real test images (CatNet of ``labkit.eval.sweep.default_extractors``)
    stage1_min, stage2_min   training minutes from the runs' own logs (elapsed_s)
    stage1_cpu_min, stage2_cpu_min   process CPU minutes, when trained by this call

Writes ``results.json`` and ``results.csv`` beside the runs (or to ``--out``) and prints
a table. Minutes are only comparable between variants measured on the same idle machine.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import get_config                                        # noqa: E402
from labkit.config import LabConfig                                  # noqa: E402
from labkit.data.datasets import toy_cats                                 # noqa: E402
from labkit.eval.scoring import ROWS, gap_closed, inpaint_and_score, mean_scores   # noqa: E402
from labkit.core.frechet import FeatureStats, frechet_distance             # noqa: E402
from labkit.core.masks import pixel_to_token_mask                         # noqa: E402
from labkit.lab.training import extract_tokens, load_maskgit, train_mvtm, train_vqgan   # noqa: E402
from labkit.lab.pipeline import conditions_of                            # noqa: E402
from labkit.lab.utils import runs_root                                   # noqa: E402
from labkit.lab.run import RunOptions  # noqa: E402

# Fields stage 1 never reads: variants that differ only in these share one tokenizer.
STAGE2_FIELDS = ("dim", "num_layers", "num_heads", "mlp_dim", "dropout", "attn_drop", "mvtm_steps",
                 "mvtm_batch_size", "mvtm_lr", "mvtm_lr_floor", "mvtm_lr_hold", "train_mask", "loss", "label_smoothing", "train_gamma", "gamma_type",
                 "total_iter", "choice_temperature", "sweet_spot", "catnet_channels", "catnet_steps",
                 "catnet_batch_size", "catnet_lr", "catnet_degrade", "n_val", "n_test")

# Variants that train nothing: the base model, decoded another way ({inpaint argument: value}).
DECODE_VARIANTS = {
    "fill-smooth": ("decode with the hole filled smoothly from its edges before encoding, not grey",
                    {"fill": "smooth"}),
}

# Variants that train stage 2 only, on the base's tokenizer, although their field (the seed)
# is one stage 1 reads too: they measure how much stage 2 alone moves between seeds.
STAGE2_ONLY = ("mvtm-seed-1",)

# name: (what changes, the one override as a function of the profile's config)
VARIANTS = {
    "baseline": ("the profile as it is", lambda c: {}),
    "codebook-half": ("codebook K / 2 (cpu: 256)", lambda c: {"num_codebook_vectors": c.num_codebook_vectors // 2}),
    "codebook-quarter": ("codebook K / 4 (cpu: 128)", lambda c: {"num_codebook_vectors": c.num_codebook_vectors // 4}),
    "tokenizer-wide": ("tokenizer channels x 2", lambda c: {"vq_channels": tuple(2 * w for w in c.vq_channels)}),
    "tokenizer-steps-x2": ("stage-1 steps x 2", lambda c: {"vq_steps": 2 * c.vq_steps}),
    "transformer-wide": ("transformer dim x 2", lambda c: {"dim": 2 * c.dim}),
    "transformer-deep": ("transformer layers x 2", lambda c: {"num_layers": 2 * c.num_layers}),
    "transformer-shallow": ("transformer layers / 2", lambda c: {"num_layers": max(1, c.num_layers // 2)}),
    "head-dim-32": ("heads = dim / 32 (cpu: 4 heads of 32)", lambda c: {"num_heads": max(1, c.dim // 32)}),
    "mvtm-steps-x2": ("stage-2 steps x 2", lambda c: {"mvtm_steps": 2 * c.mvtm_steps}),
    "mvtm-steps-x1.6": ("stage-2 steps x 1.6 (with two layers: about the four-layer budget)",
                        lambda c: {"mvtm_steps": round(1.6 * c.mvtm_steps)}),
    "batch-half-steps-x2": ("stage-2 batch / 2 and steps x 2: the same images seen, twice the updates",
                            lambda c: {"mvtm_batch_size": max(1, c.mvtm_batch_size // 2),
                                       "mvtm_steps": 2 * c.mvtm_steps}),
    "budget-to-stage2": ("stage-1 steps / 2 and stage-2 steps x 1.4: the budget moved to the transformer",
                         lambda c: {"vq_steps": max(1, c.vq_steps // 2), "mvtm_steps": round(1.4 * c.mvtm_steps)}),
    "mvtm-lr-half": ("stage-2 peak learning rate / 2", lambda c: {"mvtm_lr": c.mvtm_lr / 2}),
    "mvtm-lr-double": ("stage-2 peak learning rate x 2", lambda c: {"mvtm_lr": c.mvtm_lr * 2}),
    "lr-to-zero": ("stage-2 cosine to 0 (pitfall 8's aggressive decay)", lambda c: {"mvtm_lr_floor": 0.0}),
    "lr-flat": ("stage-2 rate flat after warmup (no decay)", lambda c: {"mvtm_lr_floor": 1.0}),
    "lr-cosine-10": ("stage-2 cosine to 10 % of the peak (the default decay)",
                     lambda c: {"mvtm_lr_floor": 0.1}),
    "lr-plateau": ("stage-2 rate held at the peak for 80 % of the steps after the warmup, then a "
                   "cosine to 10 % (warmup, plateau, decay)",
                   lambda c: {"mvtm_lr_hold": 0.8, "mvtm_lr_floor": min(c.mvtm_lr_floor, 0.1)}),
    "train-masks-swap": ("training masks: random <-> holes (brush strokes like the test's)",
                         lambda c: {"train_mask": "random" if c.train_mask == "holes" else "holes"}),
    "train-mixed": ("half random masks, half brush-stroke holes", lambda c: {"train_mask": "mixed"}),
    "no-label-smoothing": ("label smoothing 0", lambda c: {"label_smoothing": 0.0}),
    "label-smoothing-0.2": ("label smoothing 0.2", lambda c: {"label_smoothing": 0.2}),
    "data-half": ("training images / 2", lambda c: {"n_train": max(1, c.n_train // 2)}),
    "data-x2": ("training images x 2", lambda c: {"n_train": 2 * c.n_train}),
    "seed-1": ("both stages again with seed + 1 (the noise of a row that retrains the tokenizer)",
               lambda c: {"seed": c.seed + 1}),
    "mvtm-seed-1": ("stage 2 again with seed + 1, on the base's tokenizer (seed noise)",
                    lambda c: {"seed": c.seed + 1}),
}
COLUMNS = ("variant", "override", "hole_l1", "hole_psnr", "gap_closed", "token_accuracy", "val_accuracy",
           "FD_catnet_composite", "FD_catnet_raw", "FD_catnet_raw_tokenizer_ceiling",
           "FD_catnet_raw_masked_input", "FD_catnet_raw_vqgan_masked", "FD_catnet_raw_smooth_fill",
           "l1_masked_input", "l1_tokenizer_ceiling", "l1_smooth_fill", "stage1_min", "stage2_min",
           "stage1_cpu_min", "stage2_cpu_min",
           "catnet_hash", "stage1_run", "stage2_run")


def variant_config(base: LabConfig, name: str, scale: float = 1.0) -> tuple[LabConfig, dict]:
    """(config, the override) of the variant ``name``; ``scale`` shrinks both stages' steps
    and warmup (at least one step) after the override."""
    if name in DECODE_VARIANTS:
        name = "baseline"
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from "
                         f"{', '.join([*VARIANTS, *DECODE_VARIANTS])}")
    override = VARIANTS[name][1](base)
    cfg = base.replace(**override)
    if scale != 1.0:
        cfg = cfg.replace(vq_steps=max(1, round(cfg.vq_steps * scale)),
                          mvtm_steps=max(1, round(cfg.mvtm_steps * scale)),
                          warmup_steps=round(cfg.warmup_steps * scale))
    return cfg, override


def stage1_key(cfg: LabConfig) -> str:
    """A short hash of every field stage 1 reads: equal keys share a tokenizer."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in STAGE2_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _minutes(history: list) -> float:
    return history[-1]["elapsed_s"] / 60 if history else float("nan")


def train_variant(cfg: LabConfig, folder: Path, data=None, device=None, progress: bool = False,
                  stage1_cfg: LabConfig | None = None):
    """Stage 1 (shared by equal stage-1 fields) and stage 2 of one variant, resumed if there.
    ``stage1_cfg`` (default ``cfg``) is the config the tokenizer is trained with.
    Returns (maskgit, facts): run folders, minutes from the logs, CPU minutes when trained now."""
    stage1_cfg = stage1_cfg or cfg
    splits = {split: toy_cats(cfg, split, data, progress=progress) for split in ("train", "val")}
    stage1 = folder.parent / f"stage1-{stage1_key(stage1_cfg)}"
    cpu = time.process_time()
    vqgan, vq_history = train_vqgan(stage1_cfg, splits["train"], stage1, options=RunOptions(device=device, progress=progress))
    stage1_cpu = (time.process_time() - cpu) / 60
    tokens = {split: extract_tokens(vqgan, splits[split], cfg, stage1 / f"tokens-{split}.safetensors")
              for split in splits}
    cpu = time.process_time()
    options = RunOptions(device=device, progress=progress, data_source=f"tokens of {splits['train'].source}")
    maskgit, history = train_mvtm(cfg, vqgan, tokens["train"], folder, options, val_tokens=tokens["val"],
                                  conditions=conditions_of(cfg, splits["train"]))
    stage2_cpu = (time.process_time() - cpu) / 60
    final = history[-1] if history else {}
    return maskgit, {"stage1_run": str(stage1), "stage2_run": str(folder),
                     "stage1_min": _minutes(vq_history), "stage2_min": _minutes(history),
                     "stage1_cpu_min": stage1_cpu, "stage2_cpu_min": stage2_cpu,
                     "val_accuracy": final.get("val_accuracy", float("nan"))}


@torch.no_grad()
def score(cfg: LabConfig, maskgit, test, extractors, batch_size: int = 128,
          fill: float | str = 0.5) -> dict:
    """Every metric of the study for one trained model on ``test`` (an ImageSet with masks),
    decoded with the hole encoded as ``fill`` (``MaskGit.inpaint``)."""
    maskgit.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    batches, features, correct, counted = [], {}, 0, 0
    for scored in inpaint_and_score(maskgit, test.tensors(), test.mask_tensors(),
                                    maskgit.decode_settings(fill=fill), generator, batch_size=batch_size):
        batches.append(scored)
        for extractor in extractors:
            for row, images in scored.rows.items():
                features.setdefault((extractor.metric, row), []).append(extractor.features(images))
            features.setdefault((extractor.metric, "truth"), []).append(extractor.features(scored.truth))
        # masked-token accuracy: one pass over the true tokens with the test holes masked
        _, z = maskgit.encode_to_z(scored.truth.to(maskgit.device))
        hole = pixel_to_token_mask(scored.pixel_masks, cfg.downsample).to(z.device)
        predicted = maskgit.transformer(z.masked_fill(hole, cfg.mask_token_id)).argmax(-1)
        correct += int((predicted == z)[hole].sum())
        counted += int(hole.sum())
    rows = mean_scores(batches)
    out = {"hole_l1": rows["maskgit"]["hole_l1"], "hole_psnr": rows["maskgit"]["hole_psnr"],
           "l1_masked_input": rows["masked_input"]["hole_l1"],
           "l1_tokenizer_ceiling": rows["tokenizer_ceiling"]["hole_l1"],
           "l1_smooth_fill": rows["smooth_fill"]["hole_l1"],
           "token_accuracy": correct / max(counted, 1), "rows": rows, "n_images": len(test)}
    out["gap_closed"] = gap_closed(out["l1_masked_input"], out["hole_l1"], out["l1_tokenizer_ceiling"])
    for extractor in extractors:
        metric = extractor.metric
        truth = FeatureStats.from_features(np.concatenate(features[(metric, "truth")]))
        fd = {row: frechet_distance(np.concatenate(features[(metric, row)]), truth) for row in ROWS}
        out[f"{metric}_composite"], out[f"{metric}_raw"] = fd["maskgit"], fd["maskgit_raw"]
        for row in ("tokenizer_ceiling", "masked_input", "vqgan_masked", "smooth_fill"):
            out[f"{metric}_raw_{row}"] = fd[row]
        out[f"{metric.lower()}_hash"] = extractor.checkpoint_hash
    return out


def format_table(results: list[dict]) -> str:
    shown = ("hole_l1", "hole_psnr", "gap_closed", "token_accuracy", "val_accuracy", "FD_catnet_composite",
             "FD_catnet_raw", "stage1_min", "stage2_min")
    heads = ("hole L1", "PSNR", "gap", "tok acc", "val acc", "FD comp", "FD raw", "s1 min", "s2 min")
    lines = [f"{'variant':22s} {'override':34s} " + " ".join(f"{h:>8s}" for h in heads)]
    for r in results:
        cells = " ".join(f"{r.get(k, float('nan')):8.3f}" for k in shown)
        lines.append(f"{r['variant']:22s} {r['override'][:34]:34s} {cells}")
    return "\n".join(lines)


def write(results: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)


def run_study(profile: str = "cpu", names=None, scale: float = 1.0, runs=None, data=None,
              device=None, out=None, catnet=None, progress: bool = False, base_overrides=None) -> list[dict]:
    """Train (or resume) and score every variant of ``names`` (default all); returns the rows.
    ``base_overrides`` ({field: value}) moves the base the variants start from (a second round)."""
    from labkit.eval.sweep import default_extractors

    base_overrides = base_overrides or {}
    base = get_config(profile, **base_overrides)
    tag = profile + "".join(f"+{key}={value}" for key, value in sorted(base_overrides.items()))
    tag += "" if scale == 1.0 else f"-scale{scale:g}"
    root = runs_root(runs) / "quality" / tag
    extractors = _extractors(base, runs, device, data, catnet, progress, default_extractors)
    test = toy_cats(base, "test", data, progress=progress)
    results = []
    for name in names or [*VARIANTS, *DECODE_VARIANTS]:
        cfg, override = variant_config(base, name, scale)
        if name != "baseline" and override and cfg == variant_config(base, "baseline", scale)[0]:
            print(f"{name}: {override} is the base already; skipped (run baseline)", flush=True)
            continue
        stage1_cfg = variant_config(base, "baseline", scale)[0] if name in STAGE2_ONLY else None
        decoding = DECODE_VARIANTS[name][1] if name in DECODE_VARIANTS else {}
        folder = root / ("baseline" if decoding else name)
        maskgit, facts = train_variant(cfg, folder, data, device, progress, stage1_cfg)
        override = {**override, **decoding}
        row = {"variant": name, "override": json.dumps(override, default=list) if override else "none",
               **facts, **score(cfg, maskgit, test, extractors, **decoding)}
        row["catnet_hash"] = row.pop("fd_catnet_hash", "")
        results.append(row)
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    write(results, Path(out) if out else root)
    return results


def _extractors(cfg, runs, device, data, catnet, progress, default_extractors):
    if catnet is None:
        from labkit.lab.utils import run_dir
        return default_extractors(cfg, run_dir(cfg, runs), device, progress=progress, data=data)[0]
    from labkit.eval.catnet import catnet_extractor, load_catnet
    return [catnet_extractor(load_catnet(catnet, device=device), device)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run this variant (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="move the base config before the one-field variants (repeatable), "
                             "e.g. --set train_mask=holes; runs go under quality/<profile>+KEY=VALUE")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the steps for a quick proxy")
    parser.add_argument("--runs", help="runs root (default: labkit.lab.utils.runs_root())")
    parser.add_argument("--data", help="toy-cat cache (default: labkit.lab.utils.data_root())")
    parser.add_argument("--device")
    parser.add_argument("--out", help="folder for results.json / results.csv")
    parser.add_argument("--catnet", help="a CatNet checkpoint to score with instead of the profile's")
    parser.add_argument("--score", metavar="RUN_DIR",
                        help="only score the finished vqgan / mvtm of RUN_DIR (no training)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (what, _) in [*VARIANTS.items(), *DECODE_VARIANTS.items()]:
            print(f"{name:22s} {what}")
        return
    if args.score:
        cfg = get_config(args.profile)
        from labkit.eval.sweep import default_extractors
        extractors = _extractors(cfg, args.runs, args.device, args.data, args.catnet, False, default_extractors)
        result = {"variant": "scored", "override": args.score, **score(
            cfg, load_maskgit(args.score, cfg, args.device), toy_cats(cfg, "test", args.data, progress=False),
            extractors)}
        result["catnet_hash"] = result.pop("fd_catnet_hash", "")
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
        if args.out:
            write([result], Path(args.out))
        return
    if args.scale <= 0:
        parser.error(f"--scale {args.scale}: expected a number > 0")
    from labkit.lab.cli import parse_overrides
    results = run_study(args.profile, args.only, args.scale, args.runs, args.data, args.device,
                        args.out, args.catnet, base_overrides=parse_overrides(args.overrides))
    print(format_table(results))


if __name__ == "__main__":
    main()
