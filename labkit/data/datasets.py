"""Datasets: cached toy-cat splits, the course's folder layout, and any folder of images.

Every loader returns ``ImageSet``s: uint8 images (n, S, S, 3), attribute labels (toy cats
only), fixed masks (test sets only; True = missing), file names, and a ``source`` string.

    splits = load_dataset(cfg)                     # toy cats: {"train", "val", "test"}
    splits = load_dataset(cfg, "path/to/course")   # the course's layout (see below)
    splits = load_dataset(cfg, "path/to/photos")   # any image folder, split 90/5/5
    x = splits["train"].tensors([0, 1, 2])         # (3, 3, S, S) float in [0, 1]

Decisions (each also named in the error or warning it causes):

- Files are read in natural name order ("2.png" before "10.png"); the course's test files
  (masked image, mask, ground-truth row) are paired by that order. Sub-folders are not searched.
- Transparent images are composited on white (dropping alpha would reveal whatever colour
  the transparent pixels happen to hold). 16-bit images are scaled to 8 bits (/257).
  Every image is resized (short side) and centre-cropped to S x S; EXIF rotation is applied.
  An animated GIF or PNG gives its first frame.
- An unreadable image is an error naming the file. ``skip_corrupt=True`` skips such images
  in image folders (the course's train/ and val/ included) with one warning giving the
  count. The course's test files are never skipped: they are paired by position, so a gap
  would misalign masks and ground truth.
- Course masks: pixels darker than mid-grey are missing. A mask that is all black (nothing
  known) or all white (nothing to inpaint) is an error; a mask set that is mostly
  "missing" gets a warning, as its polarity is probably inverted.
- Course ground-truth CSV: one image per row, S*S*3 values in HWC order, UTF-8 with or
  without a byte-order mark (Excel's "CSV UTF-8"). A first row of names or of the column
  numbers is a header; every other row must be 0..255 integers, and a bad one is named by its
  number. A row with one extra value starts with an id column, and ids that name the test
  files put the rows in file order.
- Cached toy cats are checked against what their file name says (count, size, seed, the
  drawing code's version) and rendered again, with a warning, when they do not match.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .holes import MASK_VERSION, make_masks
from .toycats import ATTRIBUTES, RENDER_VERSION, render_cats
from ..lab.utils import atomic_path, given_path
from ..lab.utils import data_root as default_data_root

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
# Layout of a course dataset root, for error messages.
COURSE_LAYOUT = ("train/ and val/ (image folders); masked_image/ and mask64/ (black = missing) "
                 "under test/ or directly under the root; ground truth as gt/ (PNG folder) or "
                 "one .csv file (64*64*3 values per row) beside them")


class DataError(ValueError):
    """A dataset on disk is missing, empty, unreadable or inconsistent."""


@dataclass
class ImageSet:
    """One split. ``images``: (n, S, S, 3) uint8; ``labels``: {attribute: (n,)} (toy cats
    only, see ``labkit.data.toycats.ATTRIBUTES``); ``masks``: (n, S, S) bool, True = missing, or
    None (only test sets carry fixed masks); ``names``: n file / item names; ``ground_truth``:
    False when ``images`` are the masked inputs (a course test folder without its ground truth)."""

    images: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    masks: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    source: str = ""
    ground_truth: bool = True

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return self.images.shape[1]

    def tensors(self, indices=None) -> torch.Tensor:
        """(n, 3, S, S) float32 in [0, 1] of ``indices`` (all images when None)."""
        images = self.images if indices is None else self.images[self._index(indices)]
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255

    def mask_tensors(self, indices=None) -> torch.Tensor:
        """(n, 1, S, S) bool, True = missing, of ``indices`` (all masks when None)."""
        if self.masks is None:
            raise DataError(f"{self.source or 'this image set'} has no fixed masks (only test sets "
                            "carry them); make some with labkit.data.holes.make_masks(seed, n, size)")
        masks = self.masks if indices is None else self.masks[self._index(indices)]
        return torch.from_numpy(np.ascontiguousarray(masks))[:, None]

    def subset(self, indices) -> "ImageSet":
        index = self._index(indices)
        return ImageSet(
            images=self.images[index],
            labels={name: values[index] for name, values in self.labels.items()},
            masks=None if self.masks is None else self.masks[index],
            names=[self.names[i] for i in np.arange(len(self))[index]],
            source=self.source,
            ground_truth=self.ground_truth,
        )

    def require_ground_truth(self) -> None:
        """Refuse to score against ``images`` that are the masked inputs themselves."""
        if not self.ground_truth:
            raise DataError(f"{self.source}: there is no ground truth to score the inpainting "
                            "against, and scoring against the masked images would be meaningless. "
                            "Add it beside masked_image/ and mask64/ (a gt/ folder of PNGs or one "
                            ".csv of S*S*3 values per row), or only train on this folder "
                            "(make-data, train-tokenizer, train-mvtm)")

    def _index(self, indices) -> np.ndarray | slice:
        if isinstance(indices, slice):
            return indices
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        outside = index[(index >= len(self)) | (index < -len(self))]
        if len(outside):
            raise DataError(f"image index {int(outside[0])} is out of range: "
                            f"{self.source or 'this image set'} holds {len(self)} images "
                            f"(indices 0..{len(self) - 1})")
        return index


# ----------------------------------------------------------------------------- toy cats

def split_seed(data_seed: int, split: str) -> int:
    """The random stream of one toy-cat split: train, val and test never share an image."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; choose one of {tuple(SPLIT_OFFSETS)}")
    return data_seed * 1000 + SPLIT_OFFSETS[split]


