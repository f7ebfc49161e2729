"""Inpainting sweeps: schedules x total iterations T x stopping iteration t, with baselines.

One decoding run with T iterations passes through every t = 1..T on its way (the course's
"sweet spot" is just stopping early), so ``sweep`` decodes each (schedule, T) once and
scores the image after every t from that one trace: T transformer passes per image and
setting, instead of 1 + 2 + ... + T.

Every number lands in one tidy table (a list of dicts, written as CSV), one row per score::

    method     maskgit | one_shot | masked_input | vqgan_masked | tokenizer_ceiling | real_vs_real
    schedule   cosine, linear, ... (maskgit rows)
    T, t       total iterations and the iteration the image was taken after
    composite  True: known pixels pasted back; False: the raw decode (what the course scored)
    choice_temperature, sample   how the decoded rows (maskgit, one_shot) chose their tokens
    metric     FD_catnet, FID, hole_l1, hole_psnr, image_l1, image_psnr (``labkit.evaluate``),
               agree_<attribute>, abserr_<attribute>
    value, n   the score and the number of images behind it
    extractor, extractor_hash   which network gave the features (empty for pixel scores)

Baselines in the same table: the masked input (grey hole), the VQGAN round-trip of the
masked input, one-shot prediction (T = 1; it is the same for every schedule), and the
VQGAN round-trip of the ground truth, ``tokenizer_ceiling``, since MaskGIT can only
produce images its tokenizer decodes. The images come from ``labkit.evaluate.inpaint_and_score``,
as in the pipeline's table.

``real_vs_real`` is the distance between the ground truth and an independent draw of as
many real images: how far apart two sets of *different* real cats already are at this n.
It is a yardstick, not a hard floor: the inpainted images are the ground-truth cats
themselves outside the hole, so a paired set can score below it (the ground truth's own
VQGAN round-trip usually does), and a perfect inpainting scores 0. An inpainting at the
yardstick is, in distribution, as far from its ground truth as a fresh set of real cats.

Note that the image after iteration t = 1 of any schedule is the one-shot prediction (all
masked tokens predicted at once), so every schedule's column t = 1 is the same number.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .evaluate import inpaint_and_score, pixel_scores
from .fid import Extractor, FeatureStats, SmallSampleWarning, frechet_distance, to_float_images
from .masks import as_pixel_mask, paste_known

COLUMNS = ("method", "schedule", "T", "t", "composite", "choice_temperature", "sample", "metric",
           "value", "n", "extractor", "extractor_hash")
BASELINES = ("one_shot", "masked_input", "vqgan_masked", "tokenizer_ceiling")


def higher_is_better(metric: str) -> bool:
    return metric.endswith("_psnr") or metric.startswith("agree_")


@dataclass
class SweepResult:
    """The tidy rows of a sweep, and how long it took."""
    rows: list[dict]
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def select(self, **where) -> list[dict]:
        return [row for row in self.rows if all(row.get(k) == v for k, v in where.items())]

    def value(self, **where) -> float:
        """The one value matching ``where`` (e.g. method="maskgit", schedule="cosine", T=8, t=8,
        composite=True, metric="FD_catnet")."""
        rows = self.select(**where)
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} rows match {where}; add columns to pick one")
        return rows[0]["value"]

    def best(self, metric: str | None = None, composite: bool = True) -> list[dict]:
        """The best (T, t) of each schedule for ``metric`` (default: the first Fréchet distance)."""
        metric = metric or self.settings["metrics"][0]
        pick = max if higher_is_better(metric) else min
        out = []
        for schedule in self.settings["schedules"]:
            rows = self.select(method="maskgit", schedule=schedule, metric=metric, composite=composite)
            if rows:
                out.append(pick(rows, key=lambda row: row["value"]))
        return out

    def to_csv(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
        return path

    def table(self, metric: str | None = None, composite: bool = True) -> str:
        """A text table of ``metric``: one line per (schedule, T) with its value after every t,
        then the baselines and the real-vs-real yardstick."""
        metric = metric or self.settings["metrics"][0]
        total_iters = self.settings["total_iters"]
        width = max(total_iters, default=1)
        settings = self.settings
        lines = [f"{metric} ({'composite' if composite else 'raw decode'}, n={settings['n']}, choice "
                 f"temperature {settings['choice_temperature']:g}, "
                 f"{'sampled' if settings['sample'] else 'argmax'} tokens, seed {settings['seed']})",
                 f"{'schedule':>10} {'T':>3} | " + " ".join(f"t={t:<5d}" for t in range(1, width + 1))]
        for schedule in self.settings["schedules"]:
            for total in total_iters:
                values = [self.select(method="maskgit", schedule=schedule, T=total, t=t,
                                      metric=metric, composite=composite) for t in range(1, total + 1)]
                cells = " ".join(f"{rows[0]['value']:<7.3f}" for rows in values)
                lines.append(f"{schedule:>10} {total:>3} | {cells}")
        for method in BASELINES + ("real_vs_real",):
            rows = [row for row in self.select(method=method, metric=metric)
                    if row["composite"] in (composite, None) or method == "masked_input"]
            if rows:
                lines.append(f"{method:>14} | {rows[0]['value']:.3f}")
        extractor = next((row for row in self.select(metric=metric) if row["extractor"]), None)
        if extractor:
            lines.append(f"({metric} from {extractor['extractor']} weights {extractor['extractor_hash']})")
        return "\n".join(lines)


class _Scores:
    """Accumulates, per image set (a key), the features and per-image scores of its chunks."""

    def __init__(self, extractors, originals, masks, catnet, gt_attributes):
        self.extractors, self.originals, self.masks = extractors, originals, masks
        self.catnet, self.gt_attributes = catnet, gt_attributes
        self.features: dict = {}
        self.per_image: dict = {}

    def add(self, key, images: torch.Tensor, index: slice) -> None:
        """images: (B, 3, H, W) in [0, 1], the set ``key``'s images ``index`` of the originals."""
        images = images.float().cpu()
        per_image = self.per_image.setdefault(key, {})
        for metric, values in pixel_scores(images, self.originals[index], self.masks[index]).items():
            per_image.setdefault(metric, []).append(values.numpy())
        catnet_features = None
        if self.catnet is not None:
            from .catnet import agreement_from_predictions
            predicted, catnet_features = self.catnet.predict(images, return_features=True)
            gt = {name: values[index] for name, values in self.gt_attributes.items()}
            for name, values in agreement_from_predictions(predicted, gt, self.catnet.attributes).items():
                per_image.setdefault(name, []).append(values)
        features = self.features.setdefault(key, {ex.metric: [] for ex in self.extractors})
        for extractor in self.extractors:
            # The FD_catnet extractor reads the same pass that gave the attributes above.
            same_pass = catnet_features is not None and extractor.featurize == self.catnet.forward_features
            features[extractor.metric].append(catnet_features if same_pass else extractor.features(images))

    def rows(self, key, references: dict, **columns) -> list[dict]:
        out = []
        for extractor in self.extractors:
            stats = FeatureStats.from_features(np.concatenate(self.features[key][extractor.metric]))
            out.append(dict(columns, metric=extractor.metric,
                            value=frechet_distance(stats, references[extractor.metric]),
                            n=stats.n, extractor=extractor.name,
                            extractor_hash=extractor.checkpoint_hash))
        for name, parts in self.per_image[key].items():
            values = np.concatenate(parts)
            # Images with no hole (NaN) or a hole reproduced exactly (PSNR inf) would swamp
            # the mean; they are left out of it, and the n column still counts them.
            finite = values[np.isfinite(values)]
            out.append(dict(columns, metric=name, value=float(finite.mean()) if finite.size else math.nan,
                            n=int(values.size), extractor="", extractor_hash=""))
        del self.features[key], self.per_image[key]
        return out


