"""The Fréchet distance of the core (labkit/core/frechet.py), checked against pytorch-fid's and
against its own batched form: the number behind every FID and FD_catnet of the lab."""

import warnings

import numpy as np
import pytest
from pytorch_fid.fid_score import calculate_frechet_distance

from labkit.core.frechet import (FeatureStats, SmallSampleWarning, frechet_distance,
                                 frechet_distance_batched)


def pytorch_fid(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = FeatureStats.from_features(a), FeatureStats.from_features(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # SciPy's notices about sqrtm
        return float(calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma))


@pytest.mark.parametrize("n, dim", [(400, 16), (300, 64), (2000, 128)])
def test_equals_pytorch_fid_on_full_rank_covariances(n, dim):
    rng = np.random.default_rng(dim)
    mixing = rng.normal(size=(dim, dim))
    a = rng.normal(size=(n, dim)) @ mixing
    b = rng.normal(0.3, 1.2, size=(n + 17, dim)) @ mixing + 0.5
    assert frechet_distance(a, b) == pytest.approx(pytorch_fid(a, b), rel=1e-9)


def test_equals_pytorch_fid_on_rank_deficient_covariances():
    """Fewer samples than features (747 test images vs 2048 Inception features, in the course)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 64)), rng.normal(0.2, 1.1, size=(50, 64))
    with pytest.warns(SmallSampleWarning):
        ours = frechet_distance(a, b)
    assert ours == pytest.approx(pytorch_fid(a, b), rel=1e-6)


def test_the_formula_term_by_term():
    """FD = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)), on diagonal Gaussians
    where every term is known: variances 4 and 9 give 4 + 9 - 2 * 6 = 1 per feature."""
    mu_a, mu_b = np.zeros(3), np.array([1.0, 2.0, 2.0])          # mean term 9
    a = FeatureStats(mu_a, np.diag([4.0, 4.0, 4.0]), 100)
    b = FeatureStats(mu_b, np.diag([9.0, 9.0, 9.0]), 100)
    assert frechet_distance(a, b) == pytest.approx(9 + 3 * 1, rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-12)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-12)


def test_the_batched_form_gives_the_same_number():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 6))
    b = rng.normal(1.0, 2.0, size=(60, 6))
    a[:, 2] = 0.0                                   # a dead feature: a singular covariance
    assert float(frechet_distance_batched(a, b)) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    few = rng.normal(size=(5, 6))                   # fewer images than features
    with pytest.warns(SmallSampleWarning):
        assert float(frechet_distance_batched(few, b)) == pytest.approx(frechet_distance(few, b), rel=1e-6)
    batch = frechet_distance_batched(np.stack([a[:60], b]), np.stack([b, a[:60]]))     # (2,)
    assert batch.shape == (2,)
    assert float(batch[0]) == pytest.approx(float(frechet_distance_batched(a[:60], b)), rel=1e-12)
    assert float(batch[1]) == pytest.approx(float(batch[0]), rel=1e-9)   # symmetric


def test_sets_of_different_extractors_are_refused():
    with pytest.raises(ValueError, match="same extractor"):
        frechet_distance(np.zeros((3, 4)) + np.arange(3)[:, None], np.ones((3, 5)) + np.arange(3)[:, None])
