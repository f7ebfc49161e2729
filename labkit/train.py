"""The training loops of both stages, with checkpoints that resume exactly.

    vqgan, history = train_vqgan(cfg, images, run_dir(cfg))         # stage 1: the tokenizer
    tokens = extract_tokens(vqgan, images, cfg, cache_path=...)      # (n, N) ids, encoded once
    maskgit, history = train_mvtm(cfg, vqgan, tokens, run_dir(cfg))  # stage 2: the transformer

Both loops are plain ``while step < total`` loops (nanoGPT style) that share a few small
helpers: the learning-rate schedule, the optimizer, the checkpoint and the interrupt guard.

Learning rate: linear warmup over ``cfg.warmup_steps``, then a cosine decay that stops at
``MIN_LR_RATIO`` (10 %) of the peak instead of 0. A short run ends better with some decay,
but the course's pitfall 8 (a report gained 8 FID points by removing an aggressive decay)
is why the rate never falls near zero.

Checkpoints (``<run_dir>/<name>.safetensors``, see ``labkit.checkpoint``) hold the weights,
the optimizer moments, every random generator the loop draws from, the step and the
history, and are written every ``cfg.ckpt_every`` steps, at the end, and when you press
Ctrl-C (or Jupyter's stop button). Calling the same function again resumes from the file,
and the resumed run ends with the same weights as an uninterrupted one (bit for bit on
CPU). A finished checkpoint is simply loaded. ``<name>.json`` beside it is a small
human-readable summary.

Under ``torchrun`` (see ``labkit.distributed``) both loops train with
DistributedDataParallel: the config's batch size is the global batch, each rank computes
its slice of it, rank 0 alone writes the checkpoint, the summary and the progress bar.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from .config import LabConfig
from .maskgit import MaskGit
from .metrics import masked_token_accuracy, masked_token_hits
from .utils import autocast, fingerprint, get_device, seed_everything
from .vqgan import VQGAN, codebook_usage

MIN_LR_RATIO = 0.1
VAL_SUBSET = 128        # validation token grids scored at each log step (kept small: CPU time)
HOW_TO_TRAIN = {
    "vqgan": "run notebooks/00_data_and_tokenizer.ipynb or `python -m labkit train-tokenizer --profile {profile}`",
    "mvtm": "run notebooks/02_train_mvtm.ipynb or `python -m labkit train-mvtm --profile {profile}`",
}


def run_dir(cfg: LabConfig, root: str | Path = "runs") -> Path:
    """Where a profile's checkpoints, caches and figures live: ``runs/<profile>``."""
    return Path(root) / cfg.profile


# ----------------------------------------------------------------------------- shared pieces

def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine to 10 %."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, lr: float, cfg: LabConfig, device: torch.device):
    """AdamW with weight decay on the weights of linear and conv layers only.

    Biases, norm gains and embeddings are not decayed: pulling them to zero does not
    regularise anything useful, and the token embedding doubles as the output layer of
    the transformer, so decaying it would shrink every logit.
    """
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decayed], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    # The fused CUDA kernel updates all parameters in one launch; on CPU the default
    # (foreach) implementation keeps the numbers bit-identical across runs.
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


def _generators(batch_rng: torch.Generator, device: torch.device) -> dict:
    """Every random stream a training step draws from, so a resumed run replays them exactly:
    the batch/mask generator, torch's global CPU generator (dead-code restarts, dropout on
    CPU) and the CUDA generator (dropout on the GPU). A batch generator on the GPU is saved
    under another name ("batch_cuda"): its state does not fit a CPU generator."""
    batch_name = "batch" if batch_rng.device.type == "cpu" else f"batch_{batch_rng.device.type}"
    generators = {batch_name: batch_rng, "torch": torch.default_generator}
    if device.type == "cuda":
        generators["cuda"] = torch.cuda.default_generators[device.index or torch.cuda.current_device()]
    return generators


