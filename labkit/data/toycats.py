"""Procedural toy cat faces: the lab's built-in dataset, with attribute labels.

Every image is drawn from its own random stream ``np.random.default_rng([seed, index])``,
so image ``index`` of dataset ``seed`` is the same whatever the order, the batch or the
number of worker processes that renders it.

    image, attrs = render_cat(seed=0, index=7)          # (64, 64, 3) uint8, dict
    images, labels = render_cats(0, range(100), 64)     # (100, 64, 64, 3), {name: (100,)}

How one cat is drawn (``draw_cat``):
  1. sample its attributes (``sample_attributes``): colours, pattern, eyes, geometry, pose;
  2. draw the upright face on a transparent layer at ``SUPERSAMPLE`` x the final size,
     in "face units" (1 unit = 1 pixel of a 64 x 64 image), so every size looks the same;
  3. add a subtle fur texture (low-frequency noise) to the fur only;
  4. tilt, scale and shift the whole layer in one affine transform, put it on a
     two-colour gradient background, and box-filter it down to the final size.

Labels: categorical attributes are stored as int codes (index into the values tuple of
``ATTRIBUTES``), continuous ones as float32. Left/right always mean the IMAGE's left/right.
``eye_colour`` and ``pupil`` are still sampled when ``eyes_closed`` is "yes" and then
cannot be seen in the image.
"""

from __future__ import annotations

import colorsys
import contextlib
import math
import multiprocessing
import sys

import numpy as np
import torch
from PIL import Image, ImageChops, ImageDraw

from ..lab.progress import tqdm

SUPERSAMPLE = 4
# Bumped whenever the drawing changes, so cached datasets (labkit.data.datasets) are re-rendered.
RENDER_VERSION = 2

ATTRIBUTES: dict[str, tuple[str, tuple]] = {
    "fur_colour": ("categorical", ("black", "white", "grey", "blue_grey", "cream", "ginger",
                                   "brown", "fawn")),
    "pattern": ("categorical", ("solid", "tabby", "bicolour", "calico", "mask")),
    "eye_colour": ("categorical", ("green", "yellow", "orange", "blue", "copper")),
    "odd_eyed": ("categorical", ("no", "blue_left", "blue_right")),
    "pupil": ("categorical", ("slit", "round")),
    "eyes_closed": ("categorical", ("no", "yes")),
    "mouth": ("categorical", ("w", "smile", "open")),
    "whiskers": ("categorical", ("none", "white", "dark")),
    "background": ("categorical", ("red", "orange", "yellow", "green", "teal", "blue",
                                   "purple", "pink")),
    "head_width": ("continuous", (0.60, 0.74)),   # fraction of the image width, before scale
    "head_height": ("continuous", (0.52, 0.64)),  # fraction of the image height, before scale
    "ear_size": ("continuous", (0.8, 1.25)),      # relative to the head
    "ear_angle": ("continuous", (8.0, 38.0)),     # degrees each ear leans outwards
    "eye_size": ("continuous", (0.8, 1.2)),
    "tilt": ("continuous", (-20.0, 20.0)),        # degrees, positive = counter-clockwise
    "offset_x": ("continuous", (-0.08, 0.08)),    # fraction of the size, positive = right
    "offset_y": ("continuous", (-0.08, 0.08)),    # fraction of the size, positive = down
    "scale": ("continuous", (0.88, 1.08)),
}

FUR_RGB = {
    "black": (38, 34, 42), "white": (236, 234, 228), "grey": (128, 128, 132),
    "blue_grey": (118, 134, 158), "cream": (236, 212, 166), "ginger": (222, 118, 48),
    "brown": (118, 78, 48), "fawn": (196, 156, 116),
}
EYE_RGB = {
    "green": (96, 186, 64), "yellow": (236, 206, 40), "orange": (236, 128, 28),
    "blue": (64, 128, 232), "copper": (178, 92, 36),
}
BACKGROUND_HUE = {  # centre of each hue bucket, in turns (0..1)
    "red": 0.0, "orange": 0.08, "yellow": 0.15, "green": 0.30, "teal": 0.47, "blue": 0.60,
    "purple": 0.75, "pink": 0.88,
}
_HIDDEN_PATTERN = {"white": "bicolour", "black": "tabby"}   # would be invisible on that fur
PINK = (242, 150, 168)
INK = (44, 30, 32)   # eye outlines, mouth, closed eyes


