"""labkit's fast path against the course template's way, side by side in one process.

    python benchmarks/bench_speed.py --profile cpu                 # a 2-core laptop, minutes
    python benchmarks/bench_speed.py --profile gpu --out table.md  # course sizes on one GPU
    python benchmarks/bench_speed.py --profile smoke               # seconds, checks the script

What is timed (random weights and random data: speed does not depend on training, so no
checkpoint is needed):

- stage-2 training, images/s. labkit: token grids extracted once and cached, fused
  attention (``F.scaled_dot_product_attention``), bf16 autocast and fused AdamW on CUDA
  (fused AdamW on CPU too), optional ``torch.compile``. Template
  (``template_reference.py``): the VQGAN encoder on every batch, one mask ratio per batch,
  hand-written fp32 attention, plain AdamW, no compile. The two alternate round by round,
  so a load change on a shared machine hits both. Then ``labkit.lab.training.train_mvtm`` itself
  (the same compile choice), whose loop also keeps the learning-rate schedule, the
  loss and accuracy log (read back at log steps only) and the interrupt guard.
- decoding at T = 8, images/s, decode to pixels included. labkit: ``MaskGit.inpaint`` on a
  whole batch. Template: the course's loop, one image at a time.
- the course-sized test set (747 images) inpainted by labkit with T = 8, pixels included:
  with ``inpaint`` (every iteration decoded) and with the final iteration decoded only.
- tokenizer encode and decode, images/s.
- peak memory of each, in an untimed pass: see ``PeakMemory``.

FLOPs of one training image (one sequence of N tokens), counted analytically as in nanoGPT:

    6 * P * N + 12 * L * N**2 * D
    P = L * (4 * D**2 + 2 * D * M) + D * K    (weights of every matmul: attention projections,
                                                MLP, and the output layer tied to the embedding)

"6" is 2 FLOPs per multiply-add times 3 (forward, and backward for inputs and weights);
``12 * L * N**2 * D`` are the two attention matmuls (Q K^T and A V) in the three passes.
Biases, LayerNorm, GELU, softmax and the optimiser are left out, so the TFLOP/s are a
slight underestimate. ``tests/test_fastpath.py`` checks the formula against
``torch.utils.flop_counter``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # labkit, without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))          # template_reference

from labkit import VQGAN, BidirectionalTransformer, LabConfig, MaskGit, get_config  # noqa: E402
from labkit.data.holes import make_masks  # noqa: E402
from labkit.core.masks import pixel_to_token_mask  # noqa: E402
from labkit.lab.training import train_mvtm  # noqa: E402
from labkit.core.train import autocast  # noqa: E402
from labkit.lab.utils import get_device  # noqa: E402
from labkit.lab.run import RunOptions  # noqa: E402
from template_reference import TemplateMaskGit, template_optimizer, template_train_step  # noqa: E402

COURSE_TEST_SET = 747
TOTAL_ITER = 8

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
# The first name contained in the device's name wins, so the PCIe and NVL cards come first.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0,
                    "A100": 312.0}

# Per profile: training steps per round, warmup steps, rounds, images decoded at once by
# labkit and one at a time by the template. The training batch is the profile's.
DEFAULTS = {
    "smoke": dict(steps=2, warmup=1, rounds=2, decode_batch=16, single=2),
    "cpu": dict(steps=3, warmup=1, rounds=3, decode_batch=16, single=4),
    "gpu": dict(steps=20, warmup=5, rounds=3, decode_batch=256, single=16),
}


# ---------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak bytes of the tensors allocated inside ``with PeakMemory(device) as peak:``.

    What was allocated before the block (weights, optimizer state, the data) is not
    counted, on either device. CUDA: ``max_memory_allocated`` minus the bytes allocated on
    entry. CPU: every storage an operator returns is counted until it is freed (a
    ``TorchDispatchMode``), which also sees the autograd saved tensors and the gradients;
    the process's resident set size would not, since the allocator keeps freed memory.
    It does not see inside a ``torch.compile``d graph, which allocates its own buffers.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = 0

    @staticmethod
    def method(device: torch.device) -> str:
        if device.type == "cuda":
            return "torch.cuda.max_memory_allocated minus the allocation before the step"
        return "peak bytes of live tensors created during the step (a TorchDispatchMode)"

    def __enter__(self):
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.tracker = _LiveTensorBytes()
            self.tracker.__enter__()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self.tracker.__exit__(*exc)
            self.bytes = self.tracker.peak
        return False


class _LiveTensorBytes(TorchDispatchMode):
    """Running total and peak of the bytes held by storages that operators created."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = storage.data_ptr()
        if key in self.live or storage.nbytes() == 0:   # a view or an in-place result
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        # torch keeps one Python object per storage until the storage itself is freed.
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def timed(device: torch.device, work) -> float:
    """Seconds that ``work()`` takes, with the GPU's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def training_flops_per_image(cfg: LabConfig) -> float:
    """FLOPs of one forward + backward pass over one image's N tokens (see the module doc)."""
    dim, layers, tokens = cfg.dim, cfg.num_layers, cfg.num_image_tokens
    matmul_weights = layers * (4 * dim ** 2 + 2 * dim * cfg.mlp_dim) + dim * cfg.num_codebook_vectors
    return 6 * matmul_weights * tokens + 12 * layers * tokens ** 2 * dim


