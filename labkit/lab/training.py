"""Training both stages with checkpoints that resume exactly: the core's loops, run.

    vqgan, history = train_vqgan(cfg, images, run_dir(cfg))         # stage 1: the tokenizer
    tokens = extract_tokens(vqgan, images, cfg, cache_path=...)      # (n, N) ids, encoded once
    maskgit, history = train_mvtm(cfg, vqgan, tokens, run_dir(cfg))  # stage 2: the transformer
    maskgit = load_maskgit(run_dir(cfg), cfg)                        # both, trained

The loops themselves, and the student's ``mvtm_step``, are ``labkit.core.train``; this module
gives them a ``labkit.lab.run.TrainingRun`` (resume, checkpoints, Ctrl-C, the NaN watch, the
log and the progress bar, several GPUs) and checks what goes in. Checkpoints:
``<run_dir>/<name>.safetensors`` and a ``.json`` summary, every ``cfg.ckpt_every`` steps, at the
end and on Ctrl-C; calling again resumes, and ends with the weights of an uninterrupted run
(bit for bit on the CPU); a finished checkpoint is loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..config import LabConfig, get_config
from ..core.checks import check_tokens
from ..core.maskgit import MaskGit
from ..core.train import make_optimizer, mvtm_loop, vqgan_loop
from ..core.vqgan import VQGAN
from ..data.holes import training_token_holes
from .checkpoint import CheckpointError, load_checkpoint, write_safetensors
from .progress import tqdm
from .run import (RunOptions, TrainingRun, batch_generator, data_provenance, finished_steps,
                  random_streams, refuse_unfinished)
from .utils import fingerprint, get_device, run_dir, seed_everything

VAL_SUBSET = 128        # validation token grids scored at each log step (kept small: CPU time)
HOW_TO_TRAIN = {
    "vqgan": "run notebooks/00_data_and_tokenizer.ipynb or `python -m labkit train-tokenizer --profile {profile}`",
    "mvtm": "run notebooks/02_train_mvtm.ipynb or `python -m labkit train-mvtm --profile {profile}`",
}


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

def train_vqgan(cfg: LabConfig, images, run_dir: str | Path, options: RunOptions | None = None):
    """Train the VQGAN tokenizer on ``images`` ((n, 3, S, S) in [0, 1] or an ImageSet) with
    ``labkit.core.train.vqgan_loop``, checkpointed to ``<run_dir>/<options.name or "vqgan">.safetensors``.

    The checkpoint records the images' fingerprint and source (``options.data_source``, default
    the ImageSet's ``source``): resuming it with other images raises ``DataMismatchError``.
    Returns ``(vqgan in eval mode, history)``, a history entry every ``cfg.log_every`` steps;
    ``vqgan.trained_steps`` is (steps trained, steps planned).
    """
    options = options or RunOptions()
    device = get_device(options.device)
    source = options.data_source or getattr(images, "source", "")
    images = _check_images(as_images(images), cfg)
    batch_rng = seed_everything(cfg.seed)          # also seeds the weight initialisation
    model = VQGAN(cfg).to(device)
    optimizer = make_optimizer(model, cfg.vq_lr, cfg, device)
    run = TrainingRun(cfg, Path(run_dir) / f"{options.name or 'vqgan'}.safetensors", {"vqgan": model}, optimizer,
                      random_streams(batch_rng, device), options,
                      {"data": data_provenance(images, source or f"{len(images)} images")})
    if not run.finished:
        vqgan_loop(run, cfg, model, images, batch_rng)
    model.trained_steps = (run.step, run.total)
    return model.eval(), run.history


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
    re-encoded instead of silently reusing stale tokens; a cache that does not hold what its
    keys say (unreadable, or not one grid of ids per image) is encoded again, with a warning.
    """
    images = as_images(images)
    keys = {"format": "labkit-tokens-1", "tokenizer": fingerprint(vqgan),
            "data": fingerprint(images)}
    if cache_path is not None:
        cache_path = Path(cache_path)
        cached = _read_token_cache(cache_path, keys, len(images), cfg)
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
        write_safetensors(cache_path, {"tokens": tokens.contiguous()}, keys)
    return tokens


