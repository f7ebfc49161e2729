"""What MaskGIT is for, measured: the cpu profile's training masks chosen on every hole family
and on generation (issues 22 and 25).

    python benchmarks/bench_families.py train families --stop-after 1000   # one variant, resumable
    python benchmarks/bench_families.py score holes families@1000 families  # score trained runs
    python benchmarks/bench_families.py --profile smoke train families && \\
        python benchmarks/bench_families.py --profile smoke score families  # the harness in seconds

Variants (``VARIANTS``): the profile's config with these fields set. ``holes``: the cpu profile
as it was before (brush-stroke training holes, no condition); ``families``: training holes of every family
(``labkit.data.holes.TRAINING_MIXTURE``, the whole grid included) and the toy cats' nine
categorical attributes as the condition, 2,000 stage-2 steps; ``families-seed1``: the same, seed
1 (the noise of a training run). One tokenizer (the profile's) serves them all, trained once
into ``<runs>/families/<profile>/tokenizer``; each variant trains into ``.../<variant>``. With a
flat rate after the warm-up (the cpu profile's), the checkpoint at step 1,000 of a 2,000-step
run is the 1,000-step run's model: ``families@1000`` scores it (``--stop-after`` keeps it).

Scores (``score``), on 256 test cats (the same for every variant):
- every hole family but "everything" (``labkit.eval.families``): FD_catnet, hole L1 and the
  hidden part's attributes for the smooth fill, one shot and iterative decoding (cosine, T = 8,
  argmax and sampled), with the verdicts of MaskGIT against the fill;
- generation from an empty grid (``labkit.eval.generation``): FD_catnet of 256 cats against
  256 validation cats (beside test vs validation, the real-vs-real yardstick), unconditional
  and, for a conditioned model, asked for the 256 test cats' attributes, with guidance 0 and 2;
  CatNet's accuracy on what was asked, against its accuracy on real cats; diversity.
Writes ``scores-<variant>.json`` beside the runs and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import get_config                                               # noqa: E402
from labkit.config import CONDITION_VALUES                                  # noqa: E402
from labkit.core.frechet import SmallSampleWarning, frechet_distance        # noqa: E402
from labkit.data.holes import FAMILIES                                      # noqa: E402
from labkit.data.toycats import condition_ids                               # noqa: E402
from labkit.eval.catnet import attribute_accuracy, catnet_extractor, load_or_train_catnet  # noqa: E402
from labkit.eval.families import family_study                               # noqa: E402
from labkit.eval.generation import chance, generate_images, generation_scores  # noqa: E402
from labkit.lab.checkpoint import load_checkpoint                           # noqa: E402
from labkit.lab.pipeline import prepare_data, stage_tokenizer               # noqa: E402
from labkit.lab.run import RunOptions                                       # noqa: E402
from labkit.lab.training import build_maskgit, extract_tokens, train_mvtm   # noqa: E402
from labkit.lab.utils import runs_root                                      # noqa: E402

VARIANTS = {
    "holes": dict(train_mask="holes", condition=()),    # the cpu profile before issues 22 and 25
    "families": dict(train_mask="families", condition=tuple(CONDITION_VALUES), mvtm_steps=2000),
    "families-seed1": dict(train_mask="families", condition=tuple(CONDITION_VALUES), mvtm_steps=2000, seed=1),
}
N_IMAGES = 256
GUIDANCE = (0.0, 2.0)


def folders(profile: str, runs: Path) -> tuple[Path, Path]:
    root = runs / "families" / profile
    return root, root / "tokenizer"


def train(profile: str, variant: str, runs: Path, stop_after: int | None) -> None:
    base = get_config(profile)
    cfg = base.replace(**VARIANTS[variant])
    root, tokenizer_dir = folders(profile, runs)
    splits = prepare_data(base, None)
    start = time.perf_counter()
    vqgan, _ = stage_tokenizer(base, splits, tokenizer_dir, RunOptions(progress=False))
    print(f"tokenizer ready in {time.perf_counter() - start:.0f} s", flush=True)
    cache = tokenizer_dir / profile
    tokens = {split: extract_tokens(vqgan, splits[split], base, cache / f"tokens-{split}.safetensors")
              for split in ("train", "val")}
    conditions = condition_ids(splits["train"].labels, cfg.condition) if cfg.condition else None
    start, cpu = time.perf_counter(), time.process_time()
    _, history = train_mvtm(cfg, vqgan, tokens["train"], root / variant / profile,
                            RunOptions(progress=False, stop_after=stop_after), val_tokens=tokens["val"],
                            conditions=conditions)
    print(f"{variant}: step {history[-1]['step']}, val accuracy {history[-1].get('val_accuracy', float('nan')):.1%}, "
          f"{(time.perf_counter() - start) / 60:.1f} min ({(time.process_time() - cpu) / 60:.1f} CPU-min)", flush=True)


def load_variant(profile: str, runs: Path, label: str):
    """The MaskGit of ``variant`` or ``variant@step`` (its checkpoint at that step)."""
    variant, _, step = label.partition("@")
    base = get_config(profile)
    cfg = base.replace(**VARIANTS[variant])
    root, tokenizer_dir = folders(profile, runs)
    vqgan_ckpt = load_checkpoint(tokenizer_dir / profile / "vqgan.safetensors", part="vqgan", config=base)
    maskgit = build_maskgit(cfg)
    vqgan_ckpt.load_model("vqgan", maskgit.vqgan)
    ckpt = load_checkpoint(root / variant / profile / "mvtm.safetensors", part="transformer", config=cfg)
    if step and ckpt.step != int(step):
        raise SystemExit(f"{label}: the checkpoint is at step {ckpt.step}, not {step}")
    ckpt.load_model("transformer", maskgit.transformer)
    return cfg, maskgit.eval(), ckpt.step


def score(profile: str, runs: Path, label: str) -> dict:
    cfg, maskgit, step = load_variant(profile, runs, label)
    base = get_config(profile)
    root, tokenizer_dir = folders(profile, runs)
    splits = prepare_data(base, None)
    n = min(N_IMAGES, len(splits["test"]), len(splits["val"]))
    test, val = splits["test"].subset(range(n)), splits["val"].subset(range(n))
    catnet = load_or_train_catnet(base, tokenizer_dir / profile, progress=False)
    extractor = catnet_extractor(catnet)
    out = {"variant": label, "step": step, "n": n, "config": cfg.to_dict()}

    start = time.perf_counter()
    families = [family for family in FAMILIES if family != "everything"]
    study = family_study(maskgit, test, families, [extractor], catnet, n, seed=0, progress=False)
    out["families"] = {family: {method: {metric: result.value(method, metric)
                                         for metric in ("FD_catnet", "hole_l1", *hidden(result))}
                                for method in ("smooth_fill", "one_shot", "argmax", "sampled")}
                       for family, result in study.results.items()}
    out["token_share"] = {family: result.token_share for family, result in study.results.items()}
    out["verdicts"] = study.verdict_lines()
    out["unrelated"] = study.unrelated
    out["families_s"] = time.perf_counter() - start
    print(study.table(), flush=True)

    start = time.perf_counter()
    real = extractor.features(val.tensors())
    out["real_vs_real"] = frechet_distance(extractor.features(test.tensors()), real)
    out["real_accuracy"] = attribute_accuracy(catnet, val.tensors(), val.labels)
    out["chance"] = {name: chance(splits["train"].labels, name) for name in CONDITION_VALUES}
    settings = maskgit.decode_settings(sample=True)
    runs_ = {"unconditional": (None, 0.0)}
    if cfg.condition:
        asked = condition_ids(test.labels, cfg.condition)
        runs_.update({f"asked, guidance {g:g}": (asked, g) for g in GUIDANCE})
    out["generation"] = {}
    for name, (conditions, guidance) in runs_.items():
        images = generate_images(maskgit, n, dataclasses.replace(settings, guidance=guidance), seed=0,
                                 conditions=conditions)
        scores = generation_scores(images, catnet, extractor, val.tensors(), conditions, cfg.condition)
        scores.pop("readings")
        out["generation"][name] = scores
    out["generation_s"] = time.perf_counter() - start
    print(json.dumps({"real_vs_real": out["real_vs_real"], "generation": out["generation"]}, indent=1), flush=True)
    path = root / f"scores-{label.replace('@', '-at')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}", flush=True)
    return out


def hidden(result) -> list[str]:
    from labkit.eval.families import hidden_metrics
    return hidden_metrics(result.family)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--runs", default=None, help="runs root (default: labkit's)")
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train")
    trainer.add_argument("variant", choices=VARIANTS)
    trainer.add_argument("--stop-after", type=int, default=None)
    scorer = commands.add_parser("score")
    scorer.add_argument("labels", nargs="+", help="variants, or variant@step for a kept checkpoint")
    args = parser.parse_args(argv)
    runs = runs_root(args.runs)
    warnings.filterwarnings("ignore", category=SmallSampleWarning)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.command == "train":
        train(args.profile, args.variant, runs, args.stop_after)
    else:
        for label in args.labels:
            score(args.profile, runs, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
