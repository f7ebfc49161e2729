"""Comparing two training choices over several training seeds: notebook 03's measurements.

    run_cfg = with_budget(cfg, steps).replace(loss="full", seed=1)   # a short, equal budget
    maskgit, history = train_mvtm(run_cfg, vqgan, tokens, out, RunOptions(name=mvtm_name(run_cfg)))
    scores = score_inpainting(maskgit, images, pixel_masks, extractor, reference_features)
    scores.mean("hole_l1"), scores.fd[-1]                            # at t = T

    buggy, history = train_mvtm(..., maskgit_class=LossOnVisibleTokens)   # a hypothesis, trained
                                                                          # like every other run

Two noise estimates answer two different questions (``labkit.eval.verdicts`` computes both):

- **across training seeds** (``across_seeds`` on one difference per seed): how much a
  difference moves when both trainings are repeated with other initial weights, batches and
  training masks (scored on the same test images). This is the noise of a claim about a
  training choice;
- **over test images** (``paired_difference``, or ``bootstrap_difference`` for a Fréchet
  distance, for one pair of trained models): how much it moves with the choice of test
  images, for these two models only. It knows nothing of the training's randomness; with one
  run per arm it is the only estimate there is, and it can be much too small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import LabConfig
from ..core.frechet import FeatureStats, frechet_distance
from ..core.maskgit import DecodeSettings, MaskGit
from ..eval.features import Extractor
from ..eval.scoring import inpaint_and_score, pixel_scores

# Stage-2 steps of each run of notebook 03, per profile: a fraction of the profile's own
# budget, so that three seeds per loss and a hypothesis run fit the notebook's time.
SHORT_STEPS = {"smoke": 30, "cpu": 80, "gpu": 4000}
# The rate's floor of a run shorter than the profile's: a short run ends better with some
# decay (at the cpu profile's flat rate one of six short runs diverged: benchmarks/README.md).
SHORT_RUN_FLOOR = 0.1


def with_budget(cfg: LabConfig, steps: int | None = None) -> LabConfig:
    """``cfg`` with ``steps`` stage-2 steps (None: ``SHORT_STEPS`` of its profile) and the
    warm-up scaled with them, the same share of the run as in the profile (at least 1 step);
    a budget shorter than the profile's decays the rate to ``SHORT_RUN_FLOOR`` of its peak at
    most."""
    steps = SHORT_STEPS[cfg.profile] if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps = {steps!r}: expected an integer >= 1 (stage-2 steps per run) or None "
                         "for the profile's short budget, e.g. papermill ... -p steps 80")
    if steps == cfg.mvtm_steps:
        return cfg
    warmup = max(1, round(cfg.warmup_steps * steps / cfg.mvtm_steps))
    floor = min(cfg.mvtm_lr_floor, SHORT_RUN_FLOOR) if steps < cfg.mvtm_steps else cfg.mvtm_lr_floor
    return cfg.replace(mvtm_steps=steps, warmup_steps=warmup, mvtm_lr_floor=floor)


# ----------------------------------------------------------------------------- the hypothesis

class LossOnVisibleTokens(MaskGit):
    """A hypothesis for the student report's masked-loss model that "did not train": the
    masked-only loss averaged over the wrong tokens, the visible ones (the mask's meaning
    mixed up: True read as "kept" instead of "hidden"). Copying a visible id is easy, so this
    loss falls fast, while no step ever asks for a hidden token."""

    def loss(self, logits, z_indices, mask, variant=None, label_smoothing=None):
        return super().loss(logits, z_indices, ~mask, variant, label_smoothing)   # BUG: ~mask


# ----------------------------------------------------------------------------- scoring

@dataclass
class InpaintingScores:
    """One model's inpainting of n test images, scored after every iteration t = 1..T.

    hole_l1, hole_psnr: (T, n) per image, composite (known pixels pasted back; NaN: no hole);
    fd: (T,) the Fréchet distance ``metric`` of the n images to the ground truth;
    features: (n, D) the extractor's features of the images at t = T;
    shown: (T, k, 3, S, S) the first k inpainted images after every t, and shown_input:
    (k, 3, S, S) their masked inputs, to look at.
    """
    hole_l1: np.ndarray
    hole_psnr: np.ndarray
    fd: np.ndarray
    features: np.ndarray
    metric: str
    shown: torch.Tensor
    shown_input: torch.Tensor

    def per_image(self, metric: str, t: int | None = None) -> np.ndarray:
        """(n,) the per-image ``metric`` ("hole_l1" or "hole_psnr") after iteration t (default T)."""
        values = getattr(self, metric)
        return values[(t or len(values)) - 1]

    def mean(self, metric: str, t: int | None = None) -> float:
        """The mean over images of ``metric`` after iteration t (default T): a per-image
        metric, or ``self.metric`` (the Fréchet distance of the set). Images without a hole
        (NaN) or with the hole reproduced exactly (PSNR inf) are left out, as in labkit.eval.sweep."""
        if metric == self.metric:
            return float(self.fd[(t or len(self.fd)) - 1])
        values = self.per_image(metric, t)
        return float(values[np.isfinite(values)].mean())


N_SHOWN = 8   # inpainted images kept to look at


@torch.no_grad()
def score_inpainting(maskgit: MaskGit, images: torch.Tensor, pixel_masks: torch.Tensor,
                     extractor: Extractor, reference_features: np.ndarray,
                     settings: DecodeSettings | None = None, seed: int = 0,
                     batch_size: int = 128) -> InpaintingScores:
    """Inpaint ``images`` (n, 3, S, S) in [0, 1] in their holes ``pixel_masks`` (True = missing)
    with one decoding of T iterations (``settings``, None: the config's; a CPU generator seeded
    with ``seed``, so every model meets the same noise) and score the image after every t.

    reference_features: (n, D) the extractor's features of the ground truth, the same images.
    """
    generator = torch.Generator().manual_seed(seed)
    l1, psnr, features, shown, shown_input = [], [], [], None, None
    for scored in inpaint_and_score(maskgit, images, pixel_masks, settings, generator, baselines=False,
                                    batch_size=batch_size):
        steps = scored.result.steps(True).float().cpu()                # (T, B, 3, S, S)
        per_step = [pixel_scores(step, scored.truth, scored.pixel_masks) for step in steps]
        l1.append(torch.stack([s["hole_l1"] for s in per_step]).numpy())
        psnr.append(torch.stack([s["hole_psnr"] for s in per_step]).numpy())
        features.append(np.stack([extractor.features(step) for step in steps]))   # (T, B, D)
        if shown is None:
            shown, shown_input = steps[:, :N_SHOWN], scored.result.masked_input[:N_SHOWN].cpu()
    features = np.concatenate(features, axis=1)
    reference = FeatureStats.from_features(reference_features)
    fd = np.array([frechet_distance(FeatureStats.from_features(at_t), reference) for at_t in features])
    return InpaintingScores(np.concatenate(l1, axis=1), np.concatenate(psnr, axis=1), fd,
                            features[-1], extractor.metric, shown, shown_input)


def spread_over_iterations(values: np.ndarray) -> np.ndarray:
    """(T, n) per-image scores after every iteration -> (n,) max - min over t, per image: how
    much decoding changes each image between its first and its last iteration. 0 for a model
    whose prediction does not depend on what earlier iterations revealed."""
    values = np.asarray(values, dtype=np.float64)
    return values.max(axis=0) - values.min(axis=0)


def chance_accuracy(train_tokens: torch.Tensor, tokens: torch.Tensor) -> float:
    """The accuracy on ``tokens`` (n, N) of always guessing the most frequent id of
    ``train_tokens``: what a model scores that learnt nothing about the hidden tokens."""
    most_frequent = torch.bincount(train_tokens.flatten()).argmax()
    return float((tokens == most_frequent).float().mean())


__all__ = ["SHORT_STEPS", "SHORT_RUN_FLOOR", "with_budget", "LossOnVisibleTokens", "InpaintingScores",
           "score_inpainting", "spread_over_iterations", "chance_accuracy"]