# ----------------------------------------------------------------------------- sampling

def _pick(rng: np.random.Generator, name: str, p=None) -> str:
    values = ATTRIBUTES[name][1]
    return values[rng.choice(len(values), p=p)]


def _uniform(rng: np.random.Generator, name: str) -> float:
    lo, hi = ATTRIBUTES[name][1]
    return float(rng.uniform(lo, hi))


def _is_light(rgb) -> bool:
    return sum(rgb) > 3 * 150


def _jitter(rng: np.random.Generator, rgb, amount: float) -> tuple[int, int, int]:
    """A colour near ``rgb``: one brightness factor plus a little per-channel noise."""
    factor = rng.uniform(1 - amount, 1 + amount)
    noise = rng.uniform(-8, 8, size=3)
    return tuple(int(np.clip(c * factor + n, 0, 255)) for c, n in zip(rgb, noise))


def sample_attributes(rng: np.random.Generator) -> dict:
    """All the random choices of one cat: the labelled attributes plus unlabelled details.

    Labelled values come first, then drawing details (exact colours, which side a patch
    sits on...) that are random but not part of ``ATTRIBUTES``.
    """
    a: dict = {}
    a["fur_colour"] = _pick(rng, "fur_colour")
    # A white cat cannot show a white bicolour patch, nor a black cat tabby stripes:
    # those combinations are left out so that every label can be seen in the image.
    weights = dict(zip(ATTRIBUTES["pattern"][1], (0.30, 0.25, 0.20, 0.12, 0.13)))
    if a["fur_colour"] in _HIDDEN_PATTERN:
        weights[_HIDDEN_PATTERN[a["fur_colour"]]] = 0.0
    p = np.array(list(weights.values()))
    a["pattern"] = _pick(rng, "pattern", p=p / p.sum())
    a["odd_eyed"] = _pick(rng, "odd_eyed", p=[0.92, 0.04, 0.04])
    if a["odd_eyed"] == "no":
        a["eye_colour"] = _pick(rng, "eye_colour")
    else:   # the other eye is never blue, else the cat would not be odd-eyed
        a["eye_colour"] = str(rng.choice(["green", "yellow", "orange", "copper"]))
    a["pupil"] = _pick(rng, "pupil", p=[0.55, 0.45])
    a["eyes_closed"] = _pick(rng, "eyes_closed", p=[0.88, 0.12])
    a["mouth"] = _pick(rng, "mouth", p=[0.6, 0.25, 0.15])
    fur = FUR_RGB[a["fur_colour"]]
    # Whiskers usually contrast with the fur, as they do on real cats' photos.
    a["whiskers"] = _pick(rng, "whiskers",
                          p=[0.15, 0.25, 0.60] if _is_light(fur) else [0.15, 0.70, 0.15])
    a["background"] = _pick(rng, "background")
    for name in ("head_width", "head_height", "ear_size", "ear_angle", "eye_size",
                 "tilt", "offset_x", "offset_y", "scale"):
        a[name] = _uniform(rng, name)

    # --- unlabelled details ---
    a["fur_rgb"] = _jitter(rng, fur, 0.08)
    hue = (BACKGROUND_HUE[a["background"]] + rng.uniform(-0.035, 0.035)) % 1.0
    light, sat = rng.uniform(0.42, 0.68), rng.uniform(0.2, 0.5)
    second_light = np.clip(light + rng.choice([-1, 1]) * rng.uniform(0.08, 0.2), 0.25, 0.85)
    a["background_rgb"] = (_hls(hue, light, sat), _hls(hue + rng.uniform(-0.04, 0.04),
                                                        second_light, sat))
    a["side"] = int(rng.choice([-1, 1]))              # where a patch / highlight sits
    a["patch_rgb"] = _patch_colour(rng, a["fur_colour"], a["pattern"])
    a["patch_shape"] = rng.uniform(0, 1, size=6)      # free numbers for the patch geometry
    a["stripes"] = int(rng.integers(3, 5))
    a["texture"] = (rng.standard_normal((8, 8)).astype(np.float32),    # blotches
                    rng.standard_normal((20, 20)).astype(np.float32))  # grain
    a["texture_amount"] = float(rng.uniform(0.04, 0.10))
    a["whisker_spread"] = rng.uniform(-3, 3, size=3)
    return a


