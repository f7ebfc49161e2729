"""Pixel masks and their token-grid version; the composite; a smooth fill of the hole.

Convention everywhere in labkit: a pixel mask is a bool tensor/array with True = missing
(inside the hole). The course's ``mask64/`` PNGs use black = missing; the loaders convert.
The holes themselves (the course's brush strokes) are drawn by ``labkit.data.holes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_pixel_mask(pixel_mask) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W), bool or 0/1 (True / 1 = missing), torch or NumPy
    -> (B, 1, H, W) bool: the one shape every labkit function works on."""
    mask = torch.as_tensor(pixel_mask)
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"pixel masks must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        values = torch.unique(mask)
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError("pixel masks must be boolean or 0/1 (1 = missing); got other values")
        mask = mask.bool()
    return mask


def paste_known(pred: torch.Tensor, known: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """The composite: ``pred`` inside the hole (``pixel_mask`` True), ``known`` outside.
    Shapes broadcast, e.g. pred (T, B, 3, H, W), known (B, 3, H, W), pixel_mask (B, 1, H, W)."""
    return torch.where(pixel_mask, pred, known)


def pixel_to_token_mask(pixel_mask: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) bool, True = missing -> (B, (H/patch) * (W/patch)) bool.

    A token is masked when any pixel of its ``patch x patch`` patch is missing, which is
    why 20-26 % of missing pixels become 37-46 % of missing tokens in the course.
    """
    mask = as_pixel_mask(pixel_mask)
    height, width = mask.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(f"mask size {height}x{width} is not a multiple of the token patch {patch}")
    pooled = F.max_pool2d(mask.float(), kernel_size=patch)          # (B, 1, H/p, W/p)
    return pooled.flatten(1) > 0


def smooth_fill(images: torch.Tensor, pixel_masks: torch.Tensor, grey: float = 0.5) -> torch.Tensor:
    """A classical inpainting, no learning: every missing pixel gets a smooth blend of the
    known pixels around it (push-pull: the known pixels are averaged down an image pyramid,
    the holes of each level are filled from the level below, upsampled). The known pixels
    are kept; an image with no known pixel is filled with ``grey``.

    images: (B, C, H, W); pixel_masks: (B, H, W) or (B, 1, H, W), True = missing.
    The yardstick a learned inpainting has to beat in the hole.
    """
    images = torch.as_tensor(images).float()
    hole = as_pixel_mask(pixel_masks).to(images.device).expand_as(images[:, :1])
    weight = (~hole).float()
    levels = [(images * weight, weight)]                   # (weighted sum, weight) per level
    while min(levels[-1][1].shape[-2:]) > 1:
        total, known = levels[-1]
        levels.append((F.avg_pool2d(total, 2, ceil_mode=True), F.avg_pool2d(known, 2, ceil_mode=True)))
    total, known = levels[-1]
    fill = torch.where(known > 0, total / known.clamp_min(1e-12), torch.full_like(total, grey))
    for total, known in reversed(levels[:-1]):
        coarse = F.interpolate(fill, size=total.shape[-2:], mode="bilinear", align_corners=False)
        share = known.clamp(0, 1)                          # the share of the cell that is known
        fill = share * total / known.clamp_min(1e-12) + (1 - share) * coarse
    return torch.where(hole, fill, images)
