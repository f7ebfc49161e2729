"""Masks: free-form brush strokes in pixel space, and their token-grid version.

Convention everywhere in labkit: a pixel mask is a bool tensor/array with True = missing
(inside the hole). The course's ``mask64/`` PNGs use black = missing; the loaders convert.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_to_token_mask(pixel_mask: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) bool, True = missing -> (B, (H/patch) * (W/patch)) bool.

    A token is masked when any pixel of its ``patch x patch`` patch is missing, which is
    why 20-26 % of missing pixels become 37-46 % of missing tokens in the course.
    """
    mask = torch.as_tensor(pixel_mask)
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"pixel mask must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    height, width = mask.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(f"mask size {height}x{width} is not a multiple of the token patch {patch}")
    pooled = F.max_pool2d(mask.float(), kernel_size=patch)          # (B, 1, H/p, W/p)
    return pooled.flatten(1) > 0