def _hls(hue: float, light: float, sat: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hls_to_rgb(hue % 1.0, light, sat))


def _patch_colour(rng: np.random.Generator, fur_name: str, pattern: str):
    """Second coat colour: white for bicolour; dark on light fur (or light on dark) for
    the mask; another coat colour for calico."""
    if pattern == "bicolour":
        return _jitter(rng, (246, 244, 238), 0.03)
    if pattern == "mask":
        dark = ("black", "brown", "grey")
        return _jitter(rng, FUR_RGB[str(rng.choice(dark))], 0.1) \
            if _is_light(FUR_RGB[fur_name]) else _jitter(rng, (238, 234, 226), 0.04)
    others = [c for c in ("ginger", "black", "brown", "cream", "white") if c != fur_name]
    return _jitter(rng, FUR_RGB[str(rng.choice(others))], 0.08)


# ----------------------------------------------------------------------------- drawing

def _mix(rgb, other, t: float) -> tuple[int, int, int]:
    return tuple(int(round(c * (1 - t) + o * t)) for c, o in zip(rgb, other))


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in rgb)


class _Pen:
    """Draws in face units on a supersampled image, with the pose applied to every point.

    Face units: the upright face is drawn in a 64 x 64 square (1 unit = 1 pixel of a
    64 x 64 image, whatever ``size``). Each point is tilted, scaled and shifted as it is
    drawn, so the picture is never resampled and stays sharp. Ellipses and arcs become
    polygons and polylines because a tilted ellipse is not an axis-aligned one.
    """

    CIRCLE = np.linspace(0, 2 * np.pi, 48, endpoint=False)

    def __init__(self, image: Image.Image, size: int, attrs: dict):
        self.image, self.draw = image, ImageDraw.Draw(image)
        unit = size * SUPERSAMPLE / 64                        # supersampled pixels per unit
        self.scale = unit * attrs["scale"]
        angle = math.radians(attrs["tilt"])
        # out = origin + scale * R (q - centre), R = [[cos, sin], [-sin, cos]]: a
        # counter-clockwise turn on screen, because image y points down.
        self.rotation = self.scale * np.array([[math.cos(angle), math.sin(angle)],
                                               [-math.sin(angle), math.cos(angle)]])
        self.origin = np.array([32 + 64 * attrs["offset_x"], 32 + 64 * attrs["offset_y"]]) * unit
        self.min_width = 0.6 * SUPERSAMPLE                    # >= 0.6 output pixels
        self.size, self.attrs = size, attrs

    def on(self, image: Image.Image) -> "_Pen":
        """The same pose drawing on another image (e.g. an 'L' mask)."""
        return _Pen(image, self.size, self.attrs)

    def points(self, xs, ys) -> list[float]:
        """Face-unit coordinates -> flat [x0, y0, x1, y1, ...] image coordinates."""
        dx, dy = np.asarray(xs, float) - 32, np.asarray(ys, float) - 32
        (a, b), (c, d) = self.rotation
        return np.column_stack([self.origin[0] + a * dx + b * dy,
                                self.origin[1] + c * dx + d * dy]).ravel().tolist()

    def width(self, units: float) -> int:
        return max(1, int(round(max(units * self.scale, self.min_width))))

    def polygon(self, xy, fill):
        xs, ys = zip(*xy)
        self.draw.polygon(self.points(xs, ys), fill=fill)

    def ellipse(self, cx, cy, rx, ry, fill):
        self.draw.polygon(self.points(cx + rx * np.cos(self.CIRCLE), cy + ry * np.sin(self.CIRCLE)),
                          fill=fill)

    def line(self, xy, fill, width: float):
        xs, ys = zip(*xy)
        self.draw.line(self.points(xs, ys), fill=fill, width=self.width(width), joint="curve")

    def arc(self, cx, cy, rx, ry, start: float, end: float, fill, width: float):
        """Part of an ellipse; angles in degrees, clockwise on screen from 3 o'clock."""
        t = np.radians(np.linspace(start, end, 12))
        self.draw.line(self.points(cx + rx * np.cos(t), cy + ry * np.sin(t)), fill=fill,
                       width=self.width(width), joint="curve")


