"""One config type, three named profiles.

    cfg = get_config("cpu")                 # the embedded default
    cfg = get_config("smoke", mvtm_steps=5) # any field can be overridden by name

Profiles differ in numbers and in the training mask, never in code paths:

- ``smoke``: seconds; what the tests and ``pytest --nbval`` use.
- ``cpu``:   the embedded default; both stages train on a 2-core laptop CPU in minutes,
             the transformer on test-like hole masks (``train_mask="holes"``).
- ``gpu``:   the course sizes (64x64 images, 16x16 tokens, codebook 1024, dim 768,
             15 layers, MLP 1536, 16 heads) and the course's random training masks.

The default profile comes from the ``LABKIT_PROFILE`` environment variable, else ``cpu``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from numbers import Integral, Real

from .core.schedules import SCHEDULES

PROFILES = ("smoke", "cpu", "gpu")
TRAIN_MASKS = ("random", "holes", "mixed", "families")   # where MaskGit.random_token_mask hides tokens
# The toy cats' categorical attributes (labkit.data.toycats.ATTRIBUTES) and their numbers of
# values: what the transformer can be conditioned on (``condition``), as MaskGIT on a class.
CONDITION_VALUES = {"fur_colour": 8, "pattern": 5, "eye_colour": 5, "odd_eyed": 3, "pupil": 2,
                    "eyes_closed": 2, "mouth": 3, "whiskers": 3, "background": 8}

# Fields that shape the weights of each stage. A checkpoint can only be loaded into a
# model whose config agrees on these; everything else (steps, learning rate...) may differ.
ARCH_FIELDS = {
    "vqgan": ("image_size", "vq_channels", "vq_res_blocks", "latent_dim", "num_codebook_vectors"),
    "transformer": (
        "image_size", "vq_channels", "num_codebook_vectors",  # fix N and the vocabulary
        "dim", "num_layers", "num_heads", "mlp_dim", "condition",
    ),
    "catnet": ("image_size", "catnet_channels"),
}

# Fields that shape how a stage trains. Resuming (or reusing the finished checkpoint of) a run
# whose config disagrees on one of these would hand back a model the config did not ask for,
# so labkit.lab.run refuses it. The tokenizer leaves out the seed: one run folder's tokenizer
# serves every stage-2 seed (notebook 02's ``seed``); stage 2's checkpoint names carry it.
RECIPE_FIELDS = {
    "vqgan": ("vq_steps", "vq_batch_size", "vq_lr", "warmup_steps", "beta", "codebook_decay",
              "dead_code_threshold", "betas", "weight_decay", "grad_clip"),
    "transformer": ("seed", "mvtm_steps", "mvtm_batch_size", "mvtm_lr", "mvtm_lr_floor", "mvtm_lr_hold", "warmup_steps",
                    "loss", "label_smoothing", "train_gamma", "train_mask", "dropout", "attn_drop",
                    "betas", "weight_decay", "grad_clip", "condition_dropout", "attribute_dropout"),
}


@dataclass(frozen=True)
class LabConfig:
    profile: str = "cpu"
    seed: int = 0

    # --- data: procedural toy cats (labkit.data.toycats) and brush masks (labkit.core.masks) ---
    image_size: int = 64
    n_train: int = 8000
    n_val: int = 500
    n_test: int = 747              # the course's test-set size
    data_seed: int = 0
    data_workers: int = 2

    # --- stage 1: VQGAN tokenizer (labkit.core.vqgan) ---
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

    # --- stage 2: bidirectional transformer (labkit.core.transformer) trained with MVTM ---
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
    train_mask: str = "random"     # "random" tokens anywhere, "holes" inside brush strokes like
                                   # the test masks', "mixed" (each image one or the other), or
                                   # "families" (every hole family of labkit.data.holes, and anywhere)
    condition: tuple[str, ...] = ()  # attributes the transformer is conditioned on (none: the course's)
    condition_dropout: float = 0.25  # share of training grids whose whole condition is dropped
    attribute_dropout: float = 0.25  # share of the other grids' attributes dropped one by one
    mvtm_lr_floor: float = 0.1     # the cosine ends at this share of the peak (0: to zero, 1: flat)
    mvtm_lr_hold: float = 0.0      # share of the steps after the warmup held at the peak before
                                   # the cosine starts (warmup, plateau, decay; 0: no plateau)

    # --- iterative decoding (labkit.core.maskgit) ---
    gamma_type: str = "cosine"
    total_iter: int = 8            # T, the iterations of the schedule
    choice_temperature: float = 4.5  # Gumbel noise on the confidences, annealed to 0 at t = T
    sweet_spot: int | None = None  # stop after t* iterations of the T (None: t* = T)
    guidance: float = 0.0          # classifier-free guidance of a conditioned generation (0: none)

    # --- scoring (labkit.eval.catnet / labkit.eval.fid) ---
    catnet_channels: tuple[int, ...] = (16, 32, 64)
    catnet_steps: int = 1500
    catnet_batch_size: int = 64
    catnet_lr: float = 2e-3
    catnet_degrade: float = 0.5    # share of training images blurred / resampled (labels unchanged)

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
        for name in FIELD_RULES:
            check_field(name, getattr(self, name))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by the tokenizer's "
                f"downsampling factor {self.downsample} (from vq_channels={self.vq_channels})")
        check_sweet_spot(self.sweet_spot, self.total_iter)

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
        return self._diff(other, ARCH_FIELDS[part])

    def recipe_diff(self, other: "LabConfig", part: str) -> dict:
        """Fields of ``RECIPE_FIELDS[part]`` (none for other parts) where the configs disagree."""
        return self._diff(other, RECIPE_FIELDS.get(part, ()))

    def _diff(self, other: "LabConfig", names) -> dict:
        return {name: (getattr(self, name), getattr(other, name))
                for name in names if getattr(self, name) != getattr(other, name)}


# ----------------------------------------------------------------------------- validation
# Every value is checked here, once: the config, decoding arguments (labkit.core.maskgit) and the
# notebooks' parameters (labkit.lab.params) all ask these rules.

def _integer(value, least: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= least


def _number(value, low: float, high: float, high_open: bool = False) -> bool:
    """A finite real in [low, high] (or [low, high) with ``high_open``)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return low <= value and (value < high if high_open else value <= high)