@torch.no_grad()
def sweep(maskgit, images, pixel_masks, schedules=("linear", "cosine", "square"),
          total_iters=(2, 4, 8, 12), extractors: list[Extractor] | None = None, *,
          floor_images=None, catnet=None, composites=(False, True),
          choice_temperature: float | None = None, sample: bool = False, seed: int = 0,
          chunk_size: int = 64, baselines: bool = True, progress: bool = True) -> SweepResult:
    """Score inpainting over schedules x T x t (each (schedule, T) decoded once) plus baselines.

    maskgit: a trained ``MaskGit``; images: ground truth (n, 3, S, S) in [0, 1] or uint8
    (n, S, S, 3); pixel_masks: (n, S, S) or (n, 1, S, S) bool, True = missing.
    extractors: Fréchet-distance extractors (``labkit.fid.Extractor``; see
    ``default_extractors``); catnet: adds attribute agreement per image when given.
    floor_images: an independent draw of real images (same n) for the real-vs-real yardstick.
    choice_temperature (None: the config's) and sample: as in ``MaskGit.inpaint``.
    Each (schedule, T) uses a generator seeded with ``seed``, consumed chunk after chunk, so
    a run is reproducible for a given ``chunk_size``. T = 1 is the one-shot baseline (the
    same for every schedule), so it is scored once, not per schedule.
    """
    from .progress import tqdm

    start = time.perf_counter()
    extractors = list(extractors or [])
    originals = to_float_images(images).float().cpu()
    masks = as_pixel_mask(pixel_masks).cpu()
    n = originals.shape[0]
    if masks.shape[0] != n:
        raise ValueError(f"{masks.shape[0]} masks for {n} images: give one mask per image")
    total_iters = sorted({int(total) for total in total_iters if int(total) > 1 or not baselines})
    temperature = maskgit.decode_settings(choice_temperature=choice_temperature).choice_temperature
    scored_sets = len(schedules) * sum(total_iters) * len(composites) + (3 * len(composites) + 1) * baselines
    for extractor in extractors:
        if extractor.name.startswith("inception") and extractor.device.type == "cpu":
            warnings.warn(f"{extractor.metric} on the CPU: Inception reads about 2 images/s here, and "
                          f"this sweep scores {scored_sets} sets of {n} images (about "
                          f"{scored_sets * n / 2 / 3600:.1f} h). Use a GPU, fewer settings, or "
                          "FD_catnet alone for the sweep and FID for the best settings.", stacklevel=2)
    references = {ex.metric: ex.statistics(originals) for ex in extractors}
    gt_attributes = catnet.predict(originals) if catnet is not None else None
    scores = _Scores(extractors, originals, masks, catnet, gt_attributes)
    chunks = [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
    runs = [(schedule, total) for schedule in schedules for total in total_iters]
    decode = dict(choice_temperature=temperature, sample=sample)
    rows = []

    if baselines:
        generator = torch.Generator().manual_seed(seed)
        for index in tqdm(chunks, desc="baselines", disable=not progress):
            one_shot = inpaint_and_score(maskgit, originals[index], masks[index], total_iter=1,
                                         generator=generator, **decode)
            for composite in composites:
                scores.add(("one_shot", composite), one_shot.rows["maskgit" if composite else "maskgit_raw"],
                           index)
                for method in ("vqgan_masked", "tokenizer_ceiling"):   # pasted back, or not
                    raw = one_shot.rows[method]
                    scores.add((method, composite), paste_known(raw, originals[index], masks[index])
                               if composite else raw, index)
            scores.add(("masked_input", True), one_shot.rows["masked_input"], index)
        for composite in composites:
            rows += scores.rows(("one_shot", composite), references, method="one_shot", schedule=None,
                                T=1, t=1, composite=composite, **decode)
            for method in ("vqgan_masked", "tokenizer_ceiling"):
                rows += scores.rows((method, composite), references, method=method, schedule=None,
                                    T=None, t=None, composite=composite)
        rows += scores.rows(("masked_input", True), references, method="masked_input", schedule=None,
                            T=None, t=None, composite=True)

    for schedule, total in tqdm(runs, desc="sweep", disable=not progress):
        generator = torch.Generator().manual_seed(seed)
        for index in chunks:
            result = inpaint_and_score(maskgit, originals[index], masks[index], gamma=schedule,
                                       total_iter=total, generator=generator, baselines=False,
                                       **decode).result
            for composite in composites:
                steps = result.steps(composite).cpu()                      # (T, B, 3, H, W)
                for t in range(1, total + 1):
                    scores.add((schedule, total, t, composite), steps[t - 1], index)
        for t in range(1, total + 1):
            for composite in composites:
                rows += scores.rows((schedule, total, t, composite), references, method="maskgit",
                                    schedule=schedule, T=total, t=t, composite=composite, **decode)

    if floor_images is not None:
        floor = to_float_images(floor_images).float()
        if len(floor) != n:
            warnings.warn(f"the real-vs-real yardstick uses {len(floor)} images but the sweep {n}: "
                          "Fréchet distances depend on n, so it is only comparable at equal n",
                          SmallSampleWarning, stacklevel=2)
        for extractor in extractors:
            rows.append(dict(method="real_vs_real", schedule=None, T=None, t=None, composite=None,
                             metric=extractor.metric,
                             value=frechet_distance(extractor.statistics(floor), references[extractor.metric]),
                             n=len(floor), extractor=extractor.name,
                             extractor_hash=extractor.checkpoint_hash))
    settings = dict(schedules=list(schedules), total_iters=total_iters, n=n, seed=seed,
                    composites=list(composites), choice_temperature=temperature, sample=sample,
                    metrics=[ex.metric for ex in extractors] + ["hole_l1"])
    return SweepResult(rows, time.perf_counter() - start, settings)


def default_extractors(cfg, run_dir=None, device=None, weights=None, progress: bool = True,
                       data=None):
    """The extractors a sweep should report: FD_catnet always (trained once into
    ``<run_dir>/catnet.safetensors``, default ``<runs root>/<profile>``, on the toy cats cached under
    ``data`` (default ``labkit.utils.data_root()``) if missing), plus FID when the Inception weights are on this machine (or
    ``weights`` names them). Returns (extractors, catnet)."""
    from .catnet import catnet_extractor, load_or_train_catnet
    from .fid import find_inception_weights, inception_extractor

    catnet = load_or_train_catnet(cfg, run_dir, device, progress, data)
    extractors = [catnet_extractor(catnet, device)]
    if weights is not None or find_inception_weights() is not None:
        extractors.append(inception_extractor(weights, device))
    return extractors, catnet