def _ear_points(cx, cy, rx, ry, side, size, lean_deg):
    """Outer and inner triangle of the ear on ``side`` (-1 = image left, +1 = right)."""
    theta = math.radians(90 - side * 40)             # where the ear sits on the head outline
    base = np.array([cx + rx * math.cos(theta) * 0.88, cy - ry * math.sin(theta) * 0.88])
    lean = math.radians(side * lean_deg)
    up = np.array([math.sin(lean), -math.cos(lean)])  # from the ear's base to its tip
    across = np.array([-up[1], up[0]])
    half_base, height = 0.40 * rx * size, 0.80 * ry * size
    tip = base + up * height
    outer = [base - across * half_base, tip, base + across * half_base]
    centre = (outer[0] + outer[1] + outer[2]) / 3
    inner = [centre + 0.58 * (q - centre) + up * 0.06 * height for q in outer]
    rim = [centre + (1 - 2.2 / height) * (q - centre) for q in outer]   # fur inside the outline
    return outer, rim, inner


def draw_cat(attrs: dict, size: int = 64) -> np.ndarray:
    """Render the cat described by ``attrs`` (from ``sample_attributes``): (size, size, 3) uint8."""
    n = size * SUPERSAMPLE
    image = _gradient(attrs["background_rgb"], n)
    pen = _Pen(image, size, attrs)
    fur_mask = Image.new("L", (n, n), 0)
    head_mask = Image.new("L", (n, n), 0)
    fur_pen, head_pen = pen.on(fur_mask), pen.on(head_mask)

    fur = attrs["fur_rgb"]
    outline = _shade(fur, 0.55) if sum(fur) > 150 else _shade(fur, 0.4)
    cx, cy = 32.0, 35.5
    rx, ry = 32 * attrs["head_width"], 32 * attrs["head_height"]

    # Ears first, so the head covers their base; outlines are the same shape drawn
    # larger underneath in the outline colour.
    for side in (-1, 1):
        outer, rim, inner = _ear_points(cx, cy, rx, ry, side, attrs["ear_size"], attrs["ear_angle"])
        pen.polygon(outer, fill=outline)
        pen.polygon(rim, fill=fur)
        fur_pen.polygon(outer, fill=255)
        pen.polygon(inner, fill=_mix(PINK, fur, 0.25))
    pen.ellipse(cx, cy, rx, ry, fill=outline)
    pen.ellipse(cx, cy, rx - 0.8, ry - 0.8, fill=fur)
    fur_pen.ellipse(cx, cy, rx, ry, fill=255)
    head_pen.ellipse(cx, cy, rx - 0.8, ry - 0.8, fill=255)

    eye_y = cy - 0.06 * ry
    nose_y = cy + 0.30 * ry
    _draw_pattern(pen, attrs, head_mask, cx, cy, rx, ry)
    # Muzzle: a lighter oval around nose and mouth (white on bicolour cats).
    muzzle = attrs["patch_rgb"] if attrs["pattern"] == "bicolour" else _mix(fur, (255, 246, 238), 0.4)
    pen.ellipse(cx, nose_y + 2.6, 0.40 * rx, 0.30 * ry, fill=muzzle)

    image = _add_fur_texture(image, fur_mask, attrs)
    pen = pen.on(image)
    _draw_eyes(pen, attrs, cx, eye_y, 0.42 * rx, 0.25 * rx * attrs["eye_size"])

    # Nose (a small pink triangle) and mouth.
    pen.polygon([(cx - 1.9, nose_y - 0.9), (cx + 1.9, nose_y - 0.9), (cx, nose_y + 1.0)], fill=PINK)
    mouth_y = nose_y + 1.0
    if attrs["mouth"] == "w":
        pen.arc(cx - 1.5, mouth_y, 1.5, 1.5, 0, 180, fill=INK, width=0.55)
        pen.arc(cx + 1.5, mouth_y, 1.5, 1.5, 0, 180, fill=INK, width=0.55)
    elif attrs["mouth"] == "smile":
        pen.arc(cx, mouth_y - 1.8, 3.8, 3.4, 25, 155, fill=INK, width=0.55)
    else:
        pen.ellipse(cx, mouth_y + 2.0, 2.2, 2.1, fill=(96, 30, 40))
        pen.ellipse(cx, mouth_y + 3.0, 1.4, 1.0, fill=PINK)

    if attrs["whiskers"] != "none":
        colour = (242, 240, 234) if attrs["whiskers"] == "white" else (40, 36, 36)
        for side in (-1, 1):
            for k, angle in enumerate((-12, 0, 12)):
                a = math.radians(angle + attrs["whisker_spread"][k])
                x0, y0 = cx + side * 0.28 * rx, nose_y + 2.2 + (k - 1) * 1.0
                length = 0.95 * rx
                pen.line([(x0, y0), (x0 + side * length * math.cos(a), y0 + length * math.sin(a))],
                         fill=colour, width=0.45)

    return np.asarray(image.reduce(SUPERSAMPLE))


