"""Noise estimates and verdicts: does a measured difference support a claim?

    d = paired_difference(hole_l1_linear, hole_l1_cosine)          # per-image pairs -> Estimate
    d = bootstrap_difference(fd, feats_a, feats_b, reference)       # a statistic over images
    d = across_seeds([run_a - run_b for each training seed])        # one number per seed
    print(verdict_sentence("cosine beats linear (hole L1 linear - cosine)", d, expected=+1))

Every verdict is one of three words, computed from the numbers:

- ``agrees``        the difference has the sign the claim predicts and exceeds its noise;
- ``contradicts``   it has the other sign and exceeds its noise;
- ``within noise``  ``|difference| <= critical * SE``: no winner is declared.

``critical`` is Student's t at 95 % (two-sided) for n - 1 degrees of freedom: 4.30 for three
training seeds, 1.97 for 256 images. The printed sentence quotes the difference, its standard
error and n, so a reader (and tests/test_verdicts.py, on every executed notebook) can recompute
the verdict from the sentence alone with ``parse_verdict``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy import stats

VERDICTS = ("agrees", "contradicts", "within noise")


@dataclass(frozen=True)
class Estimate:
    """A measured difference: its value, standard error and the number of items behind it."""
    value: float
    se: float
    n: int
    how: str = "paired SE"     # how the noise was estimated, quoted in the sentence

    @property
    def threshold(self) -> float:
        """The size a difference needs to count: critical(n) * SE."""
        return critical(self.n) * self.se

    @property
    def significant(self) -> bool:
        return abs(self.value) > self.threshold


def critical(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n items (n - 1 degrees of freedom)."""
    if n < 2:
        return math.inf        # one item carries no noise estimate: nothing is significant
    return float(stats.t.ppf(0.975, n - 1))


def _array(x) -> np.ndarray:
    """Scores as a flat float64 array, from NumPy, a list or a torch tensor."""
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64).ravel()


def _values(x) -> np.ndarray:
    array = _array(x)
    if not np.isfinite(array).all():
        raise ValueError("the values contain NaN or inf: a difference of them has no meaning")
    return array


def finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a_i, b_i) where both are finite: per-image scores of two models, without
    the images that have no hole (NaN) or a hole reproduced exactly (PSNR inf) in either."""
    a, b = _array(a), _array(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same items: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def paired_difference(a, b, how: str = "paired SE over images") -> Estimate:
    """mean(a - b) and its standard error, for per-item scores of the same items (images,
    grids, seeds) under two settings: a (n,), b (n,)."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same items: {a.shape} vs {b.shape}")
    diff = a - b
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    return Estimate(float(diff.mean()), se, len(diff), how)


def across_seeds(differences, how: str = "SE over training seeds") -> Estimate:
    """One difference per training seed (n,) -> their mean and standard error."""
    diff = _values(differences)
    return paired_difference(diff, np.zeros_like(diff), how)


def bootstrap_difference(statistic, a, b, *shared, n_boot: int = 200, seed: int = 0,
                         how: str = "bootstrap over images") -> Estimate:
    """statistic(a, *shared) - statistic(b, *shared) and its bootstrap standard error.

    a, b: (n, ...) per-image arrays of the same n images under two settings (e.g. features);
    each resample draws the same image indices for a, b and every ``shared`` array of n rows,
    so the pairing is kept. For statistics that are not means, such as a Frechet distance.
    """
    a, b = np.asarray(a), np.asarray(b)
    n = len(a)
    if len(b) != n or any(len(s) != n for s in shared):
        raise ValueError("bootstrap_difference needs the same number of images in every array")
    value = float(statistic(a, *shared) - statistic(b, *shared))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        picked = [s[index] for s in shared]
        draws.append(statistic(a[index], *picked) - statistic(b[index], *picked))
    # n for the threshold: the images; the bootstrap SE already is the noise of the statistic
    return Estimate(value, float(np.std(draws, ddof=1)), n, how)


def verdict(difference: Estimate, expected: int) -> str:
    """``expected``: +1 if the claim predicts a positive difference, -1 a negative one."""
    if expected not in (1, -1):
        raise ValueError(f"expected must be +1 or -1 (the sign the claim predicts), got {expected!r}")
    if not difference.significant:
        return "within noise"
    return "agrees" if math.copysign(1, difference.value) == expected else "contradicts"


def verdict_sentence(claim: str, difference: Estimate, expected: int, unit: str = "") -> str:
    """One line that states the claim, quotes the numbers and gives the computed verdict."""
    unit = f" {unit}" if unit else ""
    sign = ">" if expected > 0 else "<"
    return (f"{claim} (predicts d {sign} 0): difference {difference.value:+.4g}{unit} ± {difference.se:.3g} "
            f"({difference.how}, n={difference.n}; needs |d| > {difference.threshold:.3g}) "
            f"-> {verdict(difference, expected)}")


_SENTENCE = re.compile(
    r"\(predicts d (?P<sign>[<>]) 0\): difference (?P<value>[+-][0-9.e+-]+|[+-]?nan)(?: [^±]*)? ± (?P<se>[0-9.e+-]+|nan|inf) "
    r"\((?P<how>[^,]*), n=(?P<n>\d+); needs \|d\| > (?P<threshold>[0-9.e+-]+|nan|inf)\) "
    r"-> (?P<verdict>agrees|contradicts|within noise)")


def parse_verdict(line: str) -> dict | None:
    """The numbers and the verdict of a printed ``verdict_sentence`` (None if it holds none)."""
    found = _SENTENCE.search(line)
    if not found:
        return None
    return {"expected": 1 if found["sign"] == ">" else -1, "value": float(found["value"]), "se": float(found["se"]), "n": int(found["n"]),
            "threshold": float(found["threshold"]), "verdict": found["verdict"]}


def follows(parsed: dict) -> bool:
    """Whether a parsed verdict follows from its own quoted numbers (rounding allowed)."""
    expected = parsed["expected"]
    threshold = critical(parsed["n"]) * parsed["se"]
    margin = 1e-3 * max(abs(parsed["value"]), threshold, 1e-12)   # 4 printed digits
    if abs(abs(parsed["value"]) - threshold) <= margin:
        return True      # on the edge after rounding: either verdict is honest
    if abs(parsed["value"]) <= threshold:
        return parsed["verdict"] == "within noise"
    agrees = math.copysign(1, parsed["value"]) == expected
    return parsed["verdict"] == ("agrees" if agrees else "contradicts")
