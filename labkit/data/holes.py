"""The holes: the course's brush strokes, the hole families beside them, and the training holes.

A hole is a bool array (size, size), True = missing, as everywhere in labkit
(``labkit.core.masks``); the course's ``mask64/`` PNGs use black = missing.

    brush_mask(seed, index, size)          the course's free-form strokes (the default test)
    part_box_mask(centres, i, part, size)  a box over one part of the face (eye, eyes, ears, mouth)
    random_box_mask(seed, index, size)     a box of random place and size
    half_mask(seed, index, size)           the left or the right half of the image
    border_mask(size)                      a band along the border (outpainting)
    family_masks(family, labels, seed, size)   n holes of one family of ``FAMILIES``

Strokes are thin and leave the face's structure visible, so a smooth blend of their edges is
nearly the answer; the other families hide structure (an eye, the mouth, half of the face)
that only a prior learnt from cats can restore.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core.masks import pixel_to_token_mask
from .toycats import part_centres, sample_attributes

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


# --------------------------------------------------------------------------- hole families

FAMILIES = ("strokes", "eye", "eyes", "ears", "mouth", "box", "half", "border", "everything")
# Box sizes in pixels of a 64 x 64 image (width, height), scaled with the image size.
PART_BOXES = {"eye": (18, 18), "ear": (20, 20), "mouth": (20, 14)}
BORDER = 8                       # pixels of the outpainting band, at 64 x 64: 44 % of the image
_FAMILY_STREAM = 0x66616D69      # "fami": the families' coin flips and places


def _box(mask: np.ndarray, centre, width: float, height: float) -> None:
    """Mark the axis-aligned box of ``width`` x ``height`` pixels around ``centre`` (x, y)."""
    size = mask.shape[0]
    x0, x1 = int(round(centre[0] - width / 2)), int(round(centre[0] + width / 2))
    y0, y1 = int(round(centre[1] - height / 2)), int(round(centre[1] + height / 2))
    mask[max(0, y0):min(size, y1), max(0, x0):min(size, x1)] = True


def part_box_mask(centres: dict, index: int, part: str, size: int = 64, side: int = -1) -> np.ndarray:
    """(size, size) bool: a box over ``part`` of cat ``index`` (``centres`` from
    ``labkit.data.toycats.part_centres``): "eye" (the left one for ``side`` -1, the right for +1),
    "eyes" (both, one box), "ears" (a box on each) or "mouth"."""
    unit = size / 64
    mask = np.zeros((size, size), dtype=bool)
    if part == "eye":
        _box(mask, centres["left_eye" if side < 0 else "right_eye"][index], *(unit * v for v in PART_BOXES["eye"]))
    elif part == "eyes":
        left, right = centres["left_eye"][index], centres["right_eye"][index]
        width, height = (unit * v for v in PART_BOXES["eye"])
        low, high = np.minimum(left, right) - (width / 2, height / 2), np.maximum(left, right) + (width / 2, height / 2)
        _box(mask, (low + high) / 2, *(high - low))
    elif part == "ears":
        for name in ("left_ear", "right_ear"):
            _box(mask, centres[name][index], *(unit * v for v in PART_BOXES["ear"]))
    elif part == "mouth":
        _box(mask, centres["mouth"][index], *(unit * v for v in PART_BOXES["mouth"]))
    else:
        raise ValueError(f"unknown part {part!r}; choose eye, eyes, ears or mouth")
    return mask


def _rng(seed: int, family: str, index: int) -> np.random.Generator:
    return np.random.default_rng([_FAMILY_STREAM, seed, FAMILIES.index(family), index])


def random_box_mask(seed: int, index: int, size: int = 64) -> np.ndarray:
    """(size, size) bool: a box with sides of 12 to 28 pixels (at 64 x 64) anywhere in the image."""
    rng = _rng(seed, "box", index)
    width, height = rng.uniform(12, 28, size=2) * size / 64
    centre = rng.uniform((width / 2, height / 2), (size - width / 2, size - height / 2))
    mask = np.zeros((size, size), dtype=bool)
    _box(mask, centre, width, height)
    return mask


def half_mask(seed: int, index: int, size: int = 64) -> np.ndarray:
    """(size, size) bool: the image's left or right half (a coin flip of ``seed``, ``index``)."""
    mask = np.zeros((size, size), dtype=bool)
    if _rng(seed, "half", index).random() < 0.5:
        mask[:, :size // 2] = True
    else:
        mask[:, size // 2:] = True
    return mask


def border_mask(size: int = 64, width: int | None = None) -> np.ndarray:
    """(size, size) bool: a band of ``width`` pixels along every border (default ``BORDER`` at 64 x 64)."""
    width = round(BORDER * size / 64) if width is None else width
    mask = np.ones((size, size), dtype=bool)
    mask[width:size - width, width:size - width] = False
    return mask


def family_masks(family: str, labels: dict, seed: int, size: int = 64) -> np.ndarray:
    """(n, size, size) bool: one hole of ``family`` for each of the n cats of ``labels`` (their
    encoded labels place the parts); ``seed`` draws the strokes, coins and places. "strokes"
    are the course's brush masks; "everything" hides the whole image (generation)."""
    n = len(next(iter(labels.values())))
    if family == "strokes":
        return make_masks(seed, n, size)
    if family == "everything":
        return np.ones((n, size, size), dtype=bool)
    if family == "border":
        return np.broadcast_to(border_mask(size), (n, size, size)).copy()
    if family in ("box", "half"):
        draw = random_box_mask if family == "box" else half_mask
        return np.stack([draw(seed, i, size) for i in range(n)])
    if family in ("eye", "eyes", "ears", "mouth"):
        centres = part_centres(labels, size)
        sides = [-1 if _rng(seed, "eye", i).random() < 0.5 else 1 for i in range(n)]
        return np.stack([part_box_mask(centres, i, family, size, sides[i]) for i in range(n)])
    raise ValueError(f"unknown hole family {family!r}; choose one of {', '.join(FAMILIES)}")


# --------------------------------------------------------------------------- training holes

TRAINING_HOLES = 2048   # holes drawn once for train_mask "holes" / "families" (about 2 s at 64 x 64)
# train_mask="families": the share of the bank each family fills; "everything" rows let every
# token be masked, as the course's random masks (and generation) need.
TRAINING_MIXTURE = {"strokes": 0.25, "eye": 0.075, "eyes": 0.075, "ears": 0.075, "mouth": 0.075,
                    "box": 0.1, "half": 0.1, "border": 0.05, "everything": 0.2}
_TRAINING_CATS = 0x63617473      # "cats": the geometries the training part boxes are drawn on


def training_token_holes(cfg, n: int = TRAINING_HOLES) -> torch.Tensor:
    """(n, N) bool: the token grids MVTM hides tokens in: for ``train_mask="holes"`` (and
    "mixed") brush masks drawn like the test masks but from their own random stream; for
    "families" a mixture of every hole family (``TRAINING_MIXTURE``), the part boxes placed on
    the geometry of freshly drawn cats. Drawn once per process."""
    if cfg.train_mask == "families":
        return _training_family_holes(cfg.data_seed, n, cfg.image_size, cfg.downsample)
    return _training_token_holes(cfg.data_seed, n, cfg.image_size, cfg.downsample)


@functools.lru_cache(maxsize=4)
def _training_token_holes(seed: int, n: int, size: int, patch: int) -> torch.Tensor:
    strokes = np.stack([brush_mask(seed, k, size, stream=_HOLE_STREAM) for k in range(n)])
    return pixel_to_token_mask(torch.from_numpy(strokes), patch)


@functools.lru_cache(maxsize=4)
def _training_family_holes(seed: int, n: int, size: int, patch: int) -> torch.Tensor:
    rng = np.random.default_rng([_TRAINING_CATS, seed])
    families = list(TRAINING_MIXTURE)
    counts = np.floor(np.array(list(TRAINING_MIXTURE.values())) * n).astype(int)
    counts[0] += n - counts.sum()                   # the rounding goes to the strokes
    cats = [sample_attributes(rng) for _ in range(n)]
    labels = {name: np.array([cat[name] for cat in cats]) for name in
              ("head_width", "head_height", "ear_size", "ear_angle", "eye_size", "tilt",
               "offset_x", "offset_y", "scale")}
    parts, start = [], 0
    for family, count in zip(families, counts):
        chosen = {name: values[start:start + count] for name, values in labels.items()}
        if family == "strokes":
            parts.append(np.stack([brush_mask(seed, k, size, stream=_HOLE_STREAM) for k in range(count)]))
        else:
            parts.append(family_masks(family, chosen, seed + 1_000_003, size))
        start += count
    return pixel_to_token_mask(torch.from_numpy(np.concatenate(parts)), patch)
