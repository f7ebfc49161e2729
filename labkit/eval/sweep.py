"""Inpainting sweeps: schedules x total iterations T x stopping iteration t, with baselines.

    result = sweep(maskgit, images, pixel_masks, SweepPlan(schedules=("cosine",), total_iters=(4, 8)),
                   extractors, catnet, floor_images)
    result.table("FD_catnet"); result.difference("FD_catnet", a, b)    # an Estimate with its noise

One decoding run with T iterations passes through every t = 1..T on its way (the course's
"sweet spot" is stopping early), so each (schedule, T) is decoded once and the image after
every t is scored from that trace. Every number lands in one tidy table (``COLUMNS``, a list
of dicts, written as CSV), one row per score: the method (``maskgit`` or a baseline of
``labkit.eval.scoring.BASELINES``; one shot is T = 1, the same for every schedule), schedule,
T, t, composite (known pixels pasted back) or raw, how tokens were chosen, the metric
(FD_catnet, FID, the pixel scores, agree_<attribute> and abserr_<attribute> with CatNet),
its value, n and the extractor's name and weights hash.

``real_vs_real`` is the distance between the ground truth and an independent draw of as many
real images: how far two sets of *different* real cats already are at this n. It is a
yardstick, not a floor: inpainted images are the ground-truth cats outside the hole, so a
paired set can score below it, and a perfect inpainting scores 0.

Noise: the result keeps every scored set's per-image scores and features (``per_image``) and
the ground truth's features (``references``), so ``standard_errors`` bootstraps each curve
point over images and ``difference`` compares two settings on the same images, paired.
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

from ..config import check_field
from ..core.frechet import FeatureStats, SmallSampleWarning, frechet_distance, frechet_distance_batched
from ..core.masks import as_pixel_mask, paste_known
from .features import Extractor, to_float_images
from .scoring import BASELINES, PIXEL_BASELINES, inpaint_and_score, pixel_scores

COLUMNS = ("method", "schedule", "T", "t", "composite", "choice_temperature", "sample", "metric",
           "value", "n", "extractor", "extractor_hash")


def higher_is_better(metric: str) -> bool:
    return metric.endswith("_psnr") or metric.startswith("agree_")


def is_frechet(metric: str) -> bool:
    """FD_catnet and FID are distances between sets, not means of per-image scores."""
    return metric.startswith(("FD_", "FID"))


def _combined(parts) -> tuple[np.ndarray, tuple]:
    """One array or (first, second) for "first minus second": stacked (n, k, ...) and signs."""
    if isinstance(parts, tuple):
        return np.stack([np.asarray(part) for part in parts], axis=1), (1.0, -1.0)
    return np.asarray(parts)[:, None], (1.0,)


def difference(a, b, reference=None, n_boot: int = 200, seed: int = 0):
    """statistic(a) - statistic(b) for the same n images scored two ways, with its noise.

    a, b: per-image scores from ``SweepResult.scores``: features (n, D) of a Fréchet metric
    (then ``reference``, the ground truth's features (n, D), is required) or values (n,); or a
    pair ``(first, second)`` for the contrast "first minus second" (e.g. how far iterative
    decoding trails one shot), so a difference of two contrasts is measured on the same draws.
    Fréchet distances: ``labkit.eval.verdicts.bootstrap_difference`` over images (each draw resamples
    a, b and the reference with the same indices). Per-image values: the paired mean and SE of
    the per-image differences over the images where both are finite. Returns an ``Estimate``.
    """
    from .verdicts import bootstrap_difference, paired_difference

    a, signs_a = _combined(a)
    b, signs_b = _combined(b)
    if reference is None:
        value_a = (a * np.array(signs_a)).sum(1)
        value_b = (b * np.array(signs_b)).sum(1)
        finite = np.isfinite(value_a) & np.isfinite(value_b)
        return paired_difference(value_a[finite], value_b[finite])

    def statistic(stacked, ref, signs):
        return sum(sign * float(frechet_distance_batched(stacked[:, k], ref)) for k, sign in enumerate(signs))

    if signs_a != signs_b:
        raise ValueError("compare a contrast with a contrast, or one setting with one setting")
    return bootstrap_difference(lambda stacked, ref: statistic(stacked, ref, signs_a), a, b,
                                np.asarray(reference), n_boot=n_boot, seed=seed)


@dataclass
class SweepResult:
    """The tidy rows of a sweep, and how long it took; ``per_image``: each scored set's
    per-image scores ({metric: (n, D) features or (n,) values}, keyed by (method, schedule,
    T, t, composite)); ``references``: {metric: (n, D)} the ground truth's features."""
    rows: list[dict]
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    per_image: dict = field(default_factory=dict, repr=False)
    references: dict = field(default_factory=dict, repr=False)

    def scores(self, metric: str, method: str = "maskgit", schedule=None, T=None, t=None,
               composite: bool | None = True) -> np.ndarray:
        """The per-image scores behind one row: (n, D) features of a Fréchet metric, else (n,)."""
        if method in PIXEL_BASELINES:
            composite = True
        elif method == "one_shot":
            T = t = 1
        key = (method, schedule, T, t, composite)
        if key not in self.per_image:
            raise KeyError(f"no scored set {dict(zip(('method', 'schedule', 'T', 't', 'composite'), key))}")
        return self.per_image[key][metric]

    def difference(self, metric: str, a: dict, b: dict, n_boot: int = 200, seed: int = 0):
        """``difference`` of the settings ``a`` and ``b`` (keyword dicts of ``scores``, or pairs
        of them for contrasts) on this sweep's images: an ``Estimate`` of a - b."""
        def pick(where):
            return tuple(self.scores(metric, **w) for w in where) if isinstance(where, tuple) else \
                self.scores(metric, **where)
        reference = self.references[metric] if is_frechet(metric) else None
        return difference(pick(a), pick(b), reference, n_boot, seed)

    def standard_errors(self, metric: str, composite: bool = True, n_boot: int = 50,
                        seed: int = 0) -> dict:
        """{(schedule, T, t): SE} of every decoded row of ``metric``: how much the number would
        move with another draw of as many test images. Fréchet metrics: a bootstrap over
        images (``n_boot`` draws, the reference resampled with the same indices); per-image
        metrics: the SE of their mean."""
        out = {}
        keys = [key for key in self.per_image if key[0] == "maskgit" and key[4] == composite]
        if is_frechet(metric) and keys:
            reference = torch.as_tensor(self.references[metric], dtype=torch.float64)
            n = len(reference)
            index = torch.from_numpy(np.random.default_rng(seed).integers(0, n, (n_boot, n)))
            for key in keys:
                features = torch.as_tensor(self.per_image[key][metric], dtype=torch.float64)
                out[key[1:4]] = float(frechet_distance_batched(features[index], reference[index]).std())
            return out
        for key in keys:
            values = np.asarray(self.per_image[key][metric], dtype=np.float64)
            values = values[np.isfinite(values)]
            out[key[1:4]] = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
        return out

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
        settings = self.settings
        total_iters = settings["total_iters"]
        width = max((min(total, settings.get("sweet_spot") or total) for total in total_iters), default=1)
        lines = [f"{metric} ({'composite' if composite else 'raw decode'}, n={settings['n']}, choice "
                 f"temperature {settings['choice_temperature']:g}, "
                 f"{'sampled' if settings['sample'] else 'argmax'} tokens, seed {settings['seed']}"
                 + (f", stopped at t* = {settings['sweet_spot']}" if settings.get("sweet_spot") else "") + ")",
                 f"{'schedule':>10} {'T':>3} | " + " ".join(f"t={t:<5d}" for t in range(1, width + 1))]
        for schedule in self.settings["schedules"]:
            for total in total_iters:
                values = [self.select(method="maskgit", schedule=schedule, T=total, t=t,
                                      metric=metric, composite=composite) for t in range(1, total + 1)]
                cells = " ".join(f"{rows[0]['value']:<7.3f}" for rows in values if rows)
                lines.append(f"{schedule:>10} {total:>3} | {cells}")
        for method in (*BASELINES, "real_vs_real"):
            rows = [row for row in self.select(method=method, metric=metric)
                    if row["composite"] in (composite, None) or method in PIXEL_BASELINES]
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
        self.kept: dict = {}

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
        """The rows of the set ``key``; its per-image scores move to ``kept`` under
        (method, schedule, T, t, composite)."""
        out = []
        kept = self.kept.setdefault(tuple(columns[name] for name in ("method", "schedule", "T", "t", "composite")), {})
        for extractor in self.extractors:
            features = kept[extractor.metric] = np.concatenate(self.features[key][extractor.metric])
            stats = FeatureStats.from_features(features)
            out.append(dict(columns, metric=extractor.metric,
                            value=frechet_distance(stats, references[extractor.metric]),
                            n=stats.n, extractor=extractor.name,
                            extractor_hash=extractor.checkpoint_hash))
        for name, parts in self.per_image[key].items():
            values = kept[name] = np.concatenate(parts)
            # Images with no hole (NaN) or a hole reproduced exactly (PSNR inf) would swamp
            # the mean; they are left out of it, and the n column still counts them.
            finite = values[np.isfinite(values)]
            out.append(dict(columns, metric=name, value=float(finite.mean()) if finite.size else math.nan,
                            n=int(values.size), extractor="", extractor_hash=""))
        del self.features[key], self.per_image[key]
        return out


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep decodes: every schedule x T, each stopped after t* = min(sweet_spot, T)
    iterations (the rows stop there: the student report's T = 19 with t* = 2 costs 2 iterations),
    scored as raw decodes and / or composites, with the decoding's choice temperature (None:
    the config's) and sampling; with the ``baselines`` (T = 1 is then one shot, scored once).
    Each (schedule, T) uses a generator seeded with ``seed``, consumed ``chunk_size`` images at
    a time, so a sweep is reproducible for a given chunk size."""
    schedules: tuple = ("linear", "cosine", "square")
    total_iters: tuple = (2, 4, 8, 12)
    sweet_spot: int | None = None
    composites: tuple = (False, True)
    choice_temperature: float | None = None
    sample: bool = False
    baselines: bool = True
    seed: int = 0
    chunk_size: int = 64


@torch.no_grad()
def sweep(maskgit, images, pixel_masks, plan: SweepPlan | None = None,
          extractors: list[Extractor] | None = None, catnet=None, floor_images=None,
          progress: bool = True) -> SweepResult:
    """Score inpainting over the ``plan``'s schedules x T x t plus baselines.

    maskgit: a trained ``MaskGit``; images: ground truth (n, 3, S, S) in [0, 1] or uint8
    (n, S, S, 3); pixel_masks: (n, S, S) or (n, 1, S, S) bool, True = missing.
    extractors: Fréchet-distance extractors (``labkit.eval.features.Extractor``; see
    ``default_extractors``); catnet: adds attribute agreement per image when given.
    floor_images: an independent draw of real images (same n) for the real-vs-real yardstick.
    """
    from ..lab.progress import tqdm

    plan = plan or SweepPlan()
    start = time.perf_counter()
    extractors = list(extractors or [])
    originals = to_float_images(images).float().cpu()
    masks = as_pixel_mask(pixel_masks).cpu()
    n = originals.shape[0]
    if masks.shape[0] != n:
        raise ValueError(f"{masks.shape[0]} masks for {n} images: give one mask per image")
    total_iters = sorted({int(total) for total in plan.total_iters if int(total) > 1 or not plan.baselines})
    check_field("sweet_spot", plan.sweet_spot)
    stops = {total: min(total, plan.sweet_spot or total) for total in total_iters}
    composites = plan.composites
    scored_sets = (len(plan.schedules) * sum(stops.values()) * len(composites)
                   + (3 * len(composites) + 2) * plan.baselines)
    for extractor in extractors:
        if extractor.name.startswith("inception") and extractor.device.type == "cpu":
            warnings.warn(f"{extractor.metric} on the CPU: Inception reads about 2 images/s here, and "
                          f"this sweep scores {scored_sets} sets of {n} images (about "
                          f"{scored_sets * n / 2 / 3600:.1f} h). Use a GPU, fewer settings, or "
                          "FD_catnet alone for the sweep and FID for the best settings.", stacklevel=2)
    reference_features = {ex.metric: ex.features(originals) for ex in extractors}
    references = {metric: FeatureStats.from_features(features) for metric, features in reference_features.items()}
    gt_attributes = catnet.predict(originals) if catnet is not None else None
    scores = _Scores(extractors, originals, masks, catnet, gt_attributes)
    one_shot = maskgit.decode_settings(total_iter=1, choice_temperature=plan.choice_temperature,
                                       sample=plan.sample)
    decode = dict(choice_temperature=one_shot.choice_temperature, sample=plan.sample)
    batches = dict(batch_size=plan.chunk_size)
    rows = []

    if plan.baselines:
        generator = torch.Generator().manual_seed(plan.seed)
        chunks = inpaint_and_score(maskgit, originals, masks, one_shot, generator, **batches)
        for scored in tqdm(chunks, desc="baselines", total=math.ceil(n / plan.chunk_size),
                           disable=not progress):
            index = scored.index
            for composite in composites:
                scores.add(("one_shot", composite), scored.rows["maskgit" if composite else "maskgit_raw"],
                           index)
                for method in ("vqgan_masked", "tokenizer_ceiling"):   # pasted back, or not
                    raw = scored.rows[method]
                    scores.add((method, composite), paste_known(raw, originals[index], masks[index])
                               if composite else raw, index)
            for method in PIXEL_BASELINES:                      # the known pixels are the truth's
                scores.add((method, True), scored.rows[method], index)
        for composite in composites:
            rows += scores.rows(("one_shot", composite), references, method="one_shot", schedule=None,
                                T=1, t=1, composite=composite, **decode)
            for method in ("vqgan_masked", "tokenizer_ceiling"):
                rows += scores.rows((method, composite), references, method=method, schedule=None,
                                    T=None, t=None, composite=composite)
        for method in PIXEL_BASELINES:
            rows += scores.rows((method, True), references, method=method, schedule=None,
                                T=None, t=None, composite=True)

    runs = [(schedule, total) for schedule in plan.schedules for total in total_iters]
    for schedule, total in tqdm(runs, desc="sweep", disable=not progress):
        settings = maskgit.decode_settings(schedule, total, one_shot.choice_temperature, stops[total],
                                           plan.sample)
        generator = torch.Generator().manual_seed(plan.seed)
        for scored in inpaint_and_score(maskgit, originals, masks, settings, generator,
                                        baselines=False, **batches):
            for composite in composites:
                steps = scored.result.steps(composite).cpu()               # (t*, B, 3, H, W)
                for t in range(1, stops[total] + 1):
                    scores.add((schedule, total, t, composite), steps[t - 1], scored.index)
        for t in range(1, stops[total] + 1):
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
    settings = dict(schedules=list(plan.schedules), total_iters=total_iters, n=n, seed=plan.seed,
                    composites=list(composites), choice_temperature=one_shot.choice_temperature,
                    sample=plan.sample, sweet_spot=plan.sweet_spot,
                    metrics=[ex.metric for ex in extractors] + ["hole_l1"])
    return SweepResult(rows, time.perf_counter() - start, settings, scores.kept, reference_features)


def default_extractors(cfg, run_dir=None, device=None, weights=None, progress: bool = True,
                       data=None):
    """The extractors a sweep should report: FD_catnet always (trained once into
    ``<run_dir>/catnet.safetensors``, default ``<runs root>/<profile>``, on the toy cats cached under
    ``data`` (default ``labkit.lab.utils.data_root()``) if missing), plus FID when the Inception weights are on this machine (or
    ``weights`` names them). Returns (extractors, catnet)."""
    from .catnet import catnet_extractor, load_or_train_catnet
    from .fid import find_inception_weights, inception_extractor

    catnet = load_or_train_catnet(cfg, run_dir, device, progress, data)
    extractors = [catnet_extractor(catnet, device)]
    if weights is not None or find_inception_weights() is not None:
        extractors.append(inception_extractor(weights, device))
    return extractors, catnet


__all__ = ["COLUMNS", "SweepPlan", "SweepResult", "sweep", "difference", "default_extractors",
           "higher_is_better", "is_frechet"]
