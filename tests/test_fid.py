"""Fréchet distance, FID's Inception path and the offline behaviour of labkit.fid.

No test here has the real Inception weights. The loading path is exercised on a file of
the right architecture with random weights, saved where pytorch-fid looks for its cache;
its numbers are not FID, and the tests check that labkit never calls them FID.
"""

import shutil
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance

from labkit import fid


def _no_network(monkeypatch):
    """Make any attempt to download fail loudly instead of hanging or succeeding."""
    def refuse(*args, **kwargs):
        raise AssertionError("labkit.fid tried to use the network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A random-weight file of the FID Inception architecture, under its real file name."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    # torch.save is pytorch-fid's own format for this file; it is loaded with weights_only=True.
    torch.save(fid.fid_inception_network().state_dict(), folder / fid.FID_WEIGHTS_FILENAME)
    return torch_home


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty TORCH_HOME, no weights variable, no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    _no_network(monkeypatch)
    return tmp_path / "empty_torch_home"


# ------------------------------------------------------------------ the distance itself
def test_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(400, 16))
    assert fid.frechet_distance(features, features) == pytest.approx(0, abs=1e-8)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_matches_pytorch_fid_on_the_same_statistics():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 24))
    b = rng.normal(size=(250, 24)) * 1.5 + 0.3
    stats_a = fid.FeatureStats.from_features(a)
    # pytorch-fid's calculate_activation_statistics: np.mean and np.cov(rowvar=False)
    np.testing.assert_array_equal(stats_a.mu, np.mean(a, axis=0))
    np.testing.assert_array_equal(stats_a.sigma, np.cov(a, rowvar=False))
    expected = calculate_frechet_distance(np.mean(a, 0), np.cov(a, rowvar=False),
                                          np.mean(b, 0), np.cov(b, rowvar=False))
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)


def test_distance_of_known_gaussians():
    # N(0, I) vs N(m, 4 I) in D dims: |m|^2 + D (1 + 4 - 2 * 2) = |m|^2 + D
    dim = 8
    m = np.arange(dim, dtype=np.float64)
    a = fid.FeatureStats(np.zeros(dim), np.eye(dim), 1000)
    b = fid.FeatureStats(m, 4 * np.eye(dim), 1000)
    assert fid.frechet_distance(a, b) == pytest.approx(m @ m + dim)


def test_fewer_samples_than_dimensions_warns_and_explains():
    features = np.random.default_rng(2).normal(size=(20, 32))
    with pytest.warns(fid.SmallSampleWarning, match="rank") as record:
        fid.FeatureStats.from_features(features)
    assert "real-vs-real floor" in str(record[0].message)


def test_statistics_cache_is_keyed_by_content(tmp_path):
    calls = []

    def featurize(x):
        calls.append(len(x))
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)   # (B, 12)

    extractor = fid.Extractor("FD_test", "pool", "abc", featurize, torch.device("cpu"), batch_size=7)
    images = np.random.default_rng(3).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    cache = tmp_path / "ref.npz"
    first = fid.reference_statistics(extractor, images, cache)
    assert calls == [7, 7, 7, 7, 2]                       # batched
    again = fid.reference_statistics(extractor, images, cache)
    assert calls == [7, 7, 7, 7, 2]                       # read from the cache
    np.testing.assert_array_equal(first.sigma, again.sigma)
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    fid.reference_statistics(extractor, changed, cache)
    assert len(calls) == 10                               # other pixels: recomputed


# ------------------------------------------------------------------ offline behaviour
def test_missing_weights_fail_fast_with_a_clear_message(offline):
    start = time.perf_counter()
    with pytest.raises(fid.InceptionWeightsMissing) as error:
        fid.load_inception(device="cpu")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert fid.FID_WEIGHTS_FILENAME in message
    assert str(offline / "hub" / "checkpoints") in message       # where to put it
    assert fid.FID_WEIGHTS_URL in message and "allow_download" in message   # how to get it


def test_command_line_without_weights_exits_with_the_message(offline, tmp_path, capsys):
    assert fid.main([str(tmp_path), str(tmp_path / "gt.csv"), "--device", "cpu"]) == 2
    assert fid.FID_WEIGHTS_FILENAME in capsys.readouterr().err


def test_a_weights_path_that_does_not_exist_is_named(offline, monkeypatch):
    monkeypatch.setenv(fid.WEIGHTS_ENV, "/nowhere/inception.pth")
    with pytest.raises(fid.InceptionWeightsMissing, match="/nowhere/inception.pth"):
        fid.find_inception_weights()


# ------------------------------------------------------------------ the Inception path
def test_inception_loads_from_torch_home_like_pytorch_fid(random_weights, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_weights))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # pytorch-fid's own constructor finds the cached file without downloading
    from pytorch_fid.inception import InceptionV3
    with torch.no_grad():
        expected = InceptionV3([3]).eval()(images)[0].flatten(1).numpy()
    _no_network(monkeypatch)
    with pytest.warns(UserWarning, match="not pytorch-fid's Inception weights"):
        extractor = fid.inception_extractor(device="cpu")
    assert extractor.metric == "FD_inception_unverified"           # random weights: not FID
    features = extractor.features(images)
    assert features.shape == (1, fid.FID_DIMS)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=0)


def test_weights_from_the_environment_variable(random_weights, offline, monkeypatch, tmp_path):
    elsewhere = tmp_path / "my_inception.pth"
    shutil.copy(random_weights / "hub" / "checkpoints" / fid.FID_WEIGHTS_FILENAME, elsewhere)
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(elsewhere))
    assert fid.find_inception_weights() == elsewhere
    assert fid.find_inception_weights(weights=str(elsewhere)) == elsewhere


def test_command_line_on_random_weights_never_says_fid(random_weights, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(random_weights))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    _no_network(monkeypatch)
    rng = np.random.default_rng(4)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(pred / f"{i}.png")
    gt = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    np.savetxt(tmp_path / "gt.csv", gt.reshape(2, -1), fmt="%d", delimiter=",")
    monkeypatch.chdir(tmp_path)
    # The matrix square root of a 2048 x 2048 product takes minutes on a busy 2-core CPU; the
    # arithmetic is tested above, so here only the statistics that reach it are checked.
    seen = []
    monkeypatch.setattr(fid, "frechet_distance", lambda a, b: seen.append((a.n, b.n, a.mu.shape)) or 1.5)
    with pytest.warns(UserWarning):
        assert fid.main([str(pred), str(tmp_path / "gt.csv"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert seen == [(2, 2, (fid.FID_DIMS,))]
    assert out.startswith("FD_inception_unverified: 1.5000") and "FID" not in out
    assert "2 predicted vs 2 ground-truth" in out
    assert len(list((tmp_path / "runs" / "fid-stats").glob("*.npz"))) == 1   # GT stats cached
