"""MaskGIT's speed argument, measured: T passes of the transformer against one pass per token.

    python benchmarks/bench_passes.py                      # cpu profile, this machine
    python benchmarks/bench_passes.py --profile gpu --device cuda

A sequential (autoregressive) decoder must run its transformer once per token: N = 256
passes for a 16 x 16 grid. MaskGIT reveals many tokens per pass: T = 8 passes. Both are timed
here with the same transformer, from an empty grid (generation): MaskGIT's cosine schedule
with T = 8, and the linear schedule with T = N, which reveals exactly one token per pass
(m_t = N - t). Weights do not change the time, so an untrained model of the profile's sizes is
used. Prints images per second and the ratio; the pixels are not decoded (the VQGAN decoder
costs the same for both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import MaskGit, get_config       # noqa: E402
from labkit.lab.utils import get_device      # noqa: E402


def images_per_second(maskgit, settings, batch: int, repeats: int) -> float:
    z = torch.zeros(batch, maskgit.num_image_tokens, dtype=torch.long, device=maskgit.device)
    mask = torch.ones_like(z, dtype=torch.bool)
    maskgit.inpaint_tokens(z, mask, settings)                        # warm-up
    times = []
    for _ in range(repeats):
        if maskgit.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        maskgit.inpaint_tokens(z, mask, settings)
        if maskgit.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = get_config(args.profile)
    device = get_device(args.device)
    torch.manual_seed(0)
    maskgit = MaskGit(cfg).to(device).eval()
    n = cfg.num_image_tokens
    parallel = images_per_second(maskgit, maskgit.decode_settings("cosine", 8), args.batch, args.repeats)
    sequential = images_per_second(maskgit, maskgit.decode_settings("linear", n), args.batch, max(1, args.repeats // 3))
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"| profile | device | threads | batch | MaskGIT, T = 8 | one token per pass, T = {n} | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"| {cfg.profile} | {device} | {threads} | {args.batch} | {parallel:,.1f} img/s | "
          f"{sequential:,.2f} img/s | {parallel / sequential:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
