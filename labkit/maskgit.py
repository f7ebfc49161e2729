"""MaskGIT: masked visual token modelling (MVTM) and iterative decoding.

The mask schedules gamma live in ``labkit.schedules`` (``SCHEDULES`` and ``gamma_func`` are
re-exported here); the decoding settings default to the config's (``decode_settings``).

Data flow (shapes for the course sizes)::

    image (B, 3, 64, 64) in [0, 1]
      -- VQGAN encoder + quantiser -->  z_indices (B, 256) in [0, K)
      -- MVTM (training): mask ceil(gamma(r) * N) tokens per image, r ~ U(0, 1),
         replace them by the [MASK] id K, predict the originals -> logits (B, 256, K)
      -- decoding (inpainting): start from the tokens of the masked image with the hole's
         tokens set to [MASK]; reveal the most confident predictions over T iterations
      -- VQGAN decoder --> image (B, 3, 64, 64)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import LabConfig, check_field, check_sweet_spot
from .masks import as_pixel_mask, paste_known, pixel_to_token_mask, smooth_fill, training_token_holes
from .schedules import SCHEDULES, gamma_func
from .transformer import BidirectionalTransformer
from .vqgan import VQGAN

def mvtm_loss(logits: torch.Tensor, z_indices: torch.Tensor, mask: torch.Tensor,
              variant: str = "masked", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the predicted tokens.

    logits: (B, N, K); z_indices: (B, N); mask: (B, N) bool, True where the input was [MASK].
    ``variant="masked"`` averages over masked positions only (the MaskGIT paper);
    ``variant="full"`` over all positions, where visible tokens are trivially copied.
    """
    check_field("loss", variant, "variant")
    losses = F.cross_entropy(logits.flatten(0, 1).float(), z_indices.flatten(),
                             reduction="none", label_smoothing=label_smoothing).view_as(z_indices)
    if variant == "masked":
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    return losses.mean()