def _read_token_cache(path: Path, keys: dict, n_images: int, cfg: LabConfig) -> torch.Tensor | None:
    """The cached tokens if the file exists, matches ``keys`` and holds ``n_images`` grids of
    ``cfg``'s ids; None otherwise (with a warning when the file is not what it says)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}) != keys:
                return None                         # made for another tokenizer or other images
            tokens = handle.get_tensor("tokens")
    except (SafetensorError, OSError, ValueError) as error:
        warnings.warn(f"cannot read the token cache {path} ({error}); encoding the images again",
                      stacklevel=3)
        return None
    expected = (n_images, cfg.num_image_tokens)
    if (tokens.dtype != torch.long or tuple(tokens.shape) != expected
            or (tokens.numel() and (tokens.min() < 0 or tokens.max() >= cfg.num_codebook_vectors))):
        ids = f", ids {tokens.min()}..{tokens.max()}" if tokens.numel() else ""
        warnings.warn(f"the token cache {path} is damaged: it holds {tokens.dtype} {tuple(tokens.shape)}"
                      f"{ids}, not the {expected[0]} grids of {expected[1]} ids in "
                      f"[0, {cfg.num_codebook_vectors}) its keys say; encoding the images again",
                      stacklevel=3)
        return None
    return tokens


# ----------------------------------------------------------------------------- stage 2

def build_maskgit(cfg: LabConfig, vqgan: VQGAN | None = None, transformer=None,
                  maskgit_class: type[MaskGit] = MaskGit) -> MaskGit:
    """A ``maskgit_class`` (MaskGit or a subclass) for ``cfg``, with the training holes its
    ``train_mask`` asks for (``labkit.data.holes.training_token_holes``; none for "random")."""
    if not (isinstance(maskgit_class, type) and issubclass(maskgit_class, MaskGit)):
        raise TypeError(f"maskgit_class must be labkit.MaskGit or a subclass of it, got {maskgit_class!r}")
    holes = None if cfg.train_mask == "random" else training_token_holes(cfg)
    return maskgit_class(cfg, vqgan, transformer, holes)


def train_mvtm(cfg: LabConfig, vqgan: VQGAN, tokens: torch.Tensor, run_dir: str | Path,
               options: RunOptions | None = None, val_tokens: torch.Tensor | None = None,
               conditions: torch.Tensor | None = None, maskgit_class: type[MaskGit] = MaskGit):
    """Train the bidirectional transformer of ``MaskGit(cfg, vqgan)`` on the token grids
    ``tokens`` (n, N) from ``extract_tokens``, with ``labkit.core.train.mvtm_loop``, into
    ``<run_dir>/<options.name or "mvtm">.safetensors`` (``mvtm_name(cfg)`` names each recipe apart).

    val_tokens: scored every ``cfg.log_every`` steps; conditions: (n, A) the grids' attribute
    value ids (``labkit.data.toycats.condition_ids``), needed when ``cfg.condition`` is set;
    maskgit_class: a subclass of MaskGit that changes one method (notebook 03's hypothesis of a
    bug), trained by the same loop, seed and checkpoints.
    The checkpoint records the tokens' fingerprint and the tokenizer's: resuming with other
    tokens raises ``DataMismatchError``, a tokenizer that stopped early ``UnfinishedStageError``.
    On CUDA the batches and masks are drawn on the GPU, bf16 autocast is on, the loss is read
    back only at log and checkpoint steps, and the transformer is compiled (``options.compile``).
    Returns ``(maskgit in eval mode, history)``: step, loss, accuracy (masked tokens), lr,
    elapsed_s, and val_loss / val_accuracy with ``val_tokens``.
    """
    options = options or RunOptions()
    device = get_device(options.device)
    refuse_unfinished("the tokenizer", getattr(vqgan, "trained_steps", None),
                      "Finish stage 1 first: run the same stage-1 command (or train_vqgan) again "
                      "to resume it.")
    tokens = check_tokens(tokens, cfg, "tokens")
    if len(tokens) == 0:
        raise ValueError("no training tokens: extract_tokens got no images")
    val_tokens = None if val_tokens is None else check_tokens(val_tokens, cfg, "val_tokens")[:VAL_SUBSET]
    conditions = _check_conditions(conditions, cfg, len(tokens))
    path = Path(run_dir) / f"{options.name or 'mvtm'}.safetensors"
    tokenizer = fingerprint(vqgan)
    compile = device.type == "cuda" if options.compile is None else options.compile

    seed_everything(cfg.seed)                      # also seeds the weight initialisation
    batch_rng = batch_generator(cfg.seed, device)
    maskgit = build_maskgit(cfg, vqgan.eval(), maskgit_class=maskgit_class).to(device)
    optimizer = make_optimizer(maskgit.transformer, cfg.mvtm_lr, cfg, device)
    source = options.data_source or f"{len(tokens)} token grids"
    run = TrainingRun(cfg, path, {"transformer": maskgit.transformer}, optimizer,
                      random_streams(batch_rng, device), options,
                      {"data": data_provenance(tokens, source), "tokenizer": tokenizer},
                      check=lambda ckpt: _check_tokenizer(ckpt, tokenizer, path))
    if not run.finished:
        # The steps run through ``trainer``: the same weights, maybe compiled and spread over
        # several GPUs; ``maskgit`` stays the plain module, for validation, checkpoints and you.
        transformer = run.parallel(maskgit.transformer)
        if compile:
            transformer = torch.compile(transformer)
        trainer = maskgit if transformer is maskgit.transformer else \
            type(maskgit)(cfg, maskgit.vqgan, transformer, maskgit.training_holes)
        run.compiled = compile
        mvtm_loop(run, cfg, maskgit, tokens.to(device), batch_rng, val_tokens, trainer,
                  None if conditions is None else conditions.to(device))
    return maskgit.eval(), run.history


def _check_conditions(conditions, cfg: LabConfig, n: int) -> torch.Tensor | None:
    """The grids' attribute ids (n, A) when the model is conditioned; none when it is not."""
    if not cfg.condition:
        if conditions is not None:
            raise ValueError("conditions were given but cfg.condition is empty: set condition=(...) "
                             "to train a conditioned model, or leave conditions out")
        return None
    if conditions is None:
        raise ValueError(f"cfg.condition={cfg.condition} conditions the transformer on attributes, but no "
                         "conditions were given: pass the training images' (labkit.data.toycats.condition_ids), "
                         "or --set condition= for an unconditioned model (images without labels)")
    conditions = torch.as_tensor(conditions).long()
    if conditions.shape != (n, len(cfg.condition)):
        raise ValueError(f"conditions must be (n, A) = ({n}, {len(cfg.condition)}), one row per token grid, "
                         f"got {tuple(conditions.shape)}")
    return conditions


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
    maskgit = build_maskgit(cfg, vqgan)
    ckpt.load_model("transformer", maskgit.transformer)
    return maskgit.to(get_device(device)).eval()


__all__ = ["run_dir", "RunOptions", "train_vqgan", "extract_tokens", "train_mvtm", "build_maskgit",
           "load_vqgan", "load_maskgit", "mvtm_name", "as_images"]
