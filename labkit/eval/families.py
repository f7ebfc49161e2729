"""Inpainting beyond the course's strokes: every hole family, scored where pixels mislead.

    study = family_study(maskgit, test, ("strokes", "eyes", "mouth"), extractors, catnet)
    print(study.table())                 # FD_catnet, hole L1, the hidden part's attributes
    for line in study.verdict_lines():   # MaskGIT vs the smooth fill, iterative vs one shot...
        print(line)

Each family gives every test cat one hole (``labkit.data.holes.family_masks``: the parts placed
by each cat's own labels), and one sweep (``labkit.eval.sweep``) decodes them with the
settings' schedule and T beside the baselines, once with argmax tokens and once sampled: the
same images, holes and generator for every method, so every difference is paired over images.

``HIDDEN``: per family, the attributes whose evidence lies in the hole and that the visible
part cannot give away, read by CatNet on the completion against its reading of the truth. A
blurred blob has no pupil and no mouth, so it cannot pass for one. Both eyes share their pupil
and their closed/open state, and both ears their size and angle: a box over one eye or one ear
hides none of them, so those families have no hidden attribute here. ``unrelated``: the
agreement of two different real cats (each cat's reading against the next one's), what a
plausible completion that ignores the visible face would score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..core.masks import pixel_to_token_mask
from ..data.holes import FAMILIES, family_masks
from ..data.toycats import ATTRIBUTES
from .sweep import SweepPlan, SweepResult, difference, higher_is_better, sweep
from .verdicts import Estimate, verdict_sentence

HIDDEN = {"eyes": ("eye_colour", "pupil", "eyes_closed"), "mouth": ("mouth",),
          "ears": ("ear_size", "ear_angle")}
METHODS = {"smooth_fill": "smooth fill (no learning)", "one_shot": "MaskGIT, one shot",
           "argmax": "MaskGIT, iterative, argmax", "sampled": "MaskGIT, iterative, sampled"}


def family_holes(test, family: str, seed: int = 0) -> torch.Tensor:
    """(n, S, S) bool: a hole of ``family`` for every cat of the ImageSet ``test``; the strokes
    are the test set's own fixed masks (the course's), when it has them."""
    if family == "strokes" and test.masks is not None:
        return torch.from_numpy(np.ascontiguousarray(test.masks))
    return torch.from_numpy(family_masks(family, test.labels, seed, test.size))


def hidden_metrics(family: str) -> list[str]:
    """The sweep's metric names of the family's hidden attributes (agree_... or abserr_...)."""
    return [("agree_" if ATTRIBUTES[name][0] == "categorical" else "abserr_") + name
            for name in HIDDEN.get(family, ())]


@dataclass
class FamilyResult:
    """One family's two sweeps: ``argmax`` (with the baselines) and ``sampled``; the share of
    the image's pixels and tokens in the hole."""
    family: str
    argmax: SweepResult
    sampled: SweepResult
    pixel_share: float
    token_share: float

    def where(self, method: str) -> tuple[SweepResult, dict]:
        """The sweep and the ``scores`` keywords of ``method``."""
        if method in ("smooth_fill", "one_shot"):
            return self.argmax, {"method": method}
        run = self.argmax if method == "argmax" else self.sampled
        settings = run.settings
        total = settings["total_iters"][0]
        return run, {"schedule": settings["schedules"][0], "T": total, "t": total}

    def value(self, method: str, metric: str) -> float:
        run, where = self.where(method)
        return run.value(metric=metric, composite=True, **{"method": "maskgit", **where})

    def scores(self, method: str, metric: str) -> np.ndarray:
        run, where = self.where(method)
        return run.scores(metric, composite=True, **where)


