"""Fingerprints of the lab's behaviour on the smoke profile: run before and after a change that
must not change any number (a refactor), and compare the two outputs line by line.

    python benchmarks/fingerprints.py > before.txt
    ... change the code ...
    python benchmarks/fingerprints.py > after.txt && diff before.txt after.txt

Each line is one thing a user relies on: the weights of both training stages (random, hole and
mixed training masks), the decoded tokens of argmax and sampled decoding, the pixels of an
inpainting, and every row of a sweep (FD_catnet, hole scores, attribute agreement).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import torch

from labkit import default_extractors, extract_tokens, get_config, toy_cats, train_mvtm, train_vqgan
from labkit.eval.sweep import SweepPlan, sweep
from labkit.lab.run import RunOptions
from labkit.lab.utils import fingerprint


def digest(values) -> str:
    return hashlib.blake2b(repr(values).encode(), digest_size=12).hexdigest()


def main() -> int:
    torch.set_num_threads(1)          # the same reductions whatever the machine's core count
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        cfg = get_config("smoke")
        splits = {split: toy_cats(cfg, split, root / "data", progress=False)
                  for split in ("train", "val", "test")}
        vqgan, history = train_vqgan(cfg, splits["train"], root / "runs", RunOptions(progress=False))
        print("stage 1 weights", fingerprint(vqgan), "final loss", f"{history[-1]['loss']:.6f}")
        tokens = extract_tokens(vqgan, splits["train"], cfg)
        val_tokens = extract_tokens(vqgan, splits["val"], cfg)
        print("tokens", fingerprint(tokens))
        models = {}
        for train_mask in ("random", "holes", "mixed"):
            run_cfg = cfg.replace(train_mask=train_mask)
            maskgit, history = train_mvtm(run_cfg, vqgan, tokens, root / f"runs-{train_mask}",
                                          RunOptions(progress=False), val_tokens=val_tokens)
            models[train_mask] = maskgit
            print(f"stage 2 ({train_mask}) weights", fingerprint(maskgit.transformer),
                  "history", digest([sorted((k, v) for k, v in e.items() if k != "elapsed_s")
                                     for e in history]))
        maskgit = models["random"]
        test = splits["test"]
        images, masks = test.tensors(), test.mask_tensors()
        for sample in (False, True):
            for gamma in ("linear", "cosine", "square"):
                generator = torch.Generator().manual_seed(7)
                result = maskgit.inpaint(images, masks, maskgit.decode_settings(gamma, sample=sample), generator)
                print(f"decode {gamma} sample={sample}", fingerprint(result.trace.predictions),
                      "masks", fingerprint(result.trace.still_masked), "pixels", fingerprint(result.images))
        extractors, catnet = default_extractors(cfg, root / "runs", progress=False, data=root / "data")
        result = sweep(maskgit, images, masks, SweepPlan(schedules=("linear", "cosine"), total_iters=(2, 4)),
                       extractors, catnet, splits["val"].tensors(range(16)), progress=False)
        for row in result.rows:
            keys = ("method", "schedule", "T", "t", "composite", "metric")
            print("sweep", *(row[k] for k in keys), f"{row['value']:.10g}", row["n"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
