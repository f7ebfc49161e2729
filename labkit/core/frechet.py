"""The Fréchet distance between two sets of features, written out.

Fit a Gaussian to each set (mean mu, covariance S) and compare the two Gaussians:

    FD = ||mu_a - mu_b||^2  +  Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))
         `-- mean term --'     `---------------- trace term ----------------'

FID is this distance on the Inception features of ``labkit.eval.fid``; FD_catnet on CatNet's.
Tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of S_a S_b, which are the
eigenvalues of the symmetric matrix S_a^(1/2) S_b S_a^(1/2) (all >= 0), so no general matrix
square root is needed. ``frechet_distance_batched`` computes the same from the features
themselves, for many pairs of sets at once (the bootstraps of ``labkit.eval.sweep``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


class SmallSampleWarning(UserWarning):
    """Fewer samples than feature dimensions: the covariance is rank-deficient."""


@dataclass(frozen=True)
class FeatureStats:
    """The Gaussian of a feature set: mu (D,), sigma (D, D), both float64, from n samples."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features) -> "FeatureStats":
        """features: (n, D) -> mean and covariance (n - 1 in the denominator) in float64."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"features must be (n, D), got shape {features.shape}")
        n, dim = features.shape
        if n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {n}: score more images")
        if n <= dim:
            warnings.warn(
                f"Fréchet distance from n={n} samples of {dim}-d features: the covariance has "
                f"rank at most n-1={n - 1} < {dim}, so it is a noisy, rank-deficient estimate and "
                "the distance is biased upward (two independent draws of real images already "
                "score well above 0). Compare numbers only at the same n, next to the "
                "real-vs-real floor at that n (the course's 747 test images vs 2048 "
                "Inception features is such a case).", SmallSampleWarning, stacklevel=2)
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), n)


def frechet_distance(a, b) -> float:
    """Fréchet distance between two feature sets, each (n, D) features or ``FeatureStats``."""
    a = a if isinstance(a, FeatureStats) else FeatureStats.from_features(a)
    b = b if isinstance(b, FeatureStats) else FeatureStats.from_features(b)
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"features of different sizes ({a.mu.shape[0]} vs {b.mu.shape[0]}): "
                         "both sets must come from the same extractor")
    mean_term = np.sum((a.mu - b.mu) ** 2)
    values, vectors = np.linalg.eigh(a.sigma)                      # S_a = V diag(values) V^T
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T   # S_a^(1/2)
    cross = np.linalg.eigvalsh(root_a @ b.sigma @ root_a)          # eigenvalues of S_a S_b
    trace_term = np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.sqrt(cross.clip(min=0)).sum()
    return float(mean_term + trace_term)


def frechet_distance_batched(x, y) -> torch.Tensor:
    """Fréchet distance between feature sets x (..., n, D) and y (..., m, D), batched over the
    leading dimensions, in float64: (...,). The same number as ``frechet_distance``, from the
    features themselves.

    With Xc, Yc the centred features, Tr((S_x S_y)^(1/2)) is the sum of the singular values of
    Xc^T Yc / sqrt((n-1)(m-1)), which are those of R_x R_y^T (R from the QR of Xc and of Yc,
    at most D x D): exact for rank-deficient covariances too, and cheap when n << D.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    n, m = x.shape[-2], y.shape[-2]
    mu_x, mu_y = x.mean(-2), y.mean(-2)
    x, y = x - mu_x[..., None, :], y - mu_y[..., None, :]
    r_x, r_y = torch.linalg.qr(x, mode="r").R, torch.linalg.qr(y, mode="r").R
    cross = torch.linalg.svdvals(r_x @ r_y.mT).sum(-1) / math.sqrt((n - 1) * (m - 1))
    traces = (x ** 2).sum((-2, -1)) / (n - 1) + (y ** 2).sum((-2, -1)) / (m - 1)
    return ((mu_x - mu_y) ** 2).sum(-1) + traces - 2 * cross


__all__ = ["SmallSampleWarning", "FeatureStats", "frechet_distance", "frechet_distance_batched"]
