"""Generation scored: cats drawn from an empty grid, against real cats and against what was asked.

    images = generate_images(maskgit, 256, settings, seed=0, conditions=val_conditions)
    scores = generation_scores(images, catnet, extractor, real_images, conditions, attributes)
    scores["FD_catnet"], scores["accuracy"]["fur_colour"], scores["diversity"]

- the Fréchet distance of the generated set to real cats (beside the real-vs-real yardstick of
  the same n, ``real_vs_real``);
- CatNet's accuracy on each requested attribute (its reading of the generated cat against the
  value asked for), to set beside its accuracy on real cats (``real_accuracy``) and chance;
- diversity: the entropy of CatNet's readings of each attribute over the set, as a share of the
  real cats' (1: as varied as real cats; 0: the same value every time), averaged.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.frechet import frechet_distance
from ..data.toycats import ATTRIBUTES
from .features import to_float_images

CATEGORICAL = tuple(name for name, (kind, _) in ATTRIBUTES.items() if kind == "categorical")


@torch.no_grad()
def generate_images(maskgit, count: int, settings=None, seed: int = 0, conditions=None,
                    batch_size: int = 64) -> torch.Tensor:
    """``count`` images (count, 3, S, S) on the CPU from ``maskgit.generate``, ``batch_size`` at a
    time, one generator seeded with ``seed``; ``conditions`` (count, A): one request per image."""
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for begin in range(0, count, batch_size):
        end = min(begin + batch_size, count)
        condition = None if conditions is None else conditions[begin:end]
        result = maskgit.generate(end - begin, settings, generator, condition, decode_every_step=False)
        parts.append(result.images.cpu())
    return torch.cat(parts)


def entropy(values: np.ndarray, classes: int) -> float:
    """Entropy (nats) of the distribution of the integer codes ``values``."""
    p = np.bincount(np.asarray(values, dtype=np.int64), minlength=classes) / max(len(values), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum()) + 0.0      # + 0.0: never -0.0


def diversity(readings: dict, real_readings: dict) -> dict:
    """{attribute: entropy of the readings / entropy of the real cats' readings} of each
    categorical attribute both sets hold (NaN where the real cats show a single value)."""
    out = {}
    for name in CATEGORICAL:
        if name in readings and name in real_readings:
            classes = len(ATTRIBUTES[name][1])
            real = entropy(real_readings[name], classes)
            out[name] = entropy(readings[name], classes) / real if real > 0 else float("nan")
    return out


def generation_scores(images, catnet, extractor, real_images, conditions=None,
                      attributes: tuple = ()) -> dict:
    """Scores of generated ``images`` (n, 3, S, S) against ``real_images`` (as many real cats).

    conditions: (n, A) the value ids asked for, of ``attributes`` (an attribute's number of
    values means not asked). Returns {"FD_catnet" (or the extractor's metric): distance,
    "accuracy": {attribute: CatNet's accuracy on the images that asked for it},
    "diversity": {attribute: entropy share}, "readings": CatNet's readings}.
    """
    images, real_images = to_float_images(images), to_float_images(real_images)
    readings = catnet.predict(images)
    out = {extractor.metric: frechet_distance(extractor.features(images), extractor.features(real_images)),
           "diversity": diversity(readings, catnet.predict(real_images)), "readings": readings,
           "accuracy": {}}
    if conditions is not None:
        conditions = np.asarray(torch.as_tensor(conditions).cpu())
        for k, name in enumerate(attributes):
            asked = conditions[:, k] < len(ATTRIBUTES[name][1])
            if asked.any():
                out["accuracy"][name] = float((readings[name][asked] == conditions[asked, k]).mean())
    return out


def chance(labels: dict, name: str) -> float:
    """The accuracy of always answering an attribute's most common value among ``labels``."""
    values = np.asarray(labels[name])
    return float(np.bincount(values).max() / len(values))


__all__ = ["generate_images", "entropy", "diversity", "generation_scores", "chance", "CATEGORICAL"]