def gumbel_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise, drawn from ``generator`` when given (on its device)."""
    if generator is None:
        uniform = torch.rand(shape, device=device)
    else:
        uniform = torch.rand(shape, generator=generator, device=generator.device).to(device)
    uniform = uniform.clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(uniform))


@dataclass(frozen=True)
class DecodeSettings:
    """How a decoding run was set: schedule gamma, T iterations, stopped after t* = sweet_spot,
    choice temperature, and whether tokens were sampled (else the most likely one)."""
    gamma: str
    total_iter: int
    sweet_spot: int
    choice_temperature: float
    sample: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        stop = "" if self.sweet_spot == self.total_iter else f", stopped at t*={self.sweet_spot}"
        return (f"{self.gamma}, T={self.total_iter}{stop}, choice temperature {self.choice_temperature:g}, "
                f"{'sampled' if self.sample else 'argmax'} tokens")


@dataclass
class DecodeTrace:
    """What iterative decoding did, per iteration t = 1..t* (t* = T unless stopped early).

    predictions: (t*, B, N) the full token prediction after iteration t (known tokens included)
    still_masked: (t*, B, N) bool, the tokens still masked after iteration t
    initial_mask: (B, N) bool, the tokens masked before decoding (the hole)
    settings: the decoding settings that produced it
    """
    predictions: torch.Tensor
    still_masked: torch.Tensor
    initial_mask: torch.Tensor
    settings: DecodeSettings

    def __len__(self) -> int:
        return self.predictions.shape[0]

    def masked_counts(self) -> torch.Tensor:
        """(T + 1, B): m_0 = n0, then m_t after each iteration."""
        return torch.cat([self.initial_mask.sum(1)[None], self.still_masked.sum(2)])


@dataclass
class InpaintResult:
    """Pixels of an inpainting run.

    masked_input: (B, 3, H, W) the input as encoded: the hole filled grey (or smoothly)
    pixel_mask: (B, 1, H, W) bool, True = missing
    raw_steps: (t*, B, 3, H, W) the decoded prediction after each iteration 1..t*
               ((1, B, 3, H, W), the last one only, with ``decode_every_step=False``)
    trace: the token-level ``DecodeTrace``
    composite: whether ``images`` / ``steps`` paste the known pixels back
    """
    masked_input: torch.Tensor
    pixel_mask: torch.Tensor
    raw_steps: torch.Tensor
    trace: DecodeTrace
    original: torch.Tensor
    composite: bool = True

    def steps(self, composite: bool | None = None) -> torch.Tensor:
        composite = self.composite if composite is None else composite
        if not composite:
            return self.raw_steps
        return paste_known(self.raw_steps, self.original, self.pixel_mask)

    @property
    def images(self) -> torch.Tensor:
        """(B, 3, H, W) the result at the last decoded iteration (the sweet spot if given)."""
        return self.steps()[-1]

    @property
    def settings(self) -> DecodeSettings:
        return self.trace.settings


HOLE_BANK = 2048   # brush-stroke holes drawn once for train_mask="holes" (about 2 s)


class MaskGit(nn.Module):
    """The course's ``MaskGit``: a VQGAN tokenizer plus a bidirectional transformer."""

    def __init__(self, config: LabConfig, vqgan: VQGAN | None = None,
                 transformer: BidirectionalTransformer | None = None):
        super().__init__()
        self.config = config
        self.vqgan = vqgan if vqgan is not None else VQGAN(config)
        self.transformer = transformer if transformer is not None else BidirectionalTransformer(config)
        self.num_image_tokens = config.num_image_tokens
        self.num_codebook_vectors = config.num_codebook_vectors
        self.mask_token_id = config.mask_token_id
        self._holes = None   # the bank of training holes, drawn on first use

    @property
    def device(self) -> torch.device:
        return self.vqgan.quantizer.codebook.device

    def gamma_func(self, mode: str | None = None):
        return gamma_func(mode or self.config.gamma_type)

    @torch.no_grad()
    def encode_to_z(self, x: torch.Tensor):
        """x: (B, 3, H, W) in [0, 1] -> z_q (B, C, h, w), z_indices (B, h * w)."""
        # BEGIN SOLUTION TODO2 step1-1
        # HINT: self.vqgan.encode(x) returns z_q (B, C, h, w), indices (B, h, w) and the commitment loss;
        # HINT: return z_q and the indices flattened to one row of h * w tokens per image: (B, h * w)
        z_q, z_indices, _ = self.vqgan.encode(x)
        return z_q, z_indices.reshape(x.shape[0], -1)
        # END SOLUTION

    # ------------------------------------------------------------------ training (MVTM)
    def random_token_mask(self, batch: int, generator: torch.Generator | None = None,
                          gamma: str | None = None) -> torch.Tensor:
        """(B, N) bool: per image, r ~ U(0, 1) and ceil(gamma(r) * N) random tokens masked.

        With the config's ``train_mask`` "holes" (or "mixed": each image a coin flip) the
        tokens come from ``hole_token_mask`` instead.
        """
        if self.config.train_mask != "random":
            return self.hole_token_mask(batch, generator, gamma)
        gamma = self.gamma_func(gamma or self.config.train_gamma)
        device = generator.device if generator is not None else self.device
        n = self.num_image_tokens
        # BEGIN SOLUTION TODO2 step1-3
        # HINT: per image draw r ~ U(0, 1) from generator (on its device),
        # HINT: mask n_masked = ceil(gamma(r) * N) tokens (at least 1) chosen at random:
        # HINT: mask is (B, N) bool, True = hidden, mask.sum(1) == n_masked
        r = torch.rand(batch, generator=generator, device=device)              # one ratio per image
        n_masked = torch.ceil(gamma(r) * n).long().clamp(1, n)                 # (B,), at least one
        scores = torch.rand(batch, n, generator=generator, device=device)
        ranks = scores.argsort(dim=1).argsort(dim=1)                           # a random order
        mask = ranks < n_masked[:, None]                                       # mask the first n_masked
        # END SOLUTION
        return mask.to(self.device)

    def hole_token_mask(self, batch: int, generator: torch.Generator | None = None,
                        gamma: str | None = None) -> torch.Tensor:
        """(B, N) bool, masks shaped like the test's: per image a brush-stroke hole of n_hole
        tokens (one of HOLE_BANK drawn once by ``masks.training_token_holes``), r ~ U(0, 1)
        and ceil(gamma(r) * n_hole) of the hole's tokens masked at random: the states that
        iterative decoding meets, the whole hole at t = 1, fewer of its tokens later.
        With ``train_mask="mixed"`` the hole of half of the images (a coin flip each) is the
        whole grid, which is ``random_token_mask``'s mask.
        """
        cfg = self.config
        gamma = self.gamma_func(gamma or cfg.train_gamma)
        device = generator.device if generator is not None else self.device
        if self._holes is None:
            self._holes = training_token_holes(cfg.data_seed, HOLE_BANK, cfg.image_size, cfg.downsample)
        pick = torch.randint(0, len(self._holes), (batch,), generator=generator, device=device)
        hole = self._holes.to(device)[pick]                                    # (B, N)
        if cfg.train_mask == "mixed":
            anywhere = torch.rand(batch, generator=generator, device=device) < 0.5
            hole = hole | anywhere[:, None]
        r = torch.rand(batch, generator=generator, device=device)
        n_masked = torch.ceil(gamma(r) * hole.sum(dim=1)).long().clamp(min=1)   # (B,), at least one
        scores = torch.rand(hole.shape, generator=generator, device=device).masked_fill(~hole, 2.0)
        mask = scores.argsort(dim=1).argsort(dim=1) < n_masked[:, None]        # inside the hole only
        return mask.to(self.device)

    def forward_tokens(self, z_indices: torch.Tensor, generator: torch.Generator | None = None):
        """MVTM on token grids (the fast path: tokens extracted once).

        z_indices: (B, N) -> logits (B, N, K), z_indices (B, N), mask (B, N) bool.
        """
        # BEGIN SOLUTION TODO2 step1-3
        # HINT: draw the training mask (B, N) with random_token_mask; replace the hidden ids by
        # HINT: the [MASK] id; the transformer predicts logits (B, N, K) at every position
        mask = self.random_token_mask(z_indices.shape[0], generator)
        masked_ids = z_indices.masked_fill(mask, self.mask_token_id)           # hide the chosen tokens
        logits = self.transformer(masked_ids)                                  # predict all N
        # END SOLUTION
        return logits, z_indices, mask

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """The course's training forward: x (B, 3, H, W) -> (logits, z_indices, mask)."""
        _, z_indices = self.encode_to_z(x)
        return self.forward_tokens(z_indices, generator)

    def loss(self, logits, z_indices, mask, variant: str | None = None,
             label_smoothing: float | None = None) -> torch.Tensor:
        return mvtm_loss(logits, z_indices, mask,
                         variant or self.config.loss,
                         self.config.label_smoothing if label_smoothing is None else label_smoothing)

    # ------------------------------------------------------------------ decoding
    def decode_settings(self, gamma: str | None = None, total_iter: int | None = None,
                        choice_temperature: float | None = None, sweet_spot: int | None = None,
                        sample: bool = False) -> DecodeSettings:
        """The settings of a decoding run: each one given, else the config's (``gamma_type``,
        ``total_iter``, ``choice_temperature``, ``sweet_spot``), checked by the config's rules.

        The config's sweet spot belongs to the config's T: with another ``total_iter`` and no
        ``sweet_spot`` the run goes to t* = T.
        """
        cfg = self.config
        gamma = cfg.gamma_type if gamma is None else gamma
        check_field("gamma_type", gamma, "gamma")
        if total_iter is None:
            total_iter = cfg.total_iter
            if sweet_spot is None:
                sweet_spot = cfg.sweet_spot
        check_field("total_iter", total_iter)
        check_field("sweet_spot", sweet_spot)
        check_sweet_spot(sweet_spot, total_iter)
        choice_temperature = cfg.choice_temperature if choice_temperature is None else choice_temperature
        check_field("choice_temperature", choice_temperature)
        return DecodeSettings(gamma, int(total_iter), int(sweet_spot or total_iter),
                              float(choice_temperature), bool(sample))

    def inpainting(self, token_ids: torch.Tensor, still_masked: torch.Tensor, n0: torch.Tensor,
                   m_prev: torch.Tensor, t: int, total_iter: int, gamma: str, choice_temperature: float,
                   sample: bool = False, generator: torch.Generator | None = None):
        """Iteration t of T of decoding, for a batch of images at once (the course's method).

        token_ids: (B, N) current ids, [MASK] where still masked; still_masked: (B, N) bool;
        n0, m_prev: (B,) initially / currently masked counts; gamma: a schedule name.
        Returns prediction (B, N), new still-masked mask (B, N) and m_t (B,).
        """
        # BEGIN SOLUTION TODO3
        # HINT: log_probs = log_softmax of self.transformer(token_ids): (B, N, K); chosen = argmax
        # HINT: (or argmax of log_probs + Gumbel noise when sample); prediction keeps token_ids where
        # HINT: not still_masked; confidence = log-prob of the chosen token + Gumbel noise scaled by
        # HINT: choice_temperature * (1 - t / total_iter), +inf where not still_masked;
        # HINT: m_t = floor(gamma(t / T) * n0) counted from n0 (never m_prev), at most m_prev - 1;
        # HINT: new mask = the m_t least confident positions: (B, N) bool
        log_probs = self.transformer(token_ids).float().log_softmax(dim=-1)    # (B, N, K), no [MASK]
        if sample:
            noise = gumbel_noise(log_probs.shape, generator, log_probs.device)
            chosen = (log_probs + noise).argmax(dim=-1)                        # a sample per token
        else:
            chosen = log_probs.argmax(dim=-1)
        prediction = torch.where(still_masked, chosen, token_ids)              # known/revealed stay
        confidence = log_probs.gather(-1, chosen[..., None]).squeeze(-1)       # (B, N)
        ratio = t / total_iter
        temperature = choice_temperature * (1 - ratio)                         # anneals to 0
        if temperature > 0:
            confidence = confidence + temperature * gumbel_noise(confidence.shape, generator,
                                                                 confidence.device)
        confidence = confidence.masked_fill(~still_masked, math.inf)           # never re-mask those
        # count from n0, never from the current count; reveal at least one per step
        m_t = torch.floor(self.gamma_func(gamma)(ratio) * n0.double()).long()
        m_t = torch.minimum(m_t, (m_prev - 1).clamp(min=0))
        ranks = confidence.argsort(dim=1).argsort(dim=1)                       # 0 = least confident
        new_mask = ranks < m_t[:, None]
        # END SOLUTION
        return prediction, new_mask, m_t

    @torch.no_grad()
    def inpaint_tokens(self, z_indices: torch.Tensor, token_mask: torch.Tensor, gamma: str | None = None,
                       total_iter: int | None = None, choice_temperature: float | None = None,
                       generator: torch.Generator | None = None, sample: bool = False,
                       sweet_spot: int | None = None) -> DecodeTrace:
        """Iterative decoding of a batch of token grids.

        z_indices: (B, N) tokens of the (masked) images; token_mask: (B, N) bool, True = unknown.
        Runs ``inpainting`` for t = 1..t* of a T-step schedule; every setting left None is
        the config's (see ``decode_settings``).
        """
        settings = self.decode_settings(gamma, total_iter, choice_temperature, sweet_spot, sample)
        if z_indices.shape != token_mask.shape or z_indices.dim() != 2:
            raise ValueError(f"z_indices {tuple(z_indices.shape)} and token_mask "
                             f"{tuple(token_mask.shape)} must both be (B, N)")
        if z_indices.shape[1] != self.num_image_tokens:
            raise ValueError(f"expected N={self.num_image_tokens} tokens per image, got {z_indices.shape[1]}")
        device = self.device
        z_indices = z_indices.to(device)
        still_masked = token_mask.to(device=device, dtype=torch.bool)
        n0 = still_masked.sum(dim=1)
        m_prev = n0.clone()
        token_ids = z_indices.masked_fill(still_masked, self.mask_token_id)
        predictions, masks = [], []
        for t in range(1, settings.sweet_spot + 1):
            prediction, still_masked, m_prev = self.inpainting(
                token_ids, still_masked, n0, m_prev, t, settings.total_iter, settings.gamma,
                settings.choice_temperature, settings.sample, generator)
            token_ids = prediction.masked_fill(still_masked, self.mask_token_id)
            predictions.append(prediction)
            masks.append(still_masked)
        return DecodeTrace(torch.stack(predictions), torch.stack(masks), token_mask.to(device).bool(),
                           settings)

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, pixel_masks: torch.Tensor, gamma: str | None = None,
                total_iter: int | None = None, choice_temperature: float | None = None,
                sweet_spot: int | None = None, composite: bool = True,
                generator: torch.Generator | None = None, sample: bool = False, fill: float | str = 0.5,
                decode_every_step: bool = True, decode_batch: int = 256) -> InpaintResult:
        """Inpaint a batch of images.

        images: (B, 3, H, W) in [0, 1] (pixels under the hole are ignored);
        pixel_masks: (B, H, W) or (B, 1, H, W), True / 1 = missing.
        The hole is filled with grey ``fill`` (as the course's masked images; ``fill="smooth"``:
        with ``labkit.masks.smooth_fill`` of its edges, so that less grey leaks through the
        encoder into the tokens around the hole), encoded, its tokens set to [MASK] and decoded
        for t* iterations of T (the decoding settings left None are the config's, see
        ``decode_settings``); every iteration's prediction is decoded to pixels (only the last
        one with ``decode_every_step=False``, which halves the cost when the steps are not
        needed), ``decode_batch`` images at a time. With ``composite`` the known pixels are
        pasted back.
        """
        if fill != "smooth" and (isinstance(fill, bool) or not isinstance(fill, Real) or not 0 <= fill <= 1):
            raise ValueError(f"fill={fill!r}: expected the grey level of the hole, a number in [0, 1], "
                             "or \"smooth\"")
        if isinstance(decode_batch, bool) or not isinstance(decode_batch, Integral) or decode_batch < 1:
            raise ValueError(f"decode_batch={decode_batch!r}: expected an integer >= 1 (images "
                             "decoded to pixels at a time)")
        settings = self.decode_settings(gamma, total_iter, choice_temperature, sweet_spot, sample)
        images, pixel_masks = check_images_and_masks(images, pixel_masks, self.config.image_size)
        images = images.to(self.device)
        pixel_masks = pixel_masks.to(self.device)
        masked_input = (smooth_fill(images, pixel_masks) if fill == "smooth" else
                        torch.where(pixel_masks, torch.full_like(images, fill), images))
        _, z_indices = self.encode_to_z(masked_input)
        token_mask = pixel_to_token_mask(pixel_masks, self.config.downsample)
        trace = self.inpaint_tokens(z_indices, token_mask, settings.gamma, settings.total_iter,
                                    settings.choice_temperature, generator, settings.sample,
                                    settings.sweet_spot)
        predictions = trace.predictions if decode_every_step else trace.predictions[-1:]
        steps, batch = predictions.shape[:2]
        flat = predictions.flatten(0, 1)                                       # (steps B, N)
        decoded = torch.cat([self.vqgan.decode_indices(chunk)
                             for chunk in flat.split(decode_batch)])           # (steps B, 3, H, W)
        raw_steps = decoded.view(steps, batch, *decoded.shape[1:])
        return InpaintResult(masked_input, pixel_masks, raw_steps, trace, images, composite)