def bf16_peak(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "given with --peak-tflops"
    if device.type != "cuda":
        return None, "no bf16 peak on CPU"
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak, f"data-sheet dense bf16 peak of {key} ({name})"
    return None, f"unknown device {name!r}: pass --peak-tflops"


# ---------------------------------------------------------------------------- the benchmark
class Bench:
    def __init__(self, cfg: LabConfig, device: torch.device, batch: int, compile_model: bool, seed: int = 0):
        self.cfg, self.device, self.batch = cfg, device, batch
        torch.manual_seed(seed)
        self.vqgan = VQGAN(cfg).to(device).eval()
        self.transformer = BidirectionalTransformer(cfg).to(device)   # fused attention
        self.maskgit = MaskGit(cfg, self.vqgan, self.transformer)
        # The template starts from a copy of the same weights, with hand-written attention.
        self.template = TemplateMaskGit(cfg, self.vqgan, self.transformer).to(device)
        self.compile_model = compile_model
        self.compile_note = "torch.compile" if compile_model else "no compile"
        compiled = torch.compile(self.transformer) if compile_model else self.transformer
        self.train_maskgit = MaskGit(cfg, self.vqgan, compiled)
        self.fused_adamw = device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.AdamW(
            self.transformer.parameters(), lr=cfg.mvtm_lr, betas=cfg.betas,
            weight_decay=cfg.weight_decay, fused=self.fused_adamw or None)
        self.template_optimizer = template_optimizer(cfg, self.template)

        # Random images as a data set would hold them (uint8, on the host), 8 batches' worth.
        size = cfg.image_size
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (8 * batch, 3, size, size), dtype=torch.uint8,
                                    generator=generator)
        self.tokens = None   # filled by tokenizer(): the cached token grids (n, N) on the device

    # -- tokenizer
    def tokenizer(self, steps: int) -> dict:
        """Encode the image pool once (this is the token cache) and time encode and decode."""
        images = self.images.to(self.device).float().div_(255)
        chunks = images.split(self.batch)
        tokens = []
        with torch.no_grad():
            self.maskgit.encode_to_z(chunks[0])   # warm up the kernels
            encode_seconds = timed(self.device, lambda: tokens.extend(
                self.maskgit.encode_to_z(chunk)[1] for chunk in chunks))
            self.tokens = torch.cat(tokens)
            batch_tokens = self.tokens[: self.batch]
            decode_seconds = timed(self.device, lambda: [
                self.vqgan.decode_indices(batch_tokens) for _ in range(steps)])
            with PeakMemory(self.device) as encode_memory:
                self.maskgit.encode_to_z(chunks[0])
            with PeakMemory(self.device) as decode_memory:
                self.vqgan.decode_indices(batch_tokens)
        return {"encode": (len(images) / encode_seconds, encode_memory.bytes),
                "decode": (steps * self.batch / decode_seconds, decode_memory.bytes)}

    # -- stage-2 training
    def fast_step(self) -> None:
        index = torch.randint(0, len(self.tokens), (self.batch,), device=self.device)
        with autocast(self.device):
            logits, z_indices, mask = self.train_maskgit.forward_tokens(self.tokens[index])
            loss = self.train_maskgit.loss(logits, z_indices, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.transformer.parameters(), self.cfg.grad_clip)
        self.optimizer.step()

    def template_step(self) -> None:
        # As a DataLoader gives it: a host batch of uint8 images, copied and scaled on the device.
        index = torch.randint(0, len(self.images), (self.batch,))
        images = self.images[index].to(self.device).float() / 255
        template_train_step(self.template, self.template_optimizer, images)

    def training(self, steps: int, warmup: int, rounds: int) -> dict:
        """Alternate rounds of ``steps`` steps; images/s is the median over rounds."""
        self.transformer.train()
        self.template.train()
        self.template.vqgan.eval()   # the tokenizer is frozen in stage 2
        paths = {"fast": self.fast_step, "template": self.template_step}
        try:
            self.fast_step()   # the first step compiles
        except Exception as error:   # noqa: BLE001  (a missing compiler must not cost the GPU run)
            if self.train_maskgit.transformer is self.transformer:
                raise
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            print(f"[bench] torch.compile failed ({reason}); measuring without it", flush=True)
            self.compile_note = f"no compile (torch.compile failed: {reason})"
            self.compile_model = False
            self.train_maskgit = MaskGit(self.cfg, self.vqgan, self.transformer)
        for step in paths.values():
            for _ in range(warmup):
                step()
        rates = {name: [] for name in paths}
        for _ in range(rounds):
            for name, step in paths.items():
                seconds = timed(self.device, lambda: [step() for _ in range(steps)])
                rates[name].append(steps * self.batch / seconds)
        peaks = {}
        for name, step in paths.items():   # memory in a pass of its own, not timed
            with PeakMemory(self.device) as memory:
                step()
            peaks[name] = memory.bytes
        return {name: (statistics.median(rates[name]), peaks[name], rates[name]) for name in paths}

    def shipped_loop(self, steps: int, rounds: int) -> list[float]:
        """images/s of ``labkit.lab.training.train_mvtm`` itself (fresh weights, same sizes), one
        value per block of ``steps`` steps after a first block of warmup. Timed from the
        loop's own history (``elapsed_s`` at every log step), so the checkpoint it writes at
        the end is not counted."""
        cfg = self.cfg.replace(mvtm_batch_size=self.batch, mvtm_steps=(rounds + 1) * steps,
                               log_every=steps, ckpt_every=10 ** 9, warmup_steps=1)
        with tempfile.TemporaryDirectory() as run_dir:
            _, history = train_mvtm(cfg, self.vqgan, self.tokens, run_dir, options=RunOptions(device=self.device, resume=False, progress=False, compile=self.compile_model))
        elapsed = [entry["elapsed_s"] for entry in history]
        return [steps * self.batch / (end - start) for start, end in zip(elapsed, elapsed[1:])]

    # -- decoding
    def inpaint_batched(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """labkit's ``inpaint``: every iteration is decoded to pixels (for the step plots)."""
        with autocast(self.device):
            return self.maskgit.inpaint(images, masks, self.maskgit.decode_settings(total_iter=TOTAL_ITER)).images

    def inpaint_final_only(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The same decoding, with only the last iteration decoded to pixels: all that a
        score needs. Measured to show what the per-step pixel decoding costs."""
        with autocast(self.device):
            masked_input = torch.where(masks[:, None], torch.full_like(images, 0.5), images)
            _, z_indices = self.maskgit.encode_to_z(masked_input)
            token_mask = pixel_to_token_mask(masks, self.cfg.downsample)
            trace = self.maskgit.inpaint_tokens(z_indices, token_mask, self.maskgit.decode_settings(total_iter=TOTAL_ITER))
            final = self.vqgan.decode_indices(trace.predictions[-1])
            return torch.where(masks[:, None], final, images)

    def decoding(self, n_batched: int, n_single: int, rounds: int) -> dict:
        """labkit's batched ``inpaint`` vs the course's loop, one image at a time (T = 8)."""
        self.transformer.eval()
        self.template.eval()
        size = self.cfg.image_size
        generator = torch.Generator().manual_seed(1)
        images = torch.rand(n_batched, 3, size, size, generator=generator).to(self.device)
        masks = torch.from_numpy(make_masks(seed=1, n=n_batched, size=size)).to(self.device)
        self.inpaint_batched(images[:2], masks[:2])
        self.template.inpaint_loop(images[:1], masks[:1], TOTAL_ITER)
        runs = {"batched": (n_batched, lambda: self.inpaint_batched(images, masks)),
                "final only": (n_batched, lambda: self.inpaint_final_only(images, masks)),
                "single": (n_single, lambda: self.template.inpaint_loop(
                    images[:n_single], masks[:n_single], TOTAL_ITER))}
        rates = {name: [] for name in runs}
        for _ in range(rounds):
            for name, (count, run) in runs.items():
                rates[name].append(count / timed(self.device, run))
        peaks = {}
        for name, (_, run) in runs.items():   # memory in a pass of its own, not timed
            with PeakMemory(self.device) as memory:
                run()
            peaks[name] = memory.bytes
        return {name: (statistics.median(rates[name]), peaks[name]) for name in runs}

    def test_set(self, chunk: int) -> dict:
        """Seconds and peak memory to inpaint the 747-image test set with T = 8, pixels
        included, in chunks of ``chunk`` images: with ``inpaint`` and final-image-only."""
        self.transformer.eval()
        size = self.cfg.image_size
        generator = torch.Generator().manual_seed(2)
        images = torch.rand(COURSE_TEST_SET, 3, size, size, generator=generator).to(self.device)
        masks = torch.from_numpy(make_masks(seed=2, n=COURSE_TEST_SET, size=size)).to(self.device)
        results = {}
        for name, inpaint in (("every step", self.inpaint_batched),
                              ("final only", self.inpaint_final_only)):
            def run():
                for image_chunk, mask_chunk in zip(images.split(chunk), masks.split(chunk)):
                    inpaint(image_chunk, mask_chunk)
            inpaint(images[:chunk], masks[:chunk])   # warm up at the chunk size
            seconds = timed(self.device, run)
            with PeakMemory(self.device) as memory:
                run()
            results[name] = (seconds, memory.bytes)
        return results


# ---------------------------------------------------------------------------- the table
def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2 ** 20:,.0f} MiB"


def rate(images_per_second: float) -> str:
    return f"{images_per_second:,.1f} img/s"


def build_table(args, cfg: LabConfig, device: torch.device, results: dict) -> str:
    train, decode, tok = results["training"], results["decoding"], results["tokenizer"]
    fast, template = train["fast"], train["template"]
    shipped = statistics.median(results["shipped"])
    lines = [
        f"# labkit fast path vs the course template's way ({cfg.profile} profile)",
        "",
        f"- device: {device_name(device)}; torch {torch.__version__}; "
        f"{torch.get_num_threads()} CPU threads",
        f"- model: dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads, MLP {cfg.mlp_dim}, "
        f"{cfg.num_image_tokens} tokens, codebook {cfg.num_codebook_vectors}; "
        f"{sum(p.numel() for p in results['bench'].transformer.parameters()) / 1e6:.2f} M parameters",
        f"- training: batch {args.batch}, {args.rounds} alternating rounds of {args.steps} steps "
        f"after {args.warmup} warmup steps; median round. labkit: cached tokens, fused attention, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, "
        f"{'fused ' if results['bench'].fused_adamw else ''}AdamW, "
        f"{results['bench'].compile_note}. `train_mvtm`: the core's loop in its TrainingRun "
        "(same compile choice), with its schedule, logging and checkpoint guard. Template: encoder "
        "on every batch, one mask ratio per batch, hand-written fp32 attention, plain AdamW",
        f"- decoding: T = {TOTAL_ITER}, cosine, argmax with Gumbel choice noise, every iteration "
        f"decoded to pixels (or the final one only, where said); labkit on a batch of "
        f"{args.decode_batch}, the template on {args.single} images one at a time",
        f"- memory: {PeakMemory.method(device)}",
        "",
        "| measurement | labkit | template reference | labkit / template |",
        "|---|---:|---:|---:|",
        f"| stage-2 training, fast-path step | {rate(fast[0])} | {rate(template[0])} | "
        f"{fast[0] / template[0]:.2f}x |",
        f"| stage-2 training, `train_mvtm` loop as shipped | {rate(shipped)} | "
        f"{rate(template[0])} | {shipped / template[0]:.2f}x |",
        f"| training peak memory | {mib(fast[1])} | {mib(template[1])} | "
        f"{fast[1] / max(template[1], 1):.2f}x |",
        f"| decoding T = {TOTAL_ITER} | {rate(decode['batched'][0])} | {rate(decode['single'][0])} | "
        f"{decode['batched'][0] / decode['single'][0]:.2f}x |",
        f"| decoding T = {TOTAL_ITER}, final image only | {rate(decode['final only'][0])} | | "
        f"{decode['final only'][0] / decode['single'][0]:.2f}x |",
        f"| decoding peak memory, per call | {mib(decode['batched'][1])} | {mib(decode['single'][1])} | "
        f"{decode['batched'][1] / max(decode['single'][1], 1):.2f}x |",
        f"| tokenizer encode | {rate(tok['encode'][0])} ({mib(tok['encode'][1])}) | | |",
        f"| tokenizer decode | {rate(tok['decode'][0])} ({mib(tok['decode'][1])}) | | |",
    ]
    for name, (seconds, memory) in results.get("test_set", {}).items():
        lines.append(f"| {COURSE_TEST_SET}-image test set, T = {TOTAL_ITER}, pixels of {name} | "
                     f"{seconds:.2f} s ({mib(memory)}) | | |")
    flops = training_flops_per_image(cfg)
    lines += ["", f"Training FLOPs per image: {flops / 1e9:.2f} GFLOP "
              "(6 P N + 12 L N^2 D, see the script's docstring)."]
    if device.type == "cuda":
        peak, source = bf16_peak(device, args.peak_tflops)
        achieved = fast[0] * flops / 1e12
        line = (f"Achieved: labkit fast-path step {achieved:.1f} TFLOP/s, train_mvtm "
                f"{shipped * flops / 1e12:.1f} TFLOP/s, template {template[0] * flops / 1e12:.1f} TFLOP/s")
        if peak is not None:
            line += (f"; fast-path step = {100 * achieved / peak:.1f} %, train_mvtm = "
                     f"{100 * shipped * flops / 1e12 / peak:.1f} % of {peak:.0f} TFLOP/s ({source})")
        else:
            line += f" ({source})"
        lines.append(line + ".")
    rounds = ", ".join(f"{r:.1f}" for r in fast[2])
    template_rounds = ", ".join(f"{r:.1f}" for r in template[2])
    shipped_rounds = ", ".join(f"{r:.1f}" for r in results["shipped"])
    lines.append(f"Training img/s per round: labkit [{rounds}], template [{template_rounds}], "
                 f"train_mvtm [{shipped_rounds}] (run after the others, not interleaved).")
    return "\n".join(lines) + "\n"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(DEFAULTS), default="cpu")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--steps", type=int, help="training steps per round")
    parser.add_argument("--warmup", type=int, help="training steps before timing (not timed)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of each measurement")
    parser.add_argument("--batch", type=int, help="training batch size (default: the profile's)")
    parser.add_argument("--decode-batch", type=int, help="images decoded at once by labkit")
    parser.add_argument("--single", type=int, help="images decoded one at a time by the template")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile labkit's transformer (default: on CUDA only)")
    parser.add_argument("--test-set", action=argparse.BooleanOptionalAction, default=None,
                        help=f"time the {COURSE_TEST_SET}-image test set (default: gpu profile)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak (default: from the device name)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.profile].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda"
    if args.test_set is None:
        args.test_set = args.profile == "gpu"
    cfg = get_config(args.profile)
    args.batch = args.batch or cfg.mvtm_batch_size
    bench = Bench(cfg, device, args.batch, args.compile)
    results = {"bench": bench}
    print(f"[bench] {args.profile} profile on {device_name(device)}", flush=True)
    results["tokenizer"] = bench.tokenizer(args.steps)
    print("[bench] tokenizer done; training ...", flush=True)
    results["training"] = bench.training(args.steps, args.warmup, args.rounds)
    print("[bench] training done; labkit's train_mvtm loop ...", flush=True)
    results["shipped"] = bench.shipped_loop(args.steps, args.rounds)
    print("[bench] train_mvtm done; decoding ...", flush=True)
    results["decoding"] = bench.decoding(args.decode_batch, args.single, args.rounds)
    if args.test_set:
        print(f"[bench] the {COURSE_TEST_SET}-image test set ...", flush=True)
        results["test_set"] = bench.test_set(args.decode_batch)
    table = build_table(args, cfg, device, results)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return table


if __name__ == "__main__":
    main()