def _sizes(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(_integer(v, 1) for v in value)


# The choice temperature scales Gumbel noise (at most 16.1: gumbel_noise clamps its uniforms)
# added to the float32 log-probabilities of the chosen tokens (a few nats: the argmax's lie in
# [-log K, 0]). Up to
# 1e6 the noise stays below 2**24, where float32 still resolves one nat of log-probability;
# beyond it the model's confidences are rounded away (the order is the noise's alone, so a
# larger value means nothing more), and from about 2e37 the sum overflows to inf and ties the
# known tokens' +inf, which then get re-masked.
MAX_CHOICE_TEMPERATURE = 1e6

_INTEGER = ("an integer", lambda v: isinstance(v, Integral) and not isinstance(v, bool))
_POSITIVE = ("an integer >= 1", lambda v: _integer(v, 1))
_COUNT = ("an integer >= 0", lambda v: _integer(v, 0))
_RATE = ("a finite number > 0", lambda v: _number(v, 0, math.inf) and v > 0)
_SHARE = ("a number in [0, 1)", lambda v: _number(v, 0, 1, high_open=True))
_SCHEDULE = (f"a mask schedule, one of {', '.join(SCHEDULES)}", lambda v: v in SCHEDULES)
_CHANNELS = ("a non-empty tuple of integers >= 1", _sizes)

# field: (what a valid value is, test)
FIELD_RULES = {
    "profile": (f"one of {', '.join(PROFILES)}", lambda v: v in PROFILES),
    "seed": _INTEGER, "data_seed": _INTEGER,
    "image_size": _POSITIVE, "n_train": _POSITIVE, "n_val": _POSITIVE, "n_test": _POSITIVE,
    "data_workers": _COUNT,
    "vq_channels": _CHANNELS, "vq_res_blocks": _COUNT, "latent_dim": _POSITIVE,
    "num_codebook_vectors": ("an integer >= 2", lambda v: _integer(v, 2)),
    "beta": ("a finite number >= 0", lambda v: _number(v, 0, math.inf)),
    "codebook_decay": _SHARE, "dead_code_threshold": ("a number in [0, 1]", lambda v: _number(v, 0, 1)),
    "vq_steps": _POSITIVE, "vq_batch_size": _POSITIVE, "vq_lr": _RATE,
    "dim": _POSITIVE, "num_layers": _POSITIVE, "num_heads": _POSITIVE, "mlp_dim": _POSITIVE,
    "dropout": _SHARE, "attn_drop": _SHARE,
    "mvtm_steps": _POSITIVE, "mvtm_batch_size": _POSITIVE, "mvtm_lr": _RATE,
    "betas": ("two numbers in [0, 1)", lambda v: isinstance(v, (tuple, list)) and len(v) == 2
              and all(_number(b, 0, 1, high_open=True) for b in v)),
    "weight_decay": ("a finite number >= 0", lambda v: _number(v, 0, math.inf)),
    "grad_clip": _RATE, "warmup_steps": _COUNT,
    "loss": ("'masked' (MaskGIT paper) or 'full' (all tokens)", lambda v: v in ("masked", "full")),
    "label_smoothing": _SHARE,
    "train_gamma": _SCHEDULE, "gamma_type": _SCHEDULE,
    "train_mask": (f"one of {', '.join(TRAIN_MASKS)}", lambda v: v in TRAIN_MASKS),
    "condition": (f"a tuple of distinct attributes among {', '.join(CONDITION_VALUES)}",
                  lambda v: isinstance(v, (tuple, list)) and len(set(v)) == len(v)
                  and all(isinstance(a, str) and a in CONDITION_VALUES for a in v)),
    "condition_dropout": _SHARE, "attribute_dropout": _SHARE,
    "mvtm_lr_floor": ("a number in [0, 1]", lambda v: _number(v, 0, 1)),
    "mvtm_lr_hold": ("a number in [0, 1)", lambda v: _number(v, 0, 1, high_open=True)),
    "total_iter": _POSITIVE,
    "choice_temperature": (f"a finite number >= 0 and at most {MAX_CHOICE_TEMPERATURE:g} (more "
                           "noise than float32 log-probabilities resolve)",
                           lambda v: _number(v, 0, MAX_CHOICE_TEMPERATURE)),
    "sweet_spot": ("None or an integer >= 1", lambda v: v is None or _integer(v, 1)),
    "guidance": ("a number in [0, 20]", lambda v: _number(v, 0, 20)),
    "catnet_channels": _CHANNELS, "catnet_steps": _POSITIVE, "catnet_batch_size": _POSITIVE,
    "catnet_lr": _RATE, "catnet_degrade": ("a number in [0, 1]", lambda v: _number(v, 0, 1)),
    "log_every": _POSITIVE, "ckpt_every": _POSITIVE,
}


def check_field(field: str, value, name: str | None = None) -> None:
    """Raise ValueError unless ``value`` is valid for the config field ``field``; the message
    names ``name`` (default: the field), the value and what is expected."""
    expected, test = FIELD_RULES[field]
    if not test(value):
        raise ValueError(f"{name or field}={value!r}: expected {expected}")


def check_sweet_spot(sweet_spot, total_iter) -> None:
    """The decoder stops after t* = ``sweet_spot`` of T = ``total_iter`` iterations: 1 <= t* <= T."""
    if sweet_spot is not None and sweet_spot > total_iter:
        raise ValueError(f"sweet_spot={sweet_spot} is after the last iteration total_iter={total_iter}: "
                         f"choose sweet_spot in 1..{total_iter}, or None for all")


_PROFILE_VALUES: dict[str, dict] = {
    "smoke": dict(
        image_size=32, n_train=64, n_val=16, n_test=16, data_workers=1,
        vq_channels=(8, 16, 16), latent_dim=16, num_codebook_vectors=32,
        vq_steps=30, vq_batch_size=16, vq_lr=2e-3,
        dim=32, num_layers=2, num_heads=4, mlp_dim=64,
        mvtm_steps=30, mvtm_batch_size=16, mvtm_lr=2e-3, warmup_steps=5,
        total_iter=4, catnet_channels=(8, 16, 16), catnet_steps=30, catnet_batch_size=32,
        log_every=5, ckpt_every=10, train_mask="families", condition=tuple(CONDITION_VALUES),
    ),
    # Every hole family and the course's random masks in training, the nine categorical
    # attributes as a condition (so one model inpaints, paints large holes and generates), a
    # flat stage-2 rate: the studies' choices (benchmarks/README.md); every size is the default.
    "cpu": dict(train_mask="families", condition=tuple(CONDITION_VALUES), mvtm_lr_floor=1.0),
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
    """``$LABKIT_PROFILE`` if set, else "cpu"; an unknown value of the variable is named as such
    (a typo there is easy to miss). The one place the variable is read."""
    value = os.environ.get("LABKIT_PROFILE") or "cpu"
    if value not in PROFILES:
        raise ValueError(f"$LABKIT_PROFILE is {value!r}, which is not a profile: set it to one of "
                         f"{', '.join(PROFILES)}, unset it (cpu), or pass --profile")
    return value


def get_config(profile: str | None = None, **overrides) -> LabConfig:
    """The config of a named profile, with any field overridden by keyword."""
    profile = profile or default_profile()
    if profile not in _PROFILE_VALUES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    values = {**_PROFILE_VALUES[profile], **overrides, "profile": profile}
    return LabConfig.from_dict(values)


__all__ = ["LabConfig", "get_config", "default_profile", "PROFILES", "ARCH_FIELDS", "FIELD_RULES",
           "check_field", "check_sweet_spot"]
