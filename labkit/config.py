"""One config type, three named profiles.

    cfg = get_config("cpu")                 # the embedded default
    cfg = get_config("smoke", mvtm_steps=5) # any field can be overridden by name

Profiles differ only in numbers, never in code paths:

- ``smoke``: seconds; what the tests and ``pytest --nbval`` use.
- ``cpu``:   the embedded default; both stages train on a 2-core laptop CPU in minutes.
- ``gpu``:   the course sizes (64x64 images, 16x16 tokens, codebook 1024, dim 768,
             15 layers, MLP 1536, 16 heads).

The default profile comes from the ``LABKIT_PROFILE`` environment variable, else ``cpu``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

PROFILES = ("smoke", "cpu", "gpu")

# Fields that shape the weights of each stage. A checkpoint can only be loaded into a
# model whose config agrees on these; everything else (steps, learning rate...) may differ.
ARCH_FIELDS = {
    "vqgan": ("image_size", "vq_channels", "vq_res_blocks", "latent_dim", "num_codebook_vectors"),
    "transformer": (
        "image_size", "vq_channels", "num_codebook_vectors",  # fix N and the vocabulary
        "dim", "num_layers", "num_heads", "mlp_dim",
    ),
    "catnet": ("image_size", "catnet_channels"),
}


@dataclass(frozen=True)
class LabConfig:
    profile: str = "cpu"
    seed: int = 0

    # --- data: procedural toy cats (labkit.toycats) and brush masks (labkit.masks) ---
    image_size: int = 64
    n_train: int = 8000
    n_val: int = 500
    n_test: int = 747              # the course's test-set size
    data_seed: int = 0
    data_workers: int = 2

    # --- stage 1: VQGAN tokenizer (labkit.vqgan) ---
    # Encoder channels per resolution; each step after the first halves the resolution,
    # so the token grid is image_size / 2**(len(vq_channels) - 1).
    vq_channels: tuple[int, ...] = (16, 32, 64)
    vq_res_blocks: int = 1
    latent_dim: int = 64
    num_codebook_vectors: int = 512
    beta: float = 0.25             # commitment weight
    codebook_decay: float = 0.99   # EMA decay of the codebook
    dead_code_threshold: float = 1e-3  # EMA usage below which a code is restarted
    vq_steps: int = 1200
    vq_batch_size: int = 32
    vq_lr: float = 2e-3

    # --- stage 2: bidirectional transformer (labkit.transformer) trained with MVTM ---
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 8
    mlp_dim: int = 512
    dropout: float = 0.0
    attn_drop: float = 0.0
    mvtm_steps: int = 1000
    mvtm_batch_size: int = 32
    mvtm_lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 4.5e-2
    grad_clip: float = 1.0
    warmup_steps: int = 100
    loss: str = "masked"           # "masked" (MaskGIT paper) or "full" (all positions)
    label_smoothing: float = 0.1
    train_gamma: str = "cosine"    # schedule that maps r ~ U(0,1) to the training mask ratio

    # --- iterative decoding (labkit.maskgit) ---
    gamma_type: str = "cosine"
    total_iter: int = 8
    choice_temperature: float = 4.5

    # --- scoring (labkit.catnet / labkit.fid) ---
    catnet_channels: tuple[int, ...] = (16, 32, 64)
    catnet_steps: int = 1500
    catnet_batch_size: int = 64
    catnet_lr: float = 2e-3

    # --- logging / checkpoints ---
    log_every: int = 50
    ckpt_every: int = 250

    # ----- derived values (never set directly) -----
    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vq_channels) - 1)

    @property
    def token_grid(self) -> int:
        return self.image_size // self.downsample

    @property
    def num_image_tokens(self) -> int:
        return self.token_grid ** 2

    @property
    def mask_token_id(self) -> int:
        # The vocabulary is the codebook plus one [MASK] id at the end, as in the course.
        return self.num_codebook_vectors

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {PROFILES}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by the tokenizer's "
                f"downsampling factor {self.downsample} (from vq_channels={self.vq_channels})")
        if self.loss not in ("masked", "full"):
            raise ValueError(f"loss={self.loss!r}: use 'masked' (paper) or 'full' (all tokens)")
        from .maskgit import SCHEDULES     # here, not at the top: maskgit imports this module
        for name in ("train_gamma", "gamma_type"):
            if getattr(self, name) not in SCHEDULES:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a mask schedule; "
                                 f"choose one of {', '.join(SCHEDULES)}")
        if isinstance(self.total_iter, bool) or not isinstance(self.total_iter, int) or self.total_iter < 1:
            raise ValueError(f"total_iter={self.total_iter!r}: the number of decoding iterations "
                             "must be an integer >= 1")

    # ----- (de)serialisation, stored beside every checkpoint -----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "LabConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; valid fields: {sorted(names)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)

    def replace(self, **changes) -> "LabConfig":
        return dataclasses.replace(self, **changes)

    def arch_diff(self, other: "LabConfig", part: str) -> dict:
        """Fields of ``ARCH_FIELDS[part]`` where the two configs disagree: {name: (self, other)}."""
        return {name: (getattr(self, name), getattr(other, name))
                for name in ARCH_FIELDS[part] if getattr(self, name) != getattr(other, name)}


_PROFILE_VALUES: dict[str, dict] = {
    "smoke": dict(
        image_size=32, n_train=64, n_val=16, n_test=16, data_workers=1,
        vq_channels=(8, 16, 16), latent_dim=16, num_codebook_vectors=32,
        vq_steps=30, vq_batch_size=16, vq_lr=2e-3,
        dim=32, num_layers=2, num_heads=4, mlp_dim=64,
        mvtm_steps=30, mvtm_batch_size=16, mvtm_lr=2e-3, warmup_steps=5,
        total_iter=4, catnet_channels=(8, 16, 16), catnet_steps=30, catnet_batch_size=32,
        log_every=5, ckpt_every=10,
    ),
    "cpu": dict(),
    "gpu": dict(
        n_train=12000, n_val=3000, n_test=747, data_workers=8,
        vq_channels=(128, 256, 512), vq_res_blocks=2, latent_dim=256, num_codebook_vectors=1024,
        vq_steps=20000, vq_batch_size=128, vq_lr=4e-4,
        dim=768, num_layers=15, num_heads=16, mlp_dim=1536, dropout=0.1, attn_drop=0.1,
        mvtm_steps=20000, mvtm_batch_size=128, mvtm_lr=1e-4, warmup_steps=1000,
        catnet_steps=4000, log_every=100, ckpt_every=1000,
    ),
}


def default_profile() -> str:
    return os.environ.get("LABKIT_PROFILE", "cpu")


def get_config(profile: str | None = None, **overrides) -> LabConfig:
    """The config of a named profile, with any field overridden by keyword."""
    profile = profile or default_profile()
    if profile not in _PROFILE_VALUES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    values = {**_PROFILE_VALUES[profile], **overrides, "profile": profile}
    return LabConfig.from_dict(values)


__all__ = ["LabConfig", "get_config", "default_profile", "PROFILES", "ARCH_FIELDS"]
