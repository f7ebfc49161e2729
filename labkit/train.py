"""The training loops of both stages, with checkpoints that resume exactly.

    vqgan, history = train_vqgan(cfg, images, run_dir(cfg))         # stage 1: the tokenizer
    tokens = extract_tokens(vqgan, images, cfg, cache_path=...)      # (n, N) ids, encoded once
    maskgit, history = train_mvtm(cfg, vqgan, tokens, run_dir(cfg))  # stage 2: the transformer

Each loop is a plain ``while`` loop (nanoGPT style): learning rate -> batch -> loss ->
backward -> clip -> step -> log. Stage 2's step (mask, forward, loss, backward, clip, step)
is ``mvtm_step``, the course's exercise TODO2 step2. The plumbing around it (resume,
checkpoints, Ctrl-C, the NaN watch, the log and the progress bar) is ``labkit.run.TrainingRun``.

Learning rate: linear warmup over ``cfg.warmup_steps``, then a cosine decay that stops at
a floor instead of 0: ``MIN_LR_RATIO`` (10 %) of the peak for the tokenizer and CatNet,
``cfg.mvtm_lr_floor`` for the transformer (1.0 keeps it flat), which may first hold the
peak for ``cfg.mvtm_lr_hold`` of its steps (warmup, plateau, decay). A short run ends better with
some decay, but the course's pitfall 8 (notebook 06: a report gained 8 FID points by removing
an aggressive decay) is why the rate never falls to zero by default.

Checkpoints: ``<run_dir>/<name>.safetensors`` (and a ``.json`` summary), written every
``cfg.ckpt_every`` steps, at the end and on Ctrl-C. Calling the same function again resumes
from the file, and ends with the same weights as an uninterrupted run (bit for bit on CPU);
a finished checkpoint is simply loaded. Under ``torchrun`` both loops train with
DistributedDataParallel on slices of the global batch (see ``labkit.distributed``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint
from .config import LabConfig, get_config
from .maskgit import MaskGit
from .metrics import masked_token_accuracy, masked_token_hits
from .progress import tqdm
from .run import (TrainingRun, batch_generator, data_provenance, finished_steps, random_streams,
                  refuse_unfinished, wrap_ddp)
from .utils import atomic_path, autocast, fingerprint, get_device, run_dir, seed_everything
from .vqgan import VQGAN, codebook_usage

MIN_LR_RATIO = 0.1
VAL_SUBSET = 128        # validation token grids scored at each log step (kept small: CPU time)
HOW_TO_TRAIN = {
    "vqgan": "run notebooks/00_data_and_tokenizer.ipynb or `python -m labkit train-tokenizer --profile {profile}`",
    "mvtm": "run notebooks/02_train_mvtm.ipynb or `python -m labkit train-mvtm --profile {profile}`",
}


# ----------------------------------------------------------------------------- shared pieces

def lr_at(step: int, peak: float, warmup: int, total: int, floor: float = MIN_LR_RATIO,
          hold: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then a cosine from
    ``peak`` down to ``floor * peak`` at the last step (floor 1: constant after the warmup).
    ``hold`` > 0 keeps the peak for that share of the steps after the warmup first and fits
    the whole cosine into the rest (warmup, plateau, decay)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    after = max(1, total - warmup)
    plateau = hold * after
    if step - warmup < plateau:
        return peak
    progress = (step - warmup - plateau) / max(1.0, after - plateau)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


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


def as_images(images) -> torch.Tensor:
    """An ImageSet or a tensor -> float tensor (n, 3, S, S) in [0, 1], on the CPU."""
    if hasattr(images, "tensors"):
        images = images.tensors()
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (n, 3, S, S) in [0, 1] or an ImageSet, "
                         f"got {images.dtype} of shape {tuple(images.shape)}")
    return images.float().cpu()


# ----------------------------------------------------------------------------- stage 1

def train_vqgan(cfg: LabConfig, images, run_dir: str | Path, device=None, resume: bool = True,
                progress: bool = True, name: str = "vqgan", stop_after: int | None = None,
                data_source: str | None = None):
    """Train the VQGAN tokenizer on ``images`` ((n, 3, S, S) in [0, 1] or an ImageSet).

    Loss = L1 + MSE of the reconstruction + the commitment term (the codebook itself is
    updated by EMA inside the quantiser). Batches of ``cfg.vq_batch_size`` random images,
    each flipped left-right with probability 1/2. ``stop_after=k`` stops (with a
    checkpoint) after step k, as if interrupted there. The checkpoint records the images'
    fingerprint and source (``data_source``, default the ImageSet's ``source``): resuming
    it with other images raises ``labkit.run.DataMismatchError``.

    Returns ``(vqgan in eval mode, history)``; ``history`` is a list of dicts, one per
    ``cfg.log_every`` steps: step, loss, l1, mse, commit, lr, used_fraction, perplexity,
    elapsed_s. ``vqgan.trained_steps`` is (steps trained, steps planned).
    """
    device = get_device(device)
    source = data_source or getattr(images, "source", "")
    images = _check_images(as_images(images), cfg)
    batch_rng = seed_everything(cfg.seed)          # also seeds the weight initialisation
    model = VQGAN(cfg).to(device)
    optimizer = make_optimizer(model, cfg.vq_lr, cfg, device)
    run = TrainingRun(cfg, Path(run_dir) / f"{name}.safetensors", "vqgan", model, optimizer,
                      random_streams(batch_rng, device), cfg.vq_steps, device=device,
                      desc=f"stage 1 ({name})",
                      data=data_provenance(images, source or f"{len(images)} images"),
                      window=("loss", "l1", "mse", "commit"), resume=resume, progress=progress,
                      stop_after=stop_after)
    if not run.finished:
        _vqgan_loop(run, cfg, model, images, batch_rng)
    model.trained_steps = (run.step, run.total)
    return model.eval(), run.history


def _vqgan_loop(run: TrainingRun, cfg: LabConfig, model: VQGAN, images: torch.Tensor,
                batch_rng: torch.Generator) -> None:
    part = distributed.shard(cfg.vq_batch_size)    # this rank's slice of the global batch
    ddp_model = wrap_ddp(model, run.device)
    optimizer = run.optimizer
    model.train()
    with run:
        while run.more():
            lr = run.set_lr(lr_at(run.step, cfg.vq_lr, cfg.warmup_steps, run.total))
            # batch: B random images, each mirrored left-right with probability 1/2
            index = torch.randint(0, len(images), (cfg.vq_batch_size,), generator=batch_rng)
            flip = torch.rand(cfg.vq_batch_size, generator=batch_rng) < 0.5
            x = images[index[part]]
            x = torch.where(flip[part, None, None, None], x.flip(-1), x).to(run.device)
            # loss = |x_rec - x| + (x_rec - x)^2 + beta ||z_e - sg(z_q)||^2   (means)
            with autocast(run.device):
                x_rec, indices, commit = ddp_model(x)
            x_rec = x_rec.float()
            l1 = (x_rec - x).abs().mean()
            mse = (x_rec - x).pow(2).mean()
            loss = l1 + mse + commit
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Every slice has the same size, so the mean of the ranks' means is the loss of
            # the global batch (the logged and NaN-checked numbers).
            losses = distributed.all_reduce_sum(
                torch.stack([loss, l1, mse, commit]).detach()) / distributed.world_size()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            run.check_finite(losses[0], grad_norm)
            optimizer.step()
            run.count_step(loss=losses[0], l1=losses[1], mse=losses[2], commit=losses[3])
            if run.log_due():
                usage = codebook_usage(distributed.all_gather_cat(indices), cfg.num_codebook_vectors)
                entry = run.log(lr, used_fraction=usage["used_fraction"], perplexity=usage["perplexity"])
                run.bar.set_postfix(loss=f"{entry['loss']:.4f}", codes=f"{usage['used_fraction']:.0%}")
            run.end_step()


def _check_images(images: torch.Tensor, cfg: LabConfig) -> torch.Tensor:
    if images.shape[-1] != cfg.image_size:
        raise ValueError(f"images are {images.shape[-1]}x{images.shape[-1]} but profile "
                         f"{cfg.profile!r} works on {cfg.image_size}x{cfg.image_size}: load them "
                         f"with labkit.load_dataset(cfg, folder) or load_image_folder(folder, "
                         f"{cfg.image_size}), which resize, or use get_config(..., "
                         f"image_size={images.shape[-1]})")
    if len(images) == 0:
        raise ValueError("no training images: the image set is empty")
    return images


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
        with atomic_path(cache_path) as tmp:
            save_file({"tokens": tokens.contiguous()}, str(tmp), metadata=keys)
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


def mvtm_name(cfg: LabConfig, variant: str = "") -> str:
    """The checkpoint name of the stage-2 run ``cfg`` describes: one name whoever trains it
    (notebook 02, notebook 03, your own code), so a run is trained once and then loaded.

    "mvtm" for the profile's own run (the one notebooks 04-05 and the CLI load); any run that
    differs from it in the loss, the seed, the steps, the label smoothing, the warm-up or the
    rate's floor names its loss, seed and steps, then the label smoothing, warm-up and floor if
    they differ, then ``variant`` (a change to the code, e.g. an injected bug) if given:

        mvtm_name(get_config("cpu"))                          -> "mvtm"
        mvtm_name(get_config("cpu", loss="full"))             -> "mvtm-full-seed0-steps1000"
        mvtm_name(get_config("cpu", seed=1, label_smoothing=0.0)) -> "mvtm-masked-seed1-steps1000-ls0"
        mvtm_name(get_config("cpu"), variant="bug")           -> "mvtm-masked-seed0-steps1000-bug"
    """
    profile = get_config(cfg.profile)
    fields = ("loss", "seed", "mvtm_steps", "label_smoothing", "warmup_steps", "mvtm_lr_floor",
              "mvtm_lr_hold")
    if not variant and all(getattr(cfg, field) == getattr(profile, field) for field in fields):
        return "mvtm"
    name = f"mvtm-{cfg.loss}-seed{cfg.seed}-steps{cfg.mvtm_steps}"
    if cfg.label_smoothing != profile.label_smoothing:
        name += f"-ls{cfg.label_smoothing:g}"
    if cfg.warmup_steps != profile.warmup_steps:
        name += f"-warmup{cfg.warmup_steps}"
    if cfg.mvtm_lr_floor != profile.mvtm_lr_floor:
        name += f"-floor{cfg.mvtm_lr_floor:g}"
    if cfg.mvtm_lr_hold != profile.mvtm_lr_hold:
        name += f"-hold{cfg.mvtm_lr_hold:g}"
    return f"{name}-{variant}" if variant else name


def train_mvtm(cfg: LabConfig, vqgan: VQGAN, tokens: torch.Tensor, run_dir: str | Path, device=None,
               resume: bool = True, progress: bool = True, name: str = "mvtm",
               loss: str | None = None, label_smoothing: float | None = None,
               val_tokens: torch.Tensor | None = None, stop_after: int | None = None,
               compile: bool | None = None, data_source: str | None = None,
               maskgit_class: type[MaskGit] = MaskGit):
    """Train the bidirectional transformer of ``MaskGit(cfg, vqgan)`` with MVTM.

    tokens: (n, N) token grids from ``extract_tokens``. Each step takes a random batch,
    masks ceil(gamma(r) N) tokens per grid (r ~ U(0, 1)), and minimises the cross-entropy
    (``loss="masked"``: masked positions only; ``"full"``: all positions; both override
    ``cfg.loss`` / ``cfg.label_smoothing`` when given). ``val_tokens`` (optional) are
    scored every ``cfg.log_every`` steps. ``stop_after=k`` stops (with a checkpoint)
    after step k, as if interrupted there. The checkpoint records the tokens' fingerprint,
    their source (``data_source``) and the tokenizer's: resuming with other tokens raises
    ``labkit.run.DataMismatchError``; a tokenizer that stopped before its last step
    (``vqgan.trained_steps``) raises ``labkit.run.UnfinishedStageError``.

    The fast path: the tokens stay on the device; on a GPU the batch and its masks are
    drawn there, bf16 autocast is on, and the loss is read back (and checked) only at log
    and checkpoint steps, so the GPU never waits for Python. ``compile`` runs the
    transformer through ``torch.compile`` for training (default: on CUDA only; the first
    steps then take a while to compile). Checkpoints hold the plain module's weights
    either way.

    ``maskgit_class`` (a subclass of ``MaskGit`` that changes one method, e.g. notebook 03's
    hypothesis of a bug) trains that class instead, by the same loop, seed and checkpoints.

    Returns ``(maskgit in eval mode, history)``; ``history`` entries: step, loss,
    accuracy (masked tokens), lr, elapsed_s, and val_loss / val_accuracy with
    ``val_tokens``.
    """
    device = get_device(device)
    if not (isinstance(maskgit_class, type) and issubclass(maskgit_class, MaskGit)):
        raise TypeError(f"maskgit_class must be labkit.MaskGit or a subclass of it, got {maskgit_class!r}")
    cfg = cfg.replace(**{key: value for key, value in
                         (("loss", loss), ("label_smoothing", label_smoothing)) if value is not None})
    refuse_unfinished("the tokenizer", getattr(vqgan, "trained_steps", None),
                      "Finish stage 1 first: run the same stage-1 command (or train_vqgan) again "
                      "to resume it.")
    tokens = _check_tokens(tokens, cfg, "tokens")
    if len(tokens) == 0:
        raise ValueError("no training tokens: extract_tokens got no images")
    val_tokens = None if val_tokens is None else _check_tokens(val_tokens, cfg, "val_tokens")[:VAL_SUBSET]
    path = Path(run_dir) / f"{name}.safetensors"
    tokenizer = fingerprint(vqgan)
    data = data_provenance(tokens, data_source or f"{len(tokens)} token grids")
    compile = device.type == "cuda" if compile is None else compile

    seed_everything(cfg.seed)                      # also seeds the weight initialisation
    batch_rng = batch_generator(cfg.seed, device)
    maskgit = maskgit_class(cfg, vqgan=vqgan.eval()).to(device)
    optimizer = make_optimizer(maskgit.transformer, cfg.mvtm_lr, cfg, device)
    run = TrainingRun(cfg, path, "transformer", maskgit.transformer, optimizer,
                      random_streams(batch_rng, device), cfg.mvtm_steps, device=device,
                      desc=f"stage 2 ({name})", data=data, window=("loss", "accuracy"),
                      resume=resume, progress=progress, stop_after=stop_after,
                      extra={"tokenizer": tokenizer},
                      check=lambda ckpt: _check_tokenizer(ckpt, tokenizer, path))
    if not run.finished:
        _mvtm_loop(run, cfg, maskgit, tokens.to(device), batch_rng, val_tokens, compile)
    return maskgit.eval(), run.history


def mvtm_step(maskgit: MaskGit, optimizer: torch.optim.Optimizer, z: torch.Tensor,
              generator: torch.Generator | None, grad_clip: float, check_finite) -> tuple:
    """One MVTM training step on the token grids z: (B, N) (the course's stage-2 loop body).

    Masks, predicts and scores with ``maskgit.forward_tokens`` and ``maskgit.loss`` (under
    ``autocast``), back-propagates, clips the gradient norm of the transformer to
    ``grad_clip``, calls ``check_finite(loss, grad_norm)`` (the run's NaN watch) and
    updates the weights. Returns (loss, logits (B, N, K), z (B, N), mask (B, N) bool).
    """
    # BEGIN SOLUTION TODO2 step2
    # HINT: mask and predict with the MVTM forward (under autocast of the model's device):
    # HINT: logits (B, N, K), z (B, N), mask (B, N); loss = the MVTM cross-entropy (maskgit.loss);
    # HINT: clear the old gradients, back-propagate, clip the transformer's gradient norm to
    # HINT: grad_clip, give (loss, grad_norm) to check_finite BEFORE the optimizer's step
    with autocast(maskgit.device):
        logits, z, mask = maskgit.forward_tokens(z, generator)
        loss = maskgit.loss(logits, z, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(maskgit.transformer.parameters(), grad_clip)
    check_finite(loss, grad_norm)
    optimizer.step()
    # END SOLUTION
    return loss, logits, z, mask


def _mvtm_loop(run: TrainingRun, cfg: LabConfig, maskgit: MaskGit, tokens: torch.Tensor,
               batch_rng: torch.Generator, val_tokens: torch.Tensor | None, compile: bool) -> None:
    model, optimizer = maskgit.transformer, run.optimizer
    part = distributed.shard(cfg.mvtm_batch_size)  # this rank's slice of the global batch
    ddp_model = wrap_ddp(model, run.device)
    # The step runs through ``trainer`` (the same weights, maybe compiled); ``maskgit`` and
    # ``model`` stay plain modules, for evaluation, checkpoints and the caller.
    trainer = type(maskgit)(cfg, maskgit.vqgan, torch.compile(model)) if compile else maskgit
    if compile and ddp_model is not model:
        ddp_model = torch.compile(ddp_model)
    maskgit.train()
    maskgit.vqgan.eval()
    with run:
        while run.more():
            lr = run.set_lr(lr_at(run.step, cfg.mvtm_lr, cfg.warmup_steps, run.total,
                                  cfg.mvtm_lr_floor, cfg.mvtm_lr_hold))
            # batch: B random token grids, drawn on the device where the tokens live
            index = torch.randint(0, len(tokens), (cfg.mvtm_batch_size,), generator=batch_rng,
                                  device=batch_rng.device)
            z = tokens[index.to(run.device)]
            # mask ceil(gamma(r) N) tokens, r ~ U(0, 1); loss = CE(logits, z) on the masked
            # tokens (cfg.loss="masked") or on all of them ("full")
            with run.first_compiled_step(compile):   # compiles the graphs, the first time
                if distributed.is_distributed():
                    loss, loss_seen, hits, count = distributed.mvtm_shard_step(
                        maskgit, ddp_model, z, batch_rng, part)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    run.check_finite(loss_seen, grad_norm)
                    optimizer.step()
                else:
                    loss, logits, z, mask = mvtm_step(trainer, optimizer, z, batch_rng,
                                                      cfg.grad_clip, run.check_finite)
                    loss_seen = loss.detach()
                    hits, count = masked_token_hits(logits, z, mask)
            run.count_step(loss=loss_seen, accuracy=hits.double() / count.double())
            if run.log_due():
                val = (evaluate_mvtm(maskgit, val_tokens, cfg)
                       if val_tokens is not None and distributed.is_main() else {})
                entry = run.log(lr, **val)
                run.bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['accuracy']:.1%}")
            run.end_step()


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


def _load(path: Path, stage: str, part: str, cfg: LabConfig, allow_unfinished: bool):
    """The checkpoint of a stage; refused while unfinished unless ``allow_unfinished``."""
    _require(path, stage, cfg)
    ckpt = load_checkpoint(path, part=part, config=cfg)
    if not allow_unfinished:
        how = HOW_TO_TRAIN[stage].format(profile=cfg.profile)
        refuse_unfinished(str(path), finished_steps(ckpt),
                          f"Finish it first: {how} (it resumes), or pass allow_unfinished=True "
                          "to use it as it is.")
    return ckpt


def load_vqgan(run_dir: str | Path, cfg: LabConfig, device=None, name: str = "vqgan",
               allow_unfinished: bool = False) -> VQGAN:
    """The trained tokenizer of ``<run_dir>/<name>.safetensors``, in eval mode.
    ``vqgan.trained_steps`` is (steps trained, steps planned), or None if not recorded."""
    ckpt = _load(Path(run_dir) / f"{name}.safetensors", "vqgan", "vqgan", cfg, allow_unfinished)
    vqgan = ckpt.load_model("vqgan", VQGAN(cfg)).to(get_device(device)).eval()
    vqgan.trained_steps = finished_steps(ckpt)
    return vqgan


def load_maskgit(run_dir: str | Path, cfg: LabConfig, device=None, vqgan_name: str = "vqgan",
                 name: str = "mvtm", allow_unfinished: bool = False) -> MaskGit:
    """The trained MaskGit (tokenizer + transformer) of ``run_dir``, in eval mode."""
    vqgan = load_vqgan(run_dir, cfg, device, vqgan_name, allow_unfinished)
    path = Path(run_dir) / f"{name}.safetensors"
    ckpt = _load(path, "mvtm", "transformer", cfg, allow_unfinished)
    _check_tokenizer(ckpt, fingerprint(vqgan), path)
    maskgit = MaskGit(cfg, vqgan=vqgan)
    ckpt.load_model("transformer", maskgit.transformer)
    return maskgit.to(get_device(device)).eval()


__all__ = ["run_dir", "train_vqgan", "extract_tokens", "train_mvtm", "evaluate_mvtm",
           "load_vqgan", "load_maskgit", "mvtm_name", "mvtm_step", "lr_at", "make_optimizer", "MIN_LR_RATIO"]