def _batch_generator(seed: int, device: torch.device) -> torch.Generator:
    """Stage 2's generator of batch indices and masks, seeded with ``seed``.

    On a GPU it lives on the GPU, so a step draws its batch and masks there: copying a
    host tensor to the GPU waits for everything queued before it, which would stall the
    loop once per step. On the CPU it is the CPU generator ``seed_everything`` returns.
    """
    if device.type == "cuda":
        return torch.Generator(device).manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _sync_every_step(device: torch.device) -> bool:
    """Read the loss back and check it at every step (CPU), or only at log and checkpoint
    steps (GPU: each read waits for the device's queue to drain)."""
    return device.type != "cuda"


def as_images(images) -> torch.Tensor:
    """An ImageSet or a tensor -> float tensor (n, 3, S, S) in [0, 1], on the CPU."""
    if hasattr(images, "tensors"):
        images = images.tensors()
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (n, 3, S, S) in [0, 1] or an ImageSet, "
                         f"got {images.dtype} of shape {tuple(images.shape)}")
    return images.float().cpu()


class _InterruptGuard:
    """Hold Ctrl-C (or Jupyter's stop button) until the current step has finished.

    A step changes the weights, the optimizer, the codebook and the random generators;
    an interrupt in the middle would checkpoint a state that no uninterrupted run ever
    passes through. So the first Ctrl-C only sets ``requested`` and the loop stops at the
    end of the step; a second Ctrl-C stops at once, without saving.
    """

    def __init__(self):
        self.requested = False
        self.forced = False
        self.installed = False
        self.previous = None

    def _handle(self, signum, frame):
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (press Ctrl-C again to stop at once, without saving)")

    def __enter__(self):
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous if self.previous is not None
                          else signal.default_int_handler)
        return False


class _FiniteWatch:
    """Remembers the first step whose loss or gradient norm was not finite.

    ``note`` queues a few tensor operations and reads nothing back, so on a GPU the loop
    does not wait for the device; ``check`` reads the record and raises. The loops check
    before every checkpoint, so no checkpoint ever holds what came of a non-finite step
    and the last good one is kept; on the CPU they check at every step.
    """

    def __init__(self, name: str, path: Path, device: torch.device):
        self.name, self.path = name, path
        self.record = torch.zeros(3, dtype=torch.float64, device=device)   # step, loss, grad norm

    def note(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        values = torch.stack([torch.full((), step, dtype=torch.float64, device=self.record.device),
                              loss.detach().double(), grad_norm.detach().double()])
        first_bad = ~values[1:].isfinite().all() & (self.record[0] == 0)
        self.record = torch.where(first_bad, values, self.record)

    def check(self) -> None:
        step, loss, grad_norm = self.record.tolist()
        if step:
            kept = (f"the last good checkpoint {self.path} (step {read_header(self.path)['step']}) is kept"
                    if self.path.is_file() else "no checkpoint was written yet")
            raise FloatingPointError(
                f"{self.name}: the loss became {loss} (gradient norm {grad_norm}) at step "
                f"{int(step)}; {kept}. Lower the learning rate or raise warmup_steps, then train again.")


def _write_json(path: Path, cfg: LabConfig, step: int, total: int, history: list, extra: dict):
    """The human-readable summary beside a checkpoint (written atomically too)."""
    summary = {"step": step, "total_steps": total, "finished": step >= total,
               "final": history[-1] if history else None, "config": cfg.to_dict(), **extra}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, path)