def _gradient(colours, n: int) -> Image.Image:
    """(n, n) RGB image fading from ``colours[0]`` at the top to ``colours[1]`` at the bottom."""
    top, bottom = (np.array(c, np.float32) for c in colours)
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    column = (top * (1 - t) + bottom * t).astype(np.uint8)[:, None]    # (n, 1, 3)
    return Image.fromarray(column).resize((n, n), Image.NEAREST)


def _draw_pattern(pen, attrs, head_mask, cx, cy, rx, ry):
    """Coat pattern inside the head outline (patches are clipped to ``head_mask``)."""
    pattern, side, shape = attrs["pattern"], attrs["side"], attrs["patch_shape"]
    if pattern == "tabby":
        fur = attrs["fur_rgb"]
        stripe = _shade(fur, 0.62) if sum(fur) > 150 else (16, 14, 16)
        n = attrs["stripes"]
        top = cy - ry
        for k in range(n):
            x = cx + (k - (n - 1) / 2) * 2.3
            length = 0.4 * ry - 1.5 * abs(k - (n - 1) / 2)
            pen.line([(x, top + 1.8), (x + 0.12 * (x - cx), top + 1.8 + length)],
                     fill=stripe, width=0.9)
        for s in (-1, 1):                               # cheek stripes
            for k in range(2):
                y = cy + 0.12 * ry + k * 2.8
                pen.line([(cx + s * rx * 0.97, y), (cx + s * rx * 0.74, y + 0.6)],
                         fill=stripe, width=0.9)
        return
    patch = Image.new("L", head_mask.size, 0)
    patch_pen = pen.on(patch)
    if pattern == "bicolour":
        # White lower face and chest: an oval whose top edge runs under the eyes.
        patch_pen.ellipse(cx, cy + ry * (0.95 + 0.2 * shape[0]), rx * (0.85 + 0.3 * shape[1]),
                          ry * (0.72 + 0.2 * shape[2]), fill=255)
    elif pattern == "calico":
        for k in range(2):
            x = cx + side * (-1) ** k * rx * (0.35 + 0.4 * shape[k])
            y = cy - ry * (0.3 + 0.4 * shape[k + 2]) * (1 if k == 0 else -0.8)
            patch_pen.ellipse(x, y, rx * (0.35 + 0.2 * shape[4]), ry * (0.3 + 0.2 * shape[5]),
                              fill=255)
    elif pattern == "mask":
        # One side of the upper face, bounded by a straight edge through the forehead.
        x0 = cx + side * rx * 0.1 * shape[0]
        x1 = cx + side * rx * (0.3 * shape[1] - 0.1)
        far = cx + side * 2 * rx
        patch_pen.polygon([(x0, cy - 2 * ry), (far, cy - 2 * ry),
                           (far, cy + ry * 0.2 * shape[2]), (x1, cy + 0.2 * ry)], fill=255)
    else:
        return
    pen.image.paste(attrs["patch_rgb"], mask=ImageChops.multiply(patch, head_mask))


