"""MaskGIT: mask schedules, masked visual token modelling (MVTM) and iterative decoding.

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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import LabConfig
from .masks import pixel_to_token_mask
from .transformer import BidirectionalTransformer
from .vqgan import VQGAN

SCHEDULES = ("linear", "cosine", "square", "cubic", "sqrt")


def gamma_func(mode: str = "cosine"):
    """The mask schedule gamma: r in [0, 1] -> fraction of tokens still masked.

    gamma(0) = 1 (everything masked), gamma(1) = 0 (nothing masked), decreasing in between.
    The returned callable takes a float, a NumPy array or a torch tensor.
    """
    # BEGIN SOLUTION
    formulas = {
        "linear": lambda r, xp: 1 - r,
        "cosine": lambda r, xp: xp.cos(r * math.pi / 2),
        "square": lambda r, xp: 1 - r ** 2,
        "cubic": lambda r, xp: 1 - r ** 3,
        "sqrt": lambda r, xp: 1 - xp.sqrt(r),
    }
    # END SOLUTION
    if mode not in formulas:
        raise ValueError(f"unknown mask schedule {mode!r}; choose one of {', '.join(SCHEDULES)}")
    formula = formulas[mode]

    def gamma(r):
        if isinstance(r, torch.Tensor):
            return formula(r, torch)
        value = formula(np.asarray(r, dtype=np.float64), np)
        return float(value) if np.ndim(value) == 0 else value

    gamma.__name__ = f"gamma_{mode}"
    gamma.__doc__ = f"The {mode!r} mask schedule."
    return gamma


def mvtm_loss(logits: torch.Tensor, z_indices: torch.Tensor, mask: torch.Tensor,
              variant: str = "masked", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the predicted tokens.

    logits: (B, N, K); z_indices: (B, N); mask: (B, N) bool, True where the input was [MASK].
    ``variant="masked"`` averages over masked positions only (the MaskGIT paper);
    ``variant="full"`` over all positions, where visible tokens are trivially copied.
    """
    losses = F.cross_entropy(logits.flatten(0, 1).float(), z_indices.flatten(),
                             reduction="none", label_smoothing=label_smoothing).view_as(z_indices)
    if variant == "masked":
        return (losses * mask).sum() / mask.sum().clamp(min=1)
    if variant == "full":
        return losses.mean()
    raise ValueError(f"unknown loss variant {variant!r}: use 'masked' or 'full'")


