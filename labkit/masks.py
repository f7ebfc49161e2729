"""Masks: free-form brush strokes in pixel space, and their token-grid version.

Convention everywhere in labkit: a pixel mask is a bool tensor/array with True = missing
(inside the hole). The course's ``mask64/`` PNGs use black = missing; the loaders convert.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw


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


# --------------------------------------------------------------------------- brush masks
#
# Free-form masks like DeepFill's and the course's: a few thick random-walk strokes with
# round joints. Strokes are added segment by segment until a target share of the pixels
# is missing, which keeps every mask near the course statistics (about 21-26 % of pixels,
# about 37-46 % of 4 x 4 tokens at 64 x 64) instead of leaving them to chance.

_MASK_STREAM = 0x6D61736B   # "mask": keeps mask randomness apart from the toy cats' streams
_HOLE_STREAM = 0x686F6C65   # "hole": training strokes, never equal to a test mask of any seed
MISSING_FRACTION = (0.21, 0.25)   # the target share of missing pixels is drawn from this range
# Bumped whenever the strokes change, so cached test sets (labkit.datasets) are re-made.
MASK_VERSION = 1


def brush_mask(seed: int, index: int, size: int = 64, stream: int = _MASK_STREAM) -> np.ndarray:
    """Mask number ``index`` of mask set ``seed``: (size, size) bool, True = missing.

    Lengths and brush widths are given for 64 x 64 and scale with ``size``, so the share
    of missing pixels is the same at any size (the share of tokens grows when the token
    patch is large compared with the brush, e.g. 32 x 32 with patch 4).
    """
    rng = np.random.default_rng([stream, seed, index])
    unit = size / 64
    target = rng.uniform(*MISSING_FRACTION) * size * size      # missing pixels wanted
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    missing = 0
    while missing < target:
        # One stroke: a random walk that turns smoothly and bounces off the borders.
        width = max(1, round(rng.uniform(3.2, 4.6) * unit))     # pixels
        point = rng.uniform(0.1, 0.9, size=2) * size
        angle = rng.uniform(0, 2 * np.pi)
        _dot(draw, point, width)
        for _ in range(rng.integers(4, 10)):
            angle += rng.normal(0, 0.5)
            step = rng.uniform(6.0, 14.0) * unit
            end = point + step * np.array([np.cos(angle), np.sin(angle)])
            if not (0 <= end[0] < size and 0 <= end[1] < size):   # bounce back inside
                angle += np.pi
                end = np.clip(end, 0, size - 1)
            draw.line([tuple(point), tuple(end)], fill=1, width=width)
            _dot(draw, end, width)                                # round joint
            point = end
            missing = int(np.count_nonzero(np.asarray(canvas)))
            if missing >= target:
                break
    return np.asarray(canvas, dtype=bool)


def _dot(draw: ImageDraw.ImageDraw, centre: np.ndarray, width: int) -> None:
    r = (width - 1) / 2     # PIL's ellipse box includes both ends: this is ``width`` wide
    draw.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=1)


def make_masks(seed: int, n: int, size: int = 64, start: int = 0) -> np.ndarray:
    """Masks ``start .. start + n - 1`` of mask set ``seed``: (n, size, size) bool."""
    masks = np.empty((n, size, size), dtype=bool)
    for k in range(n):
        masks[k] = brush_mask(seed, start + k, size)
    return masks


def training_token_holes(seed: int, n: int, size: int, patch: int) -> torch.Tensor:
    """(n, (size/patch)**2) bool: the token grids of ``n`` brush masks drawn like the test
    masks but from their own random stream (MVTM's ``train_mask="holes"``)."""
    strokes = np.stack([brush_mask(seed, k, size, stream=_HOLE_STREAM) for k in range(n)])
    return pixel_to_token_mask(torch.from_numpy(strokes), patch)