def _add_fur_texture(image: Image.Image, fur_mask: Image.Image, attrs) -> Image.Image:
    """Multiply the fur by 1 + smooth noise (blotches plus grain), leaving the rest as is."""
    coarse, fine = attrs["texture"]
    side = image.size
    noise = (np.asarray(Image.fromarray(coarse).resize(side, Image.BICUBIC))
             + 0.5 * np.asarray(Image.fromarray(fine).resize(side, Image.BICUBIC)))
    gain = 1 + noise * np.asarray(fur_mask, np.float32) * (attrs["texture_amount"] / 255)
    textured = np.asarray(image, np.float32) * gain[..., None]
    return Image.fromarray(np.clip(textured, 0, 255).astype(np.uint8))


def _draw_eyes(pen, attrs, cx, eye_y, eye_dx, radius):
    for side in (-1, 1):
        x = cx + side * eye_dx
        if attrs["eyes_closed"] == "yes":   # happy closed eyes: an upward arc
            pen.arc(x, eye_y + 0.35 * radius, 0.75 * radius, 0.6 * radius, 200, 340,
                    fill=INK, width=0.8)
            continue
        blue_here = attrs["odd_eyed"] == ("blue_left" if side < 0 else "blue_right")
        iris = EYE_RGB["blue" if blue_here else attrs["eye_colour"]]
        pen.ellipse(x, eye_y, radius, radius, fill=INK)
        pen.ellipse(x, eye_y, radius - 0.8, radius - 0.8, fill=iris)
        if attrs["pupil"] == "slit":
            pen.ellipse(x, eye_y, 0.2 * radius + 0.35, 0.78 * radius, fill=(14, 10, 12))
        else:
            pen.ellipse(x, eye_y, 0.5 * radius, 0.5 * radius, fill=(14, 10, 12))
        # The highlight sits on the same side in both eyes (one light source); which
        # side is random, so a mirrored cat is still a plausible cat.
        pen.ellipse(x + attrs["side"] * 0.33 * radius, eye_y - 0.36 * radius,
                    0.2 * radius + 0.3, 0.2 * radius + 0.3, fill=(255, 255, 255))


# ----------------------------------------------------------------------------- where the parts are

FACE_CENTRE = (32.0, 35.5)          # the head's centre, in face units (see draw_cat)