def gumbel_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise, drawn from ``generator`` when given (on its device)."""
    if generator is None:
        uniform = torch.rand(shape, device=device)
    else:
        uniform = torch.rand(shape, generator=generator, device=generator.device).to(device)
    uniform = uniform.clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(uniform))


@dataclass
class DecodeTrace:
    """What iterative decoding did, per iteration t = 1..T.

    predictions: (T, B, N) the full token prediction after iteration t (known tokens included)
    still_masked: (T, B, N) bool, the tokens still masked after iteration t
    initial_mask: (B, N) bool, the tokens masked before decoding (the hole)
    """
    predictions: torch.Tensor
    still_masked: torch.Tensor
    initial_mask: torch.Tensor

    def __len__(self) -> int:
        return self.predictions.shape[0]

    def masked_counts(self) -> torch.Tensor:
        """(T + 1, B): m_0 = n0, then m_t after each iteration."""
        return torch.cat([self.initial_mask.sum(1)[None], self.still_masked.sum(2)])


@dataclass
class InpaintResult:
    """Pixels of an inpainting run.

    masked_input: (B, 3, H, W) the input with the hole filled grey
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
        return torch.where(self.pixel_mask[None], self.raw_steps, self.original[None])

    @property
    def images(self) -> torch.Tensor:
        """(B, 3, H, W) the result at the last decoded iteration (the sweet spot if given)."""
        return self.steps()[-1]


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
        self.choice_temperature = config.choice_temperature

    @property
    def device(self) -> torch.device:
        return self.vqgan.quantizer.codebook.device

    def gamma_func(self, mode: str | None = None):
        return gamma_func(mode or self.config.gamma_type)

    @torch.no_grad()
    def encode_to_z(self, x: torch.Tensor):
        """x: (B, 3, H, W) in [0, 1] -> z_q (B, C, h, w), z_indices (B, h * w)."""
        z_q, z_indices, _ = self.vqgan.encode(x)
        return z_q, z_indices.reshape(x.shape[0], -1)

    # ------------------------------------------------------------------ training (MVTM)
    def random_token_mask(self, batch: int, generator: torch.Generator | None = None,
                          gamma: str | None = None) -> torch.Tensor:
        """(B, N) bool: per image, r ~ U(0, 1) and ceil(gamma(r) * N) random tokens masked."""
        gamma = self.gamma_func(gamma or self.config.train_gamma)
        device = generator.device if generator is not None else self.device
        n = self.num_image_tokens
        # BEGIN SOLUTION
        r = torch.rand(batch, generator=generator, device=device)              # one ratio per image
        n_masked = torch.ceil(gamma(r) * n).long().clamp(1, n)                 # (B,), at least one
        scores = torch.rand(batch, n, generator=generator, device=device)
        ranks = scores.argsort(dim=1).argsort(dim=1)                           # a random order
        mask = ranks < n_masked[:, None]                                       # mask the first n_masked
        # END SOLUTION
        return mask.to(self.device)

    def forward_tokens(self, z_indices: torch.Tensor, generator: torch.Generator | None = None):
        """MVTM on token grids (the fast path: tokens extracted once).

        z_indices: (B, N) -> logits (B, N, K), z_indices (B, N), mask (B, N) bool.
        """
        # BEGIN SOLUTION
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
    def decode_step(self, token_ids: torch.Tensor, still_masked: torch.Tensor, n0: torch.Tensor,
                    m_prev: torch.Tensor, t: int, total_iter: int, gamma, choice_temperature: float,
                    sample: bool = False, generator: torch.Generator | None = None):
        """One iteration of decoding, for a batch of images at once.

        token_ids: (B, N) current ids, [MASK] where still masked; still_masked: (B, N) bool;
        n0, m_prev: (B,) initially / currently masked counts.
        Returns prediction (B, N), new still-masked mask (B, N) and m_t (B,).
        """
        # BEGIN SOLUTION
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
        m_t = torch.floor(gamma(ratio) * n0.double()).long()
        m_t = torch.minimum(m_t, (m_prev - 1).clamp(min=0))
        ranks = confidence.argsort(dim=1).argsort(dim=1)                       # 0 = least confident
        new_mask = ranks < m_t[:, None]
        # END SOLUTION
        return prediction, new_mask, m_t

    @torch.no_grad()
    def inpaint_tokens(self, z_indices: torch.Tensor, token_mask: torch.Tensor, gamma: str = "cosine",
                       total_iter: int = 8, choice_temperature: float = 4.5,
                       generator: torch.Generator | None = None, sample: bool = False,
                       sweet_spot: int | None = None) -> DecodeTrace:
        """Iterative decoding of a batch of token grids.

        z_indices: (B, N) tokens of the (masked) images; token_mask: (B, N) bool, True = unknown.
        Runs iterations t = 1..sweet_spot (default T = ``total_iter``) of a T-step schedule.
        """
        total_iter, sweet_spot = check_iterations(total_iter, sweet_spot)
        schedule = self.gamma_func(gamma)
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
        for t in range(1, sweet_spot + 1):
            prediction, still_masked, m_prev = self.decode_step(
                token_ids, still_masked, n0, m_prev, t, total_iter, schedule,
                choice_temperature, sample, generator)
            token_ids = prediction.masked_fill(still_masked, self.mask_token_id)
            predictions.append(prediction)
            masks.append(still_masked)
        return DecodeTrace(torch.stack(predictions), torch.stack(masks), token_mask.to(device).bool())

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, pixel_masks: torch.Tensor, gamma: str = "cosine",
                total_iter: int = 8, choice_temperature: float = 4.5, sweet_spot: int | None = None,
                composite: bool = True, generator: torch.Generator | None = None, sample: bool = False,
                fill: float = 0.5, decode_every_step: bool = True,
                decode_batch: int = 256) -> InpaintResult:
        """Inpaint a batch of images.

        images: (B, 3, H, W) in [0, 1] (pixels under the hole are ignored);
        pixel_masks: (B, H, W) or (B, 1, H, W), True / 1 = missing.
        The hole is filled with grey ``fill`` (as the course's masked images), encoded, its
        tokens set to [MASK] and decoded for ``sweet_spot`` (default ``total_iter``)
        iterations; every iteration's prediction is decoded to pixels (only the last one with
        ``decode_every_step=False``, which halves the cost when the steps are not needed),
        ``decode_batch`` images at a time. With ``composite`` the known pixels are pasted back.
        """
        images, pixel_masks = check_images_and_masks(images, pixel_masks, self.config.image_size)
        images = images.to(self.device)
        pixel_masks = pixel_masks.to(self.device)
        masked_input = torch.where(pixel_masks, torch.full_like(images, fill), images)
        _, z_indices = self.encode_to_z(masked_input)
        token_mask = pixel_to_token_mask(pixel_masks, self.config.downsample)
        trace = self.inpaint_tokens(z_indices, token_mask, gamma, total_iter, choice_temperature,
                                    generator, sample, sweet_spot)
        predictions = trace.predictions if decode_every_step else trace.predictions[-1:]
        steps, batch = predictions.shape[:2]
        flat = predictions.flatten(0, 1)                                       # (steps B, N)
        decoded = torch.cat([self.vqgan.decode_indices(chunk)
                             for chunk in flat.split(decode_batch)])           # (steps B, 3, H, W)
        raw_steps = decoded.view(steps, batch, *decoded.shape[1:])
        return InpaintResult(masked_input, pixel_masks, raw_steps, trace, images, composite)