def check_images_and_masks(images, pixel_masks, image_size: int):
    """Validate an image batch (B, 3, S, S) in [0, 1] and its masks.

    Returns the images as float32 (float64 NumPy or torch images are converted) and the
    masks as (B, 1, S, S) bool.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images if images.flags.writeable else images.copy())
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (0 images): give at least one image")
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1], got dtype {images.dtype}; "
                        "divide uint8 images by 255")
    images = images.float()
    if tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]} but this model works "
                         f"on {image_size}x{image_size}; resize them (labkit.datasets.load_image_folder "
                         "does) or use the matching profile")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images {bad[:10]}{' ...' if len(bad) > 10 else ''} hold NaN or infinite "
                         "pixels: every pixel must be a number in [0, 1]")
    if images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ValueError(f"images must lie in [0, 1], got range [{images.min():.3f}, {images.max():.3f}]")
    pixel_masks = as_pixel_mask(pixel_masks)
    if pixel_masks.shape[0] != images.shape[0]:
        raise ValueError(f"{pixel_masks.shape[0]} masks for {images.shape[0]} images: "
                         "give exactly one mask per image")
    if pixel_masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks are {tuple(pixel_masks.shape[-2:])} but images are "
                         f"{tuple(images.shape[-2:])}: they must have the same size")
    return images, pixel_masks


__all__ = ["SCHEDULES", "gamma_func", "mvtm_loss", "gumbel_noise", "DecodeSettings", "DecodeTrace",
           "InpaintResult", "MaskGit", "check_images_and_masks"]
