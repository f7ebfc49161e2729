"""Simple scores of inpainting and of MVTM training.

Pixel scores look at the hole only (the pixels that were missing): outside it a composited
inpainting equals the input, which would only dilute the numbers.

    masked_l1(pred, target, pixel_mask)    (B,) mean |pred - target| over the hole, in [0, 1]
    masked_psnr(pred, target, pixel_mask)  (B,) 10 log10(1 / MSE) over the hole, in dB
    masked_token_accuracy(logits, z, mask) float, share of masked tokens predicted exactly

An image whose mask is empty has nothing to score and gets NaN (use ``torch.nanmean``).
"""

from __future__ import annotations

import torch

from ..core.masks import as_pixel_mask


def _hole(pixel_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) bool -> (B, 3, H, W) float weights, 1 inside the hole."""
    mask = as_pixel_mask(pixel_mask).to(like.device)
    if mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"pixel masks {tuple(mask.shape)} do not match images {tuple(like.shape)}")
    return mask.expand_as(like).float()


def _masked_mean(values: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B, 3, H, W) over the hole; NaN for an empty hole."""
    counts = hole.sum(dim=(1, 2, 3))
    totals = (values * hole).sum(dim=(1, 2, 3))
    return torch.where(counts > 0, totals / counts.clamp(min=1), torch.full_like(totals, float("nan")))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """pred, target: (B, 3, H, W) in [0, 1]; pixel_mask True = missing -> (B,) mean abs error."""
    pred, target = pred.float(), target.float()
    return _masked_mean((pred - target).abs(), _hole(pixel_mask, pred))


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """pred, target: (B, 3, H, W) in [0, 1] -> (B,) PSNR in dB over the hole (inf if exact)."""
    pred, target = pred.float(), target.float()
    mse = _masked_mean((pred - target).pow(2), _hole(pixel_mask, pred))
    return 10 * torch.log10(1 / mse)


def masked_token_hits(logits: torch.Tensor, z_indices: torch.Tensor, mask: torch.Tensor):
    """(hits, count) as 0-d tensors on the logits' device: masked positions whose most
    likely token is the true one, and masked positions. Reading neither back, the
    training loop need not wait for the GPU at every step."""
    hits = ((logits.argmax(dim=-1) == z_indices) & mask).sum()
    return hits, mask.sum()


def masked_token_accuracy(logits: torch.Tensor, z_indices: torch.Tensor, mask: torch.Tensor) -> float:
    """logits (B, N, K), z_indices (B, N), mask (B, N) bool -> share of masked positions
    whose most likely token is the true one (NaN when nothing is masked)."""
    hits, count = masked_token_hits(logits, z_indices, mask)
    n_masked = int(count)
    return float(hits) / n_masked if n_masked else float("nan")


__all__ = ["masked_l1", "masked_psnr", "masked_token_accuracy", "masked_token_hits"]