def _resume(path: Path, part: str, cfg: LabConfig, model: nn.Module, optimizer, generators: dict,
            resume: bool):
    """Load ``path`` into the model, optimizer and generators if it exists and ``resume``.

    Returns the checkpoint, or None when training starts from scratch. A checkpoint
    written on another kind of device lacks some random streams (or has ones this device
    does not use): the missing ones restart from the seed and the step, with a warning.
    """
    if not (resume and path.is_file()):
        return None
    ckpt = load_checkpoint(path, part=part, config=cfg, map_location="cpu")
    ckpt.load_model(part, model)
    ckpt.load_optimizer(optimizer)
    missing = []
    for name, generator in generators.items():
        if f"rng.{name}" in ckpt.tensors:
            generator.set_state(ckpt.rng_state(name))
        else:
            generator.manual_seed(cfg.seed + ckpt.step)
            missing.append(name)
    if missing:
        warnings.warn(f"{path} was written on another kind of device: the random streams "
                      f"{missing} restart from the seed at step {ckpt.step}. Training goes on "
                      "from the saved weights, but does not replay an uninterrupted run exactly.",
                      stacklevel=3)
    return ckpt


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` inside DistributedDataParallel under torchrun, else ``model`` itself.

    The VQGAN's codebook buffers are kept in step by the quantiser's own all-reduce, so
    DDP need not broadcast buffers at every forward.
    """
    if not distributed.is_distributed():
        return model
    on_gpu = device.type == "cuda" and device.index is not None
    return DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None,
                                   forward_sync_buffers=False)


def _window_means(window: dict) -> dict:
    return {key: sum(values) / len(values) for key, values in window.items() if values}


# ----------------------------------------------------------------------------- stage 1

def train_vqgan(cfg: LabConfig, images, run_dir: str | Path, device=None, resume: bool = True,
                progress: bool = True, name: str = "vqgan", stop_after: int | None = None):
    """Train the VQGAN tokenizer on ``images`` ((n, 3, S, S) in [0, 1] or an ImageSet).

    Loss = L1 + MSE of the reconstruction + the commitment term (the codebook itself is
    updated by EMA inside the quantiser). Batches of ``cfg.vq_batch_size`` random images,
    each flipped left-right with probability 1/2. ``stop_after=k`` stops (with a
    checkpoint) after step k, as if interrupted there.

    Returns ``(vqgan in eval mode, history)``; ``history`` is a list of dicts, one per
    ``cfg.log_every`` steps: step, loss, l1, mse, commit, lr, used_fraction, perplexity,
    elapsed_s.
    """
    device = get_device(device)
    images = as_images(images)
    if images.shape[-1] != cfg.image_size:
        raise ValueError(f"images are {images.shape[-1]}x{images.shape[-1]} but profile "
                         f"{cfg.profile!r} works on {cfg.image_size}x{cfg.image_size}: load them "
                         f"with labkit.load_dataset(cfg, folder) or load_image_folder(folder, "
                         f"{cfg.image_size}), which resize, or use get_config(..., "
                         f"image_size={images.shape[-1]})")
    if len(images) == 0:
        raise ValueError("no training images: the image set is empty")
    path = Path(run_dir) / f"{name}.safetensors"
    total = cfg.vq_steps

    batch_rng = seed_everything(cfg.seed)          # also seeds the weight initialisation
    model = VQGAN(cfg).to(device)
    optimizer = make_optimizer(model, cfg.vq_lr, cfg, device)
    generators = _generators(batch_rng, device)
    ckpt = _resume(path, "vqgan", cfg, model, optimizer, generators, resume)
    step = ckpt.step if ckpt else 0
    distributed.seed_rank(cfg.seed, step)
    part = distributed.shard(cfg.vq_batch_size)
    history = ckpt.metrics if ckpt else []
    state = ckpt.extra if ckpt else {}
    window = state.get("window", {"loss": [], "l1": [], "mse": [], "commit": []})
    if step >= total:
        return model.eval(), history
    ddp_model = _wrap_ddp(model, device)

    def save():
        if distributed.is_main():
            extra = {"window": window, "elapsed_s": elapsed()}
            save_checkpoint(path, part="vqgan", config=cfg, models={"vqgan": model}, step=step,
                            optimizer=optimizer, generators=generators, metrics=history, extra=extra)
            _write_json(path.with_suffix(".json"), cfg, step, total, history, {"elapsed_s": elapsed()})
        distributed.barrier()        # no rank reads the file (to resume) before it is written

    start = time.perf_counter() - state.get("elapsed_s", 0.0)
    elapsed = lambda: time.perf_counter() - start   # noqa: E731  (seconds, across resumes)
    model.train()
    watch = _FiniteWatch(f"stage 1 ({name})", path, device)
    bar = tqdm(total=total, initial=step, desc=f"stage 1 ({name})",
               disable=not (progress and distributed.is_main()))
    with _InterruptGuard() as guard:
        try:
            while step < total:
                lr = lr_at(step, cfg.vq_lr, cfg.warmup_steps, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = torch.randint(0, len(images), (cfg.vq_batch_size,), generator=batch_rng)
                flip = torch.rand(cfg.vq_batch_size, generator=batch_rng) < 0.5
                x = images[index[part]]
                x = torch.where(flip[part, None, None, None], x.flip(-1), x).to(device)

                with autocast(device):
                    x_rec, indices, commit = ddp_model(x)
                x_rec = x_rec.float()
                l1 = (x_rec - x).abs().mean()
                mse = (x_rec - x).pow(2).mean()
                loss = l1 + mse + commit
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Every slice has the same size, so the mean of the ranks' means is the
                # loss of the global batch (the logged and NaN-checked numbers).
                losses = distributed.all_reduce_sum(
                    torch.stack([loss, l1, mse, commit]).detach()) / distributed.world_size()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                watch.note(step + 1, losses[0], grad_norm)
                watch.check()
                optimizer.step()
                step += 1

                for key, value in zip(("loss", "l1", "mse", "commit"), losses.tolist()):
                    window[key].append(value)
                if step % cfg.log_every == 0 or step == total:
                    usage = codebook_usage(distributed.all_gather_cat(indices), cfg.num_codebook_vectors)
                    history.append({"step": step, **_window_means(window), "lr": lr,
                                    "used_fraction": usage["used_fraction"],
                                    "perplexity": usage["perplexity"], "elapsed_s": elapsed()})
                    window = {key: [] for key in window}
                    bar.set_postfix(loss=f"{history[-1]['loss']:.4f}",
                                    codes=f"{usage['used_fraction']:.0%}")
                if step % cfg.ckpt_every == 0 or step == total or step == stop_after:
                    save()
                bar.update(1)
                if distributed.any_rank(guard.requested, losses.device):
                    raise KeyboardInterrupt
                if step == stop_after:
                    break
        except KeyboardInterrupt:
            if not guard.forced:
                save()
                if distributed.is_main():
                    print(f"interrupted: checkpoint saved at {path} (step {step}/{total}); "
                          "call train_vqgan again to resume")
            raise
        finally:
            bar.close()
    return model.eval(), history


# ----------------------------------------------------------------------------- tokens

@torch.no_grad()
def extract_tokens(vqgan: VQGAN, images, cfg: LabConfig, cache_path: str | Path | None = None,
                   batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Encode every image once: -> LongTensor (n, N) of codebook indices, on the CPU.

    With ``cache_path`` the tokens are stored in a safetensors file keyed by a hash of the
    tokenizer's weights and of the images, so a retrained tokenizer or other data is
    re-encoded instead of silently reusing stale tokens.
    """
    images = as_images(images)
    keys = {"format": "labkit-tokens-1", "tokenizer": fingerprint(vqgan),
            "data": fingerprint(images)}
    if cache_path is not None:
        cache_path = Path(cache_path)
        cached = _read_token_cache(cache_path, keys)
        if cached is not None:
            return cached
    was_training = vqgan.training
    vqgan.eval()                                    # no EMA updates while encoding
    device = next(vqgan.parameters()).device
    chunks = []
    for begin in tqdm(range(0, len(images), batch_size), desc="encoding", disable=not progress):
        _, indices, _ = vqgan.encode(images[begin:begin + batch_size].to(device))
        chunks.append(indices.flatten(1).cpu())
    vqgan.train(was_training)
    tokens = torch.cat(chunks).long() if chunks else torch.zeros(0, cfg.num_image_tokens).long()
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.tmp-{os.getpid()}")
        try:
            save_file({"tokens": tokens.contiguous()}, str(tmp), metadata=keys)
            os.replace(tmp, cache_path)
        finally:
            tmp.unlink(missing_ok=True)
    return tokens


def _read_token_cache(path: Path, keys: dict) -> torch.Tensor | None:
    """The cached tokens if the file exists and matches ``keys``; None otherwise."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}) != keys:
                return None
            return handle.get_tensor("tokens")
    except (SafetensorError, OSError, ValueError):
        return None          # a broken cache is just re-encoded


# ----------------------------------------------------------------------------- stage 2

@torch.no_grad()
def evaluate_mvtm(maskgit: MaskGit, tokens: torch.Tensor, cfg: LabConfig, batch_size: int = 64) -> dict:
    """MVTM loss and masked-token accuracy on ``tokens`` (n, N), with fixed random masks."""
    was_training = maskgit.training
    maskgit.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)   # same masks at every call
    device = maskgit.device
    losses, correct, counted = [], 0.0, 0
    for begin in range(0, len(tokens), batch_size):
        z = tokens[begin:begin + batch_size].to(device)
        with autocast(device):
            logits, z, mask = maskgit.forward_tokens(z, generator)
        losses.append(float(maskgit.loss(logits, z, mask)) * len(z))
        n_masked = int(mask.sum())
        correct += masked_token_accuracy(logits, z, mask) * n_masked
        counted += n_masked
    maskgit.train(was_training)
    return {"val_loss": sum(losses) / len(tokens), "val_accuracy": correct / max(counted, 1)}


def train_mvtm(cfg: LabConfig, vqgan: VQGAN, tokens: torch.Tensor, run_dir: str | Path, device=None,
               resume: bool = True, progress: bool = True, name: str = "mvtm",
               loss: str | None = None, label_smoothing: float | None = None,
               val_tokens: torch.Tensor | None = None, stop_after: int | None = None,
               compile: bool | None = None):
    """Train the bidirectional transformer of ``MaskGit(cfg, vqgan)`` with MVTM.

    tokens: (n, N) token grids from ``extract_tokens``. Each step takes a random batch,
    masks ceil(gamma(r) N) tokens per grid (r ~ U(0, 1)), and minimises the cross-entropy
    (``loss="masked"``: masked positions only; ``"full"``: all positions; both override
    ``cfg.loss`` / ``cfg.label_smoothing`` when given). ``val_tokens`` (optional) are
    scored every ``cfg.log_every`` steps. ``stop_after=k`` stops (with a checkpoint)
    after step k, as if interrupted there.

    The fast path: the tokens stay on the device; on a GPU the batch and its masks are
    drawn there, bf16 autocast is on, and the loss is read back (and checked) only at log
    and checkpoint steps, so the GPU never waits for Python. ``compile`` runs the
    transformer through ``torch.compile`` for training (default: on CUDA only; the first
    steps then take a while to compile). Checkpoints hold the plain module's weights
    either way.

    Returns ``(maskgit in eval mode, history)``; ``history`` entries: step, loss,
    accuracy (masked tokens), lr, elapsed_s, and val_loss / val_accuracy with
    ``val_tokens``.
    """
    device = get_device(device)
    cfg = cfg.replace(**{key: value for key, value in
                         (("loss", loss), ("label_smoothing", label_smoothing)) if value is not None})
    tokens = _check_tokens(tokens, cfg, "tokens")
    if len(tokens) == 0:
        raise ValueError("no training tokens: extract_tokens got no images")
    val_tokens = None if val_tokens is None else _check_tokens(val_tokens, cfg, "val_tokens")[:VAL_SUBSET]
    path = Path(run_dir) / f"{name}.safetensors"
    total = cfg.mvtm_steps
    tokenizer = fingerprint(vqgan)
    compile = device.type == "cuda" if compile is None else compile

    seed_everything(cfg.seed)                      # also seeds the weight initialisation
    batch_rng = _batch_generator(cfg.seed, device)
    maskgit = MaskGit(cfg, vqgan=vqgan.eval()).to(device)
    model = maskgit.transformer
    optimizer = make_optimizer(model, cfg.mvtm_lr, cfg, device)
    generators = _generators(batch_rng, device)
    ckpt = _resume(path, "transformer", cfg, model, optimizer, generators, resume)
    if ckpt is not None:
        _check_tokenizer(ckpt, tokenizer, path)
    step = ckpt.step if ckpt else 0
    distributed.seed_rank(cfg.seed, step)
    part = distributed.shard(cfg.mvtm_batch_size)
    history = ckpt.metrics if ckpt else []
    state = ckpt.extra if ckpt else {}
    window = state.get("window", {"loss": [], "accuracy": []})
    if step >= total:
        return maskgit.eval(), history
    ddp_model = _wrap_ddp(model, device)
    # The step runs through ``trainer`` (the same weights, maybe compiled); ``maskgit`` and
    # ``model`` stay plain modules, for evaluation, checkpoints and the caller.
    trainer = MaskGit(cfg, vqgan, torch.compile(model)) if compile else maskgit
    if compile and ddp_model is not model:
        ddp_model = torch.compile(ddp_model)
    sync_every_step = _sync_every_step(device)
    compiling = compile          # until the first compiled forward has run
    pending = []     # (loss, masked hits, masked count) of the steps not read back yet

    def read_back():
        """Move the pending steps' numbers into the window (one wait for the device)."""
        if pending:
            for loss_seen, hits, count in torch.stack(pending).tolist():
                window["loss"].append(loss_seen)
                window["accuracy"].append(hits / count if count else float("nan"))
            pending.clear()
        watch.check()

    def save():
        read_back()          # never checkpoint what came of a non-finite step
        if distributed.is_main():
            extra = {"window": window, "elapsed_s": elapsed(), "tokenizer": tokenizer}
            save_checkpoint(path, part="transformer", config=cfg, models={"transformer": model},
                            step=step, optimizer=optimizer, generators=generators, metrics=history,
                            extra=extra)
            _write_json(path.with_suffix(".json"), cfg, step, total, history,
                        {"elapsed_s": elapsed(), "tokenizer": tokenizer})
        distributed.barrier()        # no rank reads the file (to resume) before it is written

    start = time.perf_counter() - state.get("elapsed_s", 0.0)
    elapsed = lambda: time.perf_counter() - start   # noqa: E731  (seconds, across resumes)
    maskgit.train()
    vqgan.eval()
    tokens = tokens.to(device)
    watch = _FiniteWatch(f"stage 2 ({name})", path, device)
    bar = tqdm(total=total, initial=step, desc=f"stage 2 ({name})",
               disable=not (progress and distributed.is_main()))
    with _InterruptGuard() as guard:
        try:
            while step < total:
                lr = lr_at(step, cfg.mvtm_lr, cfg.warmup_steps, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = torch.randint(0, len(tokens), (cfg.mvtm_batch_size,), generator=batch_rng,
                                      device=batch_rng.device)
                z = tokens[index.to(device)]

                try:
                    if distributed.is_distributed():
                        loss_value, loss_seen, hits, count = _mvtm_shard_step(
                            maskgit, ddp_model, z, batch_rng, part)
                    else:
                        with autocast(device):
                            logits, z, mask = trainer.forward_tokens(z, batch_rng)
                            loss_value = trainer.loss(logits, z, mask)
                        loss_seen = loss_value.detach()
                        hits, count = masked_token_hits(logits, z, mask)
                    optimizer.zero_grad(set_to_none=True)
                    loss_value.backward()            # compiles the backward graph, the first time
                    compiling = False
                except Exception as error:
                    if compiling:
                        reason = f"{type(error).__name__}: {error}".splitlines()[0][:200]
                        raise RuntimeError(f"the first training step under torch.compile failed ({reason}). "
                                           "If the compiler is the cause, train without it: "
                                           "train_mvtm(..., compile=False) or "
                                           "`python -m labkit train-mvtm --no-compile`") from error
                    raise
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                watch.note(step + 1, loss_seen, grad_norm)
                if sync_every_step:
                    watch.check()
                optimizer.step()
                step += 1
                pending.append(torch.stack([loss_seen.double(), hits.double(), count.double()]))

                if step % cfg.log_every == 0 or step == total:
                    read_back()
                    entry = {"step": step, **_window_means(window), "lr": lr}
                    if val_tokens is not None and distributed.is_main():
                        entry.update(evaluate_mvtm(maskgit, val_tokens, cfg))
                    entry["elapsed_s"] = elapsed()
                    history.append(entry)
                    window = {key: [] for key in window}
                    bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['accuracy']:.1%}")
                if step % cfg.ckpt_every == 0 or step == total or step == stop_after:
                    save()
                bar.update(1)
                if distributed.any_rank(guard.requested, loss_seen.device):
                    raise KeyboardInterrupt
                if step == stop_after:
                    break
        except KeyboardInterrupt:
            if not guard.forced:
                save()
                if distributed.is_main():
                    print(f"interrupted: checkpoint saved at {path} (step {step}/{total}); "
                          "call train_mvtm again to resume")
            raise
        finally:
            bar.close()
    return maskgit.eval(), history


def _mvtm_shard_step(maskgit: MaskGit, ddp_model: nn.Module, z: torch.Tensor,
                     batch_rng: torch.Generator, part: slice):
    """One rank's share of an MVTM step under DDP: (loss to back-propagate, global loss,
    global masked hits, global masked count), the last three as tensors.

    z: (B, N) the global batch. The masks of the whole batch are drawn (the same numbers
    one process draws), then this rank keeps its slice. With the masked loss the ranks
    hold different numbers of masked tokens, so each rank's loss is its sum over the
    global count, times world_size: DDP's gradient average then equals the gradient of
    the global batch's loss.
    """
    cfg = maskgit.config
    mask = maskgit.random_token_mask(z.shape[0], batch_rng)
    counted = mask if cfg.loss == "masked" else torch.ones_like(mask)
    global_count = counted.sum().clamp(min=1)
    z, mask, counted = z[part], mask[part], counted[part]
    with autocast(maskgit.device):
        logits = ddp_model(z.masked_fill(mask, maskgit.mask_token_id))
        local_mean = maskgit.loss(logits, z, mask)
    share = counted.sum().clamp(min=1) / global_count
    loss_value = local_mean * (share * distributed.world_size())
    hits, count = masked_token_hits(logits, z, mask)
    totals = distributed.all_reduce_sum(torch.stack([local_mean.detach().float() * share,
                                                     hits.float(), count.float()]))
    return loss_value, totals[0], totals[1], totals[2]


def _check_tokens(tokens: torch.Tensor, cfg: LabConfig, what: str) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dim() != 2 or tokens.shape[1] != cfg.num_image_tokens or tokens.is_floating_point():
        raise ValueError(f"{what} must be integer token grids (n, {cfg.num_image_tokens}) from "
                         f"extract_tokens, got {tokens.dtype} of shape {tuple(tokens.shape)}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= cfg.num_codebook_vectors):
        raise ValueError(f"{what} hold ids outside [0, {cfg.num_codebook_vectors}): were they "
                         "extracted with another tokenizer?")
    return tokens.long()


def _check_tokenizer(ckpt, tokenizer: str, path: Path) -> None:
    """Refuse a stage-2 checkpoint trained on the tokens of another tokenizer."""
    saved = ckpt.extra.get("tokenizer")
    if saved is not None and saved != tokenizer:
        raise CheckpointError(
            f"{path} was trained on the tokens of another tokenizer (weights hash {saved}, "
            f"yours {tokenizer}): stage 1 was retrained since. Delete {path} and train stage 2 "
            "again, or load the tokenizer it was trained with.")


# ----------------------------------------------------------------------------- loading

def _require(path: Path, stage: str, cfg: LabConfig) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: "
                                f"{HOW_TO_TRAIN[stage].format(profile=cfg.profile)} first")


def load_vqgan(run_dir: str | Path, cfg: LabConfig, device=None, name: str = "vqgan") -> VQGAN:
    """The trained tokenizer of ``<run_dir>/<name>.safetensors``, in eval mode."""
    path = Path(run_dir) / f"{name}.safetensors"
    _require(path, "vqgan", cfg)
    ckpt = load_checkpoint(path, part="vqgan", config=cfg)
    return ckpt.load_model("vqgan", VQGAN(cfg)).to(get_device(device)).eval()


def load_maskgit(run_dir: str | Path, cfg: LabConfig, device=None, vqgan_name: str = "vqgan",
                 name: str = "mvtm") -> MaskGit:
    """The trained MaskGit (tokenizer + transformer) of ``run_dir``, in eval mode."""
    vqgan = load_vqgan(run_dir, cfg, device, vqgan_name)
    path = Path(run_dir) / f"{name}.safetensors"
    _require(path, "mvtm", cfg)
    ckpt = load_checkpoint(path, part="transformer", config=cfg)
    _check_tokenizer(ckpt, fingerprint(vqgan), path)
    maskgit = MaskGit(cfg, vqgan=vqgan)
    ckpt.load_model("transformer", maskgit.transformer)
    return maskgit.to(get_device(device)).eval()


__all__ = ["run_dir", "train_vqgan", "extract_tokens", "train_mvtm", "evaluate_mvtm",
           "load_vqgan", "load_maskgit", "lr_at", "make_optimizer", "fingerprint", "MIN_LR_RATIO"]
