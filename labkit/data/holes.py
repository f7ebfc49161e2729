"""The holes: free-form brush strokes like the course's test masks, and the training holes.

A hole is a bool array (size, size), True = missing, as everywhere in labkit
(``labkit.core.masks``); the course's ``mask64/`` PNGs use black = missing.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core.masks import pixel_to_token_mask

# --------------------------------------------------------------------------- brush masks
#
# Free-form masks like DeepFill's and the course's: a few thick random-walk strokes with
# round joints. Strokes are added segment by segment until a target share of the pixels
# is missing, which keeps every mask near the course statistics (about 21-26 % of pixels,
# about 37-46 % of 4 x 4 tokens at 64 x 64) instead of leaving them to chance.

_MASK_STREAM = 0x6D61736B   # "mask": keeps mask randomness apart from the toy cats' streams
_HOLE_STREAM = 0x686F6C65   # "hole": training strokes, never equal to a test mask of any seed
MISSING_FRACTION = (0.21, 0.25)   # the target share of missing pixels is drawn from this range
# Bumped whenever the strokes change, so cached test sets (labkit.data.datasets) are re-made.
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


TRAINING_HOLES = 2048   # brush-stroke holes drawn once for train_mask="holes" (about 2 s at 64 x 64)


def training_token_holes(cfg, n: int = TRAINING_HOLES) -> torch.Tensor:
    """(n, N) bool: the token grids of ``n`` brush masks drawn like the test masks but from
    their own random stream, for MVTM's ``train_mask="holes"`` (drawn once per process)."""
    return _training_token_holes(cfg.data_seed, n, cfg.image_size, cfg.downsample)


@functools.lru_cache(maxsize=4)
def _training_token_holes(seed: int, n: int, size: int, patch: int) -> torch.Tensor:
    strokes = np.stack([brush_mask(seed, k, size, stream=_HOLE_STREAM) for k in range(n)])
    return pixel_to_token_mask(torch.from_numpy(strokes), patch)