def toy_cats(cfg, split: str, root: str | Path | None = None, workers: int | None = None,
             progress: bool = True) -> ImageSet:
    """The ``split`` of the toy-cat dataset of ``cfg`` (n_train / n_val / n_test images of
    cfg.image_size, from cfg.data_seed); rendered once, then loaded from
    ``<root>/toycats-<size>/<split>-seed<data_seed>-n<n>.npz`` (root: ``labkit.lab.utils.data_root``
    by default). The test split carries fixed brush masks."""
    seed = split_seed(cfg.data_seed, split)
    n = getattr(cfg, f"n_{split}")
    size = cfg.image_size
    path = default_data_root(root) / f"toycats-{size}" / f"{split}-seed{cfg.data_seed}-n{n}.npz"
    source = f"toycats:{split} (seed {seed}, {n} images of {size}x{size})"
    names = [f"cat-{seed}-{i:05d}" for i in range(n)]
    cached = _load_cache(path, source)
    if cached is not None:
        wrong = _cache_mismatch(cached, names, size, with_masks=split == "test")
        if wrong is None:
            return cached
        warnings.warn(f"{path} holds {wrong}, not the {source} its name says; rendering it again")

    images, labels = render_cats(seed, range(n), size, workers=workers or cfg.data_workers,
                                 progress=progress, desc=f"rendering toy cats ({split})")
    masks = make_masks(seed, n, size) if split == "test" else None
    image_set = ImageSet(images, labels, masks, names, source)
    _save_cache(path, image_set)
    return image_set


def _cache_mismatch(cached: ImageSet, names: list[str], size: int, with_masks: bool) -> str | None:
    """What a cached split holds that the split it should be does not (None: it matches).
    The names carry the seed and the index of every cat."""
    n = len(names)
    images = cached.images
    if images.dtype != np.uint8 or images.shape != (n, size, size, 3):
        return f"images of shape {images.shape} ({images.dtype})"
    if cached.names != names:
        first = next(got for got, want in zip(cached.names, names) if got != want) \
            if len(cached.names) == n else f"{len(cached.names)} names"
        return f"other cats ({first})"
    if any(values.shape != (n,) for values in cached.labels.values()):
        return "labels of another length"
    if with_masks != (cached.masks is not None) or (
            with_masks and (cached.masks.dtype != bool or cached.masks.shape != (n, size, size))):
        return "no masks" if cached.masks is None else f"masks of shape {cached.masks.shape}"
    return None