def part_centres(labels: dict, size: int = 64) -> dict[str, np.ndarray]:
    """Where each cat's face parts lie in its image, from its labels (the geometry draw_cat
    uses): {part: (n, 2) pixel coordinates (x, y)} for "left_eye", "right_eye", "mouth",
    "left_ear", "right_ear" and "face" (image left / right), plus "eye_radius": (n,) pixels.

    labels: encoded labels {attribute: (n,)} (``render_cats``, an ImageSet's ``labels``).
    """
    get = {name: np.asarray(labels[name], dtype=np.float64).reshape(-1) for name in
           ("head_width", "head_height", "ear_size", "ear_angle", "eye_size", "tilt",
            "offset_x", "offset_y", "scale")}
    cx, cy = FACE_CENTRE
    rx, ry = 32 * get["head_width"], 32 * get["head_height"]
    eye_y, eye_dx = cy - 0.06 * ry, 0.42 * rx
    points = {"left_eye": (cx - eye_dx, eye_y), "right_eye": (cx + eye_dx, eye_y),
              "mouth": (np.full_like(rx, cx), cy + 0.30 * ry + 2.5), "face": (np.full_like(rx, cx), np.full_like(ry, cy))}
    for name, side in (("left_ear", -1), ("right_ear", 1)):
        theta = math.radians(90 - side * 40)             # as _ear_points
        base_x, base_y = cx + rx * math.cos(theta) * 0.88, cy - ry * math.sin(theta) * 0.88
        lean = np.radians(side * get["ear_angle"])
        height = 0.80 * ry * get["ear_size"]
        points[name] = (base_x + np.sin(lean) * 0.45 * height, base_y - np.cos(lean) * 0.45 * height)
    # the pose of _Pen, in pixels: origin + scale * R (q - 32), R a counter-clockwise turn
    unit = size / 64
    angle = np.radians(get["tilt"])
    cos, sin = np.cos(angle), np.sin(angle)
    ox, oy = (32 + 64 * get["offset_x"]) * unit, (32 + 64 * get["offset_y"]) * unit
    scale = unit * get["scale"]
    out = {}
    for name, (x, y) in points.items():
        dx, dy = np.asarray(x) - 32, np.asarray(y) - 32
        out[name] = np.stack([ox + scale * (cos * dx + sin * dy), oy + scale * (-sin * dx + cos * dy)], axis=1)
    out["eye_radius"] = 0.25 * rx * get["eye_size"] * scale
    return out


# ----------------------------------------------------------------------------- public API

def _labels_of(attrs: dict) -> dict:
    return {name: attrs[name] for name in ATTRIBUTES}


def render_cat(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, dict]:
    """Cat number ``index`` of dataset ``seed``: ((size, size, 3) uint8, {attribute: value})."""
    attrs = sample_attributes(np.random.default_rng([seed, index]))
    return draw_cat(attrs, size), _labels_of(attrs)


def _encode(labels: list[dict]) -> dict[str, np.ndarray]:
    """List of per-image attribute dicts -> {name: (n,) int64 codes or float32 values}."""
    out = {}
    for name, (kind, values) in ATTRIBUTES.items():
        if kind == "categorical":
            out[name] = np.array([values.index(lab[name]) for lab in labels], dtype=np.int64)
        else:
            out[name] = np.array([lab[name] for lab in labels], dtype=np.float32)
    return out


def _render_chunk(job) -> tuple[np.ndarray, list[dict]]:
    seed, indices, size = job
    images = np.empty((len(indices), size, size, 3), np.uint8)
    labels = []
    for k, index in enumerate(indices):
        images[k], attrs = render_cat(seed, int(index), size)
        labels.append(attrs)
    return images, labels