def check_iterations(total_iter, sweet_spot=None) -> tuple[int, int]:
    """Validate T and t*; returns (T, t*) with t* defaulting to T."""
    if isinstance(total_iter, bool) or not isinstance(total_iter, (int, np.integer)):
        raise TypeError(f"total_iter must be an integer, got {total_iter!r} ({type(total_iter).__name__})")
    if total_iter < 1:
        raise ValueError(f"total_iter must be >= 1 (the number of decoding iterations T), got {total_iter}")
    if sweet_spot is None:
        return int(total_iter), int(total_iter)
    if isinstance(sweet_spot, bool) or not isinstance(sweet_spot, (int, np.integer)):
        raise TypeError(f"sweet_spot must be an integer in 1..{total_iter} or None, got {sweet_spot!r}")
    if not 1 <= sweet_spot <= total_iter:
        raise ValueError(f"sweet_spot must lie in 1..total_iter={total_iter} (stop after t* "
                         f"iterations), got {sweet_spot}")
    return int(total_iter), int(sweet_spot)


def check_images_and_masks(images, pixel_masks, image_size: int):
    """Validate an image batch (B, 3, S, S) in [0, 1] and its masks; masks -> (B, 1, S, S) bool."""
    images = torch.as_tensor(images)
    pixel_masks = torch.as_tensor(pixel_masks)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1], got dtype {images.dtype}; "
                        "divide uint8 images by 255")
    if tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"images are {images.shape[-2]}x{images.shape[-1]} but this model works "
                         f"on {image_size}x{image_size}; resize them (labkit.datasets.load_image_folder "
                         "does) or use the matching profile")
    if images.min() < -1e-3 or images.max() > 1 + 1e-3:
        raise ValueError(f"images must lie in [0, 1], got range [{images.min():.3f}, {images.max():.3f}]")
    if pixel_masks.dim() == 3:
        pixel_masks = pixel_masks[:, None]
    if pixel_masks.dim() != 4 or pixel_masks.shape[1] != 1:
        raise ValueError(f"pixel masks must be (B, H, W) or (B, 1, H, W), got {tuple(pixel_masks.shape)}")
    if pixel_masks.shape[0] != images.shape[0]:
        raise ValueError(f"{pixel_masks.shape[0]} masks for {images.shape[0]} images: "
                         "give exactly one mask per image")
    if pixel_masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks are {tuple(pixel_masks.shape[-2:])} but images are "
                         f"{tuple(images.shape[-2:])}: they must have the same size")
    if pixel_masks.dtype != torch.bool:
        values = torch.unique(pixel_masks)
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError("pixel masks must be boolean or 0/1 (1 = missing); got other values")
        pixel_masks = pixel_masks.bool()
    return images, pixel_masks