def _save_cache(path: Path, image_set: ImageSet) -> None:
    """Write atomically (``labkit.lab.utils.atomic_path``), so an interrupted run never leaves a
    half-written cache that a later run would trust."""
    arrays = {"images": image_set.images, "names": np.array(image_set.names),
              "version": np.array([RENDER_VERSION, MASK_VERSION])}
    arrays.update({f"label_{name}": values for name, values in image_set.labels.items()})
    if image_set.masks is not None:
        arrays["masks"] = image_set.masks
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, **arrays)          # uncompressed: loads in a fraction of a second


def _load_cache(path: Path, source: str) -> ImageSet | None:
    """The cached split, or None when absent, unreadable or made by older drawing code."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if tuple(data["version"]) != (RENDER_VERSION, MASK_VERSION):
                warnings.warn(f"{path} was made by an older version of the toy cats or masks; "
                              "rendering it again")
                return None
            labels = {name: data[f"label_{name}"] for name in ATTRIBUTES}
            masks = data["masks"] if "masks" in data.files else None
            return ImageSet(data["images"], labels, masks, data["names"].tolist(), source)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"cannot read the cached dataset {path} ({exc}); rendering it again")
        return None


# ----------------------------------------------------------------------------- image files

def _natural_key(path: Path):
    """Sort "img2.png" before "img10.png" (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural name order; DataError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no folder at {folder}: check the path (data_root) or create it")
    files = sorted((p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
    if not files:
        raise DataError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}; "
                        "sub-folders are not searched): put the images directly in it")
    return files


def read_image(path: str | Path) -> Image.Image:
    """One image file as 8-bit RGB (alpha composited on white, 16-bit scaled to 8-bit)."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}. Replace or delete the file (image "
                        "folders and train/ / val/ can skip unreadable files with "
                        "skip_corrupt=True)") from exc
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        # 16-bit greyscale ('I;16*', or 'I' holding 0..65535): scale, never clip, to 8 bits.
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(np.round(values / 257), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _fit(image: Image.Image, size: int, resample=Image.LANCZOS) -> Image.Image:
    """Resize the short side to ``size`` and centre-crop to size x size."""
    if image.size == (size, size):
        return image
    return ImageOps.fit(image, (size, size), method=resample, centering=(0.5, 0.5))


def load_image_folder(path: str | Path, size: int, skip_corrupt: bool = False) -> ImageSet:
    """Every image directly in ``path`` (natural name order) as an ImageSet of size x size."""
    images, names, skipped = [], [], []
    for file in list_images(path):
        try:
            image = read_image(file)
        except DataError:
            if not skip_corrupt:
                raise
            skipped.append(file.name)
            continue
        images.append(np.asarray(_fit(image, size)))
        names.append(file.name)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {path} "
                      f"(e.g. {', '.join(skipped[:3])})")
    if not images:
        raise DataError(f"none of the images in {path} could be read: replace them")
    return ImageSet(np.stack(images), {}, None, names, f"folder:{path}")


# ----------------------------------------------------------------------------- the course

def write_image_folder(images, folder: str | Path, names) -> Path:
    """Write ``images`` ((n, 3, S, S) floats in [0, 1] or uint8 (n, S, S, 3)) as PNGs named
    ``names`` (a ".png" added where missing) into ``folder``, each file atomically; returns it."""
    folder = Path(folder)
    images = torch.as_tensor(images)
    if images.is_floating_point():
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    names = [str(name) if str(name).lower().endswith(".png") else f"{name}.png" for name in names]
    if len(names) != len(images) or len(set(names)) != len(names):
        raise ValueError(f"{len(images)} images need as many distinct names, got {len(names)}")
    for image, name in zip(images.numpy(), names):
        with atomic_path(folder / name) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
    return folder


def read_mask(path: str | Path) -> np.ndarray:
    """A course mask PNG -> (H, W) bool, True = missing (black, below mid-grey)."""
    return np.asarray(read_image(path).convert("L")) < 128


def _find_test_dir(root: Path) -> Path:
    for folder in (root / "test", root):
        if (folder / "masked_image").is_dir() or (folder / "mask64").is_dir():
            return folder
    raise DataError(f"no masked_image/ or mask64/ folder in {root} or {root / 'test'}; "
                    f"the course layout is: {COURSE_LAYOUT}")


def _find_gt_csv(test_dir: Path, root: Path) -> Path | None:
    folders = [test_dir] if test_dir == root else [test_dir, root]
    found = sorted(p for folder in folders for p in folder.glob("*.csv"))
    if len(found) > 1:
        raise DataError(f"several CSV files could hold the ground truth: {[str(p) for p in found]}; "
                        "pass gt_csv=... to choose one")
    return found[0] if found else None


def read_gt_csv(path: str | Path, size: int | None = None, names: list[str] | None = None) -> np.ndarray:
    """Course ground truth: one image per row, size*size*3 uint8 values in HWC order
    -> (n, size, size, 3) uint8 (``size`` None: read from the length of the first row).

    UTF-8, with or without a byte-order mark (Excel). A first row of names ("pixel0", ...) or
    of the column numbers (0, 1, 2, ... or 1, 2, 3, ...) is a header and skipped; every other
    row must hold integers in 0..255, and a bad one is named by its number. A row with one
    value more than an image needs starts with an id / file name column: when those ids are
    exactly ``names`` (with or without extension), rows are put in the order of ``names``;
    otherwise rows keep their order in the file.
    """
    path = Path(path)
    expected = None if size is None else size * size * 3
    rows, ids = [], []
    with open(path, newline="", encoding="utf-8-sig") as file:
        try:
            for number, row in enumerate(csv.reader(file), start=1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue                                        # blank line
                if expected is None:
                    size = _csv_image_size(path, number, len(row))
                    expected = size * size * 3
                has_id = len(row) == expected + 1
                values = row[1:] if has_id else row
                if number == 1 and _is_header(values):
                    continue
                rows.append(_pixel_row(path, number, values, size))
                ids.append(row[0].strip() if has_id else None)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                            "re-export it as CSV (UTF-8)") from None
    if not rows:
        raise DataError(f"{path} holds no ground-truth rows: re-export it")
    images = np.stack(rows)
    if names is not None and all(i is not None for i in ids):
        order = _order_by_ids(ids, names)
        if order is not None:
            images = images[order]
    return images


def _pixel_row(path: Path, number: int, values: list[str], size: int) -> np.ndarray:
    """Row ``number`` of the CSV (its values after any id column) as one (size, size, 3) image."""
    expected = size * size * 3
    if len(values) != expected:
        raise DataError(f"{path} row {number} has {len(values)} values; a ground-truth row "
                        f"holds {expected} (= {size}*{size}*3 pixels, HWC order), plus an "
                        "optional leading id column: fix or re-export the CSV")
    try:
        pixels = np.array(values, dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path} row {number} holds a value that is not an integer "
                        f"({exc}): fix or re-export the CSV") from exc
    outside = np.flatnonzero((pixels < 0) | (pixels > 255))
    if len(outside):
        raise DataError(f"{path} row {number} holds values outside 0..255 ({pixels[outside[0]]} "
                        f"at value {outside[0] + 1}): ground truth must be uint8 pixels; fix or "
                        "re-export the CSV")
    return pixels.astype(np.uint8).reshape(size, size, 3)


def _csv_image_size(path: Path, number: int, n_values: int) -> int:
    """The side S of the square RGB images whose rows have ``n_values`` values (S*S*3, or one
    more with an id column)."""
    for pixels in (n_values, n_values - 1):
        side = math.isqrt(max(pixels, 0) // 3)
        if side > 0 and side * side * 3 == pixels:
            return side
    raise DataError(f"{path} row {number} has {n_values} values, which is no square RGB image "
                    "(S*S*3 values, HWC order, plus an optional leading id column): fix or "
                    "re-export the CSV")


def _is_header(values: list[str]) -> bool:
    """A row that names its columns: every value a name (it holds a letter), or the values
    are the column numbers 0, 1, 2, ... (or 1, 2, 3, ...)."""
    if all(re.search(r"[^\W\d_]", value) for value in values):
        return True
    if not all(re.fullmatch(r"[0-9]+", value.strip()) for value in values):
        return False
    numbers = [int(value) for value in values]
    return numbers in (list(range(len(numbers))), list(range(1, len(numbers) + 1)))


def _order_by_ids(ids: list[str], names: list[str]) -> np.ndarray | None:
    """Row index for each name when the CSV ids are the file names (or their stems)."""
    for keys in (names, [Path(n).stem for n in names]):
        if sorted(ids) == sorted(keys) and len(set(ids)) == len(ids):
            position = {key: row for row, key in enumerate(ids)}
            return np.array([position[key] for key in keys])
    return None


def _check_masks(masks: list[np.ndarray], names: list[str], folder: Path) -> None:
    missing = np.array([mask.mean() for mask in masks])
    for share, name in zip(missing, names):
        if share == 1.0:
            raise DataError(f"mask {folder / name} is all black (every pixel missing, nothing "
                            "left to condition on): fix or remove it and its masked image")
        if share == 0.0:
            raise DataError(f"mask {folder / name} is all white (no pixel missing, nothing to "
                            "inpaint): fix or remove it and its masked image")
    if missing.mean() > 0.5:
        warnings.warn(f"masks in {folder} mark {missing.mean():.0%} of pixels as missing on "
                      "average; the course's masks use BLACK = missing (about 21-26 %): "
                      "are they inverted?")


def _load_truth(test_dir: Path, root: Path, gt_csv, masked: list[Image.Image],
                masked_files: list[Path]) -> tuple[list[Image.Image] | None, str | None]:
    """Ground truth for each masked image, from gt_csv, else gt/, else a CSV found beside."""
    gt_path = Path(gt_csv) if gt_csv is not None else (
        test_dir / "gt" if (test_dir / "gt").is_dir() else _find_gt_csv(test_dir, root))
    if gt_path is None:
        return None, None
    if gt_path.is_dir():
        gt_files = list_images(gt_path)
        if len(gt_files) != len(masked_files):
            raise DataError(f"{len(gt_files)} ground-truth images in {gt_path} but "
                            f"{len(masked_files)} masked images in {masked_files[0].parent}: they "
                            "are paired in file-name order, so the counts must match")
        truth = [read_image(f) for f in gt_files]
        for image, gt_image, gt_file in zip(masked, truth, gt_files):
            if gt_image.size != image.size:
                raise DataError(f"ground truth {gt_file} is {gt_image.width}x{gt_image.height} "
                                f"but its masked image is {image.width}x{image.height}: they "
                                "must show the same picture at the same size")
        return truth, str(gt_path)
    if not gt_path.is_file():
        raise DataError(f"no ground-truth CSV at {gt_path}: check the path")
    rows = read_gt_csv(gt_path, masked[0].width, [f.name for f in masked_files])
    if len(rows) != len(masked_files):
        raise DataError(f"{gt_path} has {len(rows)} ground-truth rows but there are "
                        f"{len(masked_files)} masked images in {masked_files[0].parent}: they "
                        "must match one to one")
    return [Image.fromarray(row) for row in rows], str(gt_path)


def _load_test(root: Path, size: int, gt_csv: str | Path | None) -> ImageSet:
    test_dir = _find_test_dir(root)
    masked_dir, mask_dir = test_dir / "masked_image", test_dir / "mask64"
    masked_files, mask_files = list_images(masked_dir), list_images(mask_dir)
    if len(masked_files) != len(mask_files):
        raise DataError(f"{len(masked_files)} masked images in {masked_dir} but {len(mask_files)} "
                        f"masks in {mask_dir}: every masked image needs one mask (paired in "
                        "file-name order)")
    masked = [read_image(f) for f in masked_files]
    masks = [read_mask(f) for f in mask_files]
    for image, mask, image_file, mask_file in zip(masked, masks, masked_files, mask_files):
        if mask.shape != (image.height, image.width):
            raise DataError(f"mask {mask_file} is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{image_file} is {image.width}x{image.height}: masks must match "
                            "their images pixel for pixel")
    names = [f.name for f in masked_files]
    _check_masks(masks, [f.name for f in mask_files], mask_dir)

    truth, gt_source = _load_truth(test_dir, root, gt_csv, masked, masked_files)
    images = np.stack([np.asarray(_fit(im, size)) for im in (truth or masked)])
    fitted_masks = np.stack([np.asarray(_fit(Image.fromarray(m), size, Image.NEAREST))
                             for m in masks])
    source = (f"course:test (ground truth from {gt_source})" if truth is not None else
              f"course:test (MASKED images, no ground truth found in {test_dir})")
    return ImageSet(images, {}, fitted_masks.astype(bool), names, source, ground_truth=truth is not None)


def load_course_dataset(root: str | Path, size: int = 64, skip_corrupt: bool = False,
                        gt_csv: str | Path | None = None) -> dict[str, ImageSet]:
    """The course's dataset at ``root`` -> {"train", "val", "test"} ImageSets of size x size.

    Layout: train/ and val/ image folders; masked_image/ and mask64/ (binary PNGs,
    BLACK = missing) under ``root/test/`` or directly under ``root``; ground truth as a
    gt/ PNG folder beside them, else the one .csv file found there or in ``root`` (or
    ``gt_csv``). The test set's ``images`` are the ground truth; without any, they are
    the masked images and ``source`` says so. ``masks`` are True = missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"no dataset folder at {root}: check data_root; expected {COURSE_LAYOUT}")
    return {
        "train": load_image_folder(root / "train", size, skip_corrupt),
        "val": load_image_folder(root / "val", size, skip_corrupt),
        "test": _load_test(root, size, gt_csv),
    }