@dataclass
class FamilyStudy:
    """The family results of one model, the decoding they used, and the unrelated-cat yardstick."""
    results: dict[str, FamilyResult]
    settings: dict
    unrelated: dict

    def difference(self, family: str, metric: str, a: str, b: str, n_boot: int = 200) -> Estimate:
        """metric(a) - metric(b), methods of ``METHODS`` on the family's images, paired."""
        result = self.results[family]
        reference = result.argmax.references.get(metric)
        return difference(result.scores(a, metric), result.scores(b, metric), reference, n_boot,
                          self.settings["seed"])

    def table(self, metric: str = "FD_catnet") -> str:
        """One line per family: ``metric`` and the hole L1 of every method, then the hidden
        attributes (agreement, higher is better; abserr, lower is better) and the yardstick."""
        lines = [f"{'family':>10} {'hole':>5} | " + " | ".join(f"{name:>14}" for name in METHODS)]
        for family, result in self.results.items():
            for shown in (metric, "hole_l1", *hidden_metrics(family)):
                cells = " | ".join(f"{result.value(method, shown):>14.4g}" for method in METHODS)
                extra = f"   unrelated cat {self.unrelated[shown]:.3g}" if shown in self.unrelated else ""
                label = f"{family:>10} {result.token_share:>5.0%}" if shown == metric else f"{'':>10} {'':>5}"
                lines.append(f"{label} | {cells}   {shown}{extra}")
        return "\n".join(lines)

    def verdicts(self, family: str, metric: str = "FD_catnet") -> list[tuple[str, Estimate, int]]:
        """(claim, estimate of the difference, the sign the claim predicts) for the family:
        MaskGIT (iterative, sampled) against the smooth fill in ``metric`` and in each hidden
        attribute, iterative sampled against one shot, sampled against argmax."""
        out = []
        lower = not higher_is_better(metric)
        sign = 1 if lower else -1
        out.append((f"{family}: MaskGIT beats the smooth fill ({metric} fill - MaskGIT)",
                    self.difference(family, metric, "smooth_fill", "sampled"), sign))
        for hidden in hidden_metrics(family):
            better_high = higher_is_better(hidden)
            a, b = ("sampled", "smooth_fill") if better_high else ("smooth_fill", "sampled")
            out.append((f"{family}: MaskGIT restores the hidden {hidden[hidden.index('_') + 1:]} better "
                        f"than the fill ({hidden} {a} - {b})", self.difference(family, hidden, a, b), 1))
        out.append((f"{family}: iterative sampled decoding beats one shot ({metric} one shot - iterative)",
                    self.difference(family, metric, "one_shot", "sampled"), sign))
        out.append((f"{family}: sampled tokens beat argmax tokens ({metric} argmax - sampled)",
                    self.difference(family, metric, "argmax", "sampled"), sign))
        return out

    def verdict_lines(self, metric: str = "FD_catnet") -> list[str]:
        return [verdict_sentence(claim, estimate, expected)
                for family in self.results for claim, estimate, expected in self.verdicts(family, metric)]


@torch.no_grad()
def family_study(maskgit, test, families=FAMILIES[:-1], extractors=(), catnet=None,
                 n: int | None = None, seed: int = 0, progress: bool = True) -> FamilyStudy:
    """Inpaint the first ``n`` cats of ``test`` (an ImageSet of toy cats with labels) in a hole
    of each family and score them (``FamilyStudy``); the decoding is the config's schedule and
    T with its choice temperature, argmax and sampled. "everything" is generation, scored by
    ``labkit.eval.generation`` instead."""
    if "everything" in families:
        raise ValueError("'everything' is generation: score it with labkit.eval.generation")
    start = time.perf_counter()
    n = min(n or len(test), len(test))
    test = test.subset(range(n))
    settings = maskgit.decode_settings()
    plan = SweepPlan(schedules=(settings.gamma,), total_iters=(settings.total_iter,), composites=(True,),
                     choice_temperature=settings.choice_temperature, seed=seed)
    sampled_plan = SweepPlan(**{**plan.__dict__, "sample": True, "baselines": False})
    images = test.tensors()
    results = {}
    for family in families:
        masks = family_holes(test, family, seed)
        argmax = sweep(maskgit, images, masks, plan, extractors, catnet, progress=progress)
        sampled = sweep(maskgit, images, masks, sampled_plan, extractors, catnet, progress=progress)
        token_share = float(pixel_to_token_mask(masks, maskgit.config.downsample).float().mean())
        results[family] = FamilyResult(family, argmax, sampled, float(masks.float().mean()), token_share)
    unrelated = {}
    if catnet is not None:
        truth = catnet.predict(images)
        for name, (kind, _) in ATTRIBUTES.items():
            other = np.roll(truth[name], 1)
            key = ("agree_" if kind == "categorical" else "abserr_") + name
            unrelated[key] = float(np.mean(truth[name] == other) if kind == "categorical"
                                   else np.mean(np.abs(truth[name] - other)))
    return FamilyStudy(results, {**settings.to_dict(), "n": n, "seed": seed,
                                 "seconds": time.perf_counter() - start}, unrelated)


@torch.no_grad()
def completions(maskgit, images: torch.Tensor, pixel_masks: torch.Tensor, k: int = 4, seed: int = 0,
                settings=None) -> torch.Tensor:
    """(k, B, 3, H, W): ``k`` sampled completions (composites) of each image's hole, one
    generator seeded with ``seed`` drawn on (settings: default the config's, sampled tokens)."""
    settings = settings or maskgit.decode_settings(sample=True)
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([maskgit.inpaint(images, pixel_masks, settings, generator, decode_every_step=False)
                        .images.cpu() for _ in range(k)])


def spread(catnet, samples: torch.Tensor, attributes) -> dict:
    """{attribute: mean over the holes of the number of distinct values CatNet reads in the k
    completions of one hole} (1: every completion alike; k: all different), categorical only."""
    k, batch = samples.shape[:2]
    readings = catnet.predict(samples.flatten(0, 1))
    return {name: float(np.mean([len(set(readings[name].reshape(k, batch)[:, i])) for i in range(batch)]))
            for name in attributes if ATTRIBUTES[name][0] == "categorical"}


__all__ = ["HIDDEN", "METHODS", "family_holes", "hidden_metrics", "FamilyResult", "FamilyStudy", "family_study", "completions",
           "spread"]