def render_cats(seed: int, indices, size: int = 64, workers: int = 1, progress: bool = False,
                desc: str = "rendering toy cats") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render many cats: ((n, size, size, 3) uint8, {attribute: (n,) codes or values}).

    The result is the same for any ``workers``: each image has its own random stream.
    """
    indices = [int(i) for i in indices]
    chunk = max(1, min(256, math.ceil(len(indices) / (4 * max(1, workers)))))
    jobs = [(seed, indices[i:i + chunk], size) for i in range(0, len(indices), chunk)]
    parts = []
    with tqdm(total=len(indices), desc=desc, unit="img", disable=not progress) \
            as bar, _mapper(workers if len(jobs) > 1 else 1) as mapper:
        for part in mapper(_render_chunk, jobs):
            parts.append(part)
            bar.update(len(part[0]))
    images = np.concatenate([part[0] for part in parts]) if parts \
        else np.empty((0, size, size, 3), np.uint8)
    return images, _encode([lab for part in parts for lab in part[1]])


@contextlib.contextmanager
def _mapper(workers: int):
    """An order-keeping, lazy ``map``: the builtin one, or a pool of ``workers`` processes."""
    if workers <= 1:
        yield map
        return
    # fork starts workers instantly on Linux (no re-import of torch); elsewhere fork is
    # unsafe or missing, so spawn re-imports this module in each worker.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield pool.imap


def mirror_labels(labels: dict) -> dict:
    """Labels of the horizontally mirrored images: tilt and offset_x change sign and an
    odd-eyed cat's blue eye changes side; the rest stays. Takes encoded arrays
    ({name: (n,)}, as from ``render_cats``) or one cat's readable dict."""
    out = dict(labels)
    out["tilt"] = -labels["tilt"]
    out["offset_x"] = -labels["offset_x"]
    swap = {"no": "no", "blue_left": "blue_right", "blue_right": "blue_left"}
    odd = labels["odd_eyed"]
    if isinstance(odd, str):
        out["odd_eyed"] = swap[odd]
    else:
        values = ATTRIBUTES["odd_eyed"][1]
        table = np.array([values.index(swap[v]) for v in values])
        out["odd_eyed"] = table[np.asarray(odd)]
    return out


def mirror_attributes(attrs: dict) -> dict:
    """All attributes (labelled and details) of the mirror image of ``attrs``'s cat:
    ``draw_cat(mirror_attributes(a))`` is ``draw_cat(a)`` flipped left-right (up to
    rasterisation), which is what makes ``mirror_labels`` right."""
    out = mirror_labels(attrs)
    out["side"] = -attrs["side"]
    out["texture"] = tuple(np.ascontiguousarray(t[:, ::-1]) for t in attrs["texture"])
    return out


def condition_ids(labels: dict, attributes) -> torch.Tensor:
    """(n, A) LongTensor: the value codes of ``attributes`` (categorical, e.g. a config's
    ``condition``) from encoded labels; what a conditioned transformer is asked for."""
    missing = [name for name in attributes if name not in labels]
    if missing:
        raise ValueError(f"the images carry no {', '.join(missing)} labels (only the toy cats do): "
                         "condition on labelled attributes, or --set condition= for an "
                         "unconditioned model")
    return torch.from_numpy(np.stack([np.asarray(labels[name], dtype=np.int64) for name in attributes], axis=1))


def encode_request(request: dict, attributes) -> list[int]:
    """{attribute: value name} (e.g. {"fur_colour": "ginger", "pattern": "tabby"}) -> the value
    codes of ``attributes`` in order, "unknown" (the number of values) for those not asked."""
    unknown = [name for name in request if name not in attributes]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not among the model's condition {tuple(attributes)}")
    codes = []
    for name in attributes:
        values = ATTRIBUTES[name][1]
        if name in request and request[name] not in values:
            raise ValueError(f"{name}={request[name]!r}: choose one of {', '.join(values)}")
        codes.append(values.index(request[name]) if name in request else len(values))
    return codes


def decode_label(name: str, code) -> str | float:
    """The readable value of one encoded label (the string of a categorical code)."""
    kind, values = ATTRIBUTES[name]
    return values[int(code)] if kind == "categorical" else float(code)


__all__ = ["ATTRIBUTES", "RENDER_VERSION", "SUPERSAMPLE", "sample_attributes", "draw_cat", "part_centres",
           "render_cat", "render_cats", "mirror_labels", "mirror_attributes", "decode_label",
           "condition_ids", "encode_request"]