def looks_like_course(root: str | Path) -> bool:
    """A folder with a train/ sub-folder is read as the course's layout."""
    return (Path(root) / "train").is_dir()


def load_dataset(cfg, data_root: str | Path | None = None, cache_root: str | Path | None = None,
                 skip_corrupt: bool = False, progress: bool = True) -> dict[str, ImageSet]:
    """{"train", "val", "test"} ImageSets of cfg.image_size for the lab.

    - ``data_root=None``: the toy cats of ``cfg`` (cached under ``cache_root``, by default
      ``labkit.lab.utils.data_root()``; ``progress``
      shows a bar while they are rendered the first time);
    - a folder with a train/ sub-folder: the course's layout (``load_course_dataset``);
    - any other folder of images: split 90 / 5 / 5 in a fixed order given by
      cfg.data_seed; the test part gets brush masks from ``make_masks``.
    """
    root = given_path(data_root, "the dataset folder (data_root, --data-root)")
    if root is None:
        return {split: toy_cats(cfg, split, cache_root, progress=progress)
                for split in SPLIT_OFFSETS}
    if not root.is_dir():
        raise DataError(f"no dataset folder at {root}: check data_root (None uses the toy cats)")
    if looks_like_course(root):
        return load_course_dataset(root, cfg.image_size, skip_corrupt)

    everything = load_image_folder(root, cfg.image_size, skip_corrupt)
    n = len(everything)
    if n < 3:
        raise DataError(f"{root} holds {n} image(s); a train / val / test split needs at least 3")
    n_val = n_test = max(1, round(0.05 * n))
    order = np.random.default_rng(cfg.data_seed).permutation(n)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
             "train": order[n_test + n_val:]}
    splits = {}
    for split, index in parts.items():
        part = everything.subset(np.sort(index))
        part.source = f"folder:{root} ({split}, {len(part)} of {n} images)"
        splits[split] = part
    test = splits["test"]
    test.masks = make_masks(split_seed(cfg.data_seed, "test"), len(test), cfg.image_size)
    return {split: splits[split] for split in SPLIT_OFFSETS}


__all__ = ["DataError", "ImageSet", "IMAGE_EXTENSIONS", "toy_cats", "split_seed", "list_images",
           "read_image", "read_mask", "read_gt_csv", "write_image_folder", "load_image_folder", "load_course_dataset",
           "looks_like_course", "load_dataset"]
