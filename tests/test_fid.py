"""Fréchet distance, FID's Inception path and the offline behaviour of labkit.eval.fid.

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

from labkit.core.frechet import FeatureStats
from labkit.eval import features, fid


def _no_network(monkeypatch):
    """Make any attempt to download fail loudly instead of hanging or succeeding."""
    def refuse(*args, **kwargs):
        raise AssertionError("labkit.eval.fid tried to use the network")
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
    stats_a = FeatureStats.from_features(a)
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
    a = FeatureStats(np.zeros(dim), np.eye(dim), 1000)
    b = FeatureStats(m, 4 * np.eye(dim), 1000)
    assert fid.frechet_distance(a, b) == pytest.approx(m @ m + dim)


def test_fewer_samples_than_dimensions_warns_and_explains():
    features = np.random.default_rng(2).normal(size=(20, 32))
    with pytest.warns(fid.SmallSampleWarning, match="rank") as record:
        FeatureStats.from_features(features)
    assert "real-vs-real floor" in str(record[0].message)


def test_statistics_cache_is_keyed_by_content(tmp_path):
    calls = []

    def featurize(x):
        calls.append(len(x))
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)   # (B, 12)

    extractor = features.Extractor("FD_test", "pool", "abc", featurize, torch.device("cpu"), batch_size=7)
    images = np.random.default_rng(3).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    cache = tmp_path / "ref.npz"
    first = fid.reference_statistics(extractor, images, cache)
    assert calls == [7, 7, 7, 7, 2]                       # batched
    again = fid.reference_statistics(extractor, images, cache)
    assert calls == [7, 7, 7, 7, 2]                       # read from the cache
    np.testing.assert_array_equal(first.sigma, again.sigma)
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    with pytest.warns(UserWarning, match="other images or another extractor"):
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
    rng = np.random.default_rng(8)
    (tmp_path / "pred").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "pred" / f"{i}.png")
    with pytest.warns(fid.SmallSampleWarning):
        assert fid.main([str(tmp_path / "pred"), str(tmp_path / "pred"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fid.FID_WEIGHTS_FILENAME in err


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
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
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


# ------------------------------------------------------------------ bad files and small samples

@pytest.mark.parametrize("damage", ["random bytes", "truncated", "wrong keys", "a tensor", "empty"])
def test_a_bad_weights_file_gets_a_labkit_message(random_weights, offline, tmp_path, damage):
    good = (random_weights / "hub" / "checkpoints" / fid.FID_WEIGHTS_FILENAME).read_bytes()
    bad = tmp_path / "bad.pth"
    if damage == "random bytes":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "truncated":
        bad.write_bytes(good[: len(good) // 3])
    elif damage == "wrong keys":
        torch.save({"conv.weight": torch.zeros(3)}, bad)
    elif damage == "a tensor":
        torch.save(torch.zeros(3), bad)
    else:
        bad.write_bytes(b"")
    with pytest.raises(fid.InceptionWeightsError, match=str(bad)) as error:
        fid.load_inception(weights=str(bad), device="cpu")
    assert "weights_only" not in str(error.value)


def test_a_folder_as_weights_is_called_a_folder(offline, tmp_path):
    with pytest.raises(fid.InceptionWeightsError, match="which is a folder"):
        fid.find_inception_weights(weights=str(tmp_path))


def _pooling_extractor(calls):
    def featurize(x):
        calls.append(len(x))
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)   # (B, 12)
    return features.Extractor("FD_test", "pool", "abc", featurize, torch.device("cpu"), batch_size=50)


@pytest.mark.parametrize("junk", [b"", b"not a zip file", b"PK\x03\x04broken"])
def test_a_corrupt_statistics_cache_is_recomputed_with_a_warning(tmp_path, junk):
    calls = []
    images = np.random.default_rng(3).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    cache = tmp_path / "ref.npz"
    cache.write_bytes(junk)
    with pytest.warns(UserWarning, match="cannot read the statistics cache"):
        fid.reference_statistics(_pooling_extractor(calls), images, cache)
    assert calls == [20]
    fid.reference_statistics(_pooling_extractor(calls), images, cache)
    assert calls == [20]                                  # rewritten: read back this time


@pytest.mark.parametrize("side", ["pred", "gt"])
def test_one_image_fails_before_any_feature_is_extracted(tmp_path, side):
    calls = []
    rng = np.random.default_rng(5)
    for name, count in (("pred", 1 if side == "pred" else 3), ("gt", 1 if side == "gt" else 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(ValueError, match=rf"{tmp_path / side} holds 1 .* at least 2"):
        fid.score_folder(tmp_path / "pred", tmp_path / "gt", _pooling_extractor(calls),
                         tmp_path / "cache.npz")
    assert calls == []


def test_small_samples_get_one_note_on_the_bias(tmp_path):
    rng = np.random.default_rng(6)
    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    with pytest.warns(fid.SmallSampleWarning) as record:
        result = fid.score_folder(tmp_path / "pred", tmp_path / "gt", _pooling_extractor([]),
                                  tmp_path / "cache.npz")
    notes = [str(w.message) for w in record if issubclass(w.category, fid.SmallSampleWarning)]
    assert len(notes) == 1 and "on fewer than 2,048 images" in notes[0]
    assert result["n_pred"] == result["n_gt"] == 20


def test_default_statistics_cache_lives_under_the_runs_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "elsewhere"))
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    path = fid.default_stats_cache(_pooling_extractor([]), images)
    assert path.parent == tmp_path / "elsewhere" / "fid-stats"


def test_statistics_are_written_atomically_and_readable(tmp_path, monkeypatch):
    stats = FeatureStats(np.zeros(3), np.eye(3), 5)
    path = fid.save_stats(stats, tmp_path / "stats.cache", key="k")          # any suffix
    assert fid.load_stats(path)[1] == "k"
    assert path.stat().st_mode & 0o777 == 0o644

    def disk_full(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="disk full"):
        fid.save_stats(stats, tmp_path / "stats.cache", key="other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.cache"]
    assert fid.load_stats(path)[1] == "k"


def test_uint8_images_become_contiguous_floats_as_pytorch_fid_feeds_them():
    images = np.random.default_rng(7).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    floats = features.to_float_images(images)
    assert floats.is_contiguous() and floats.shape == (3, 3, 5, 5)
    # pytorch-fid's ImagePathDataset: ToTensor() per image, then default_collate (a stack)
    expected = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float().div(255) for im in images])
    assert torch.equal(floats, expected)
    assert features.to_float_images(floats.permute(0, 1, 3, 2)).is_contiguous()


# ------------------------------------------------------------------ inputs that are not what they claim
def _folder(path, sizes, seed=0):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, size in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def test_predictions_of_another_size_than_the_course_csv_are_blamed(tmp_path):
    pred = _folder(tmp_path / "pred", [32, 32])
    truth = np.random.default_rng(1).integers(0, 256, (2, 64 * 64 * 3))
    (tmp_path / "gt.csv").write_text("\n".join(",".join(map(str, row)) for row in truth) + "\n")
    assert fid.read_images(tmp_path / "gt.csv").shape == (2, 64, 64, 3)       # the size from the rows
    with pytest.raises(ValueError, match=rf"the predictions in {tmp_path / 'pred'} are 32x32 but the "
                                         rf"ground truth {tmp_path / 'gt.csv'} is 64x64: save the "
                                         r"predictions at 64x64"):
        fid.read_pair(pred, tmp_path / "gt.csv")
    with pytest.raises(ValueError, match="are 32x32 but the ground truth .* is 64x64"):
        fid.read_pair(pred, _folder(tmp_path / "gt", [64, 64]))


def test_one_odd_sized_image_is_refused_by_name_never_resized(tmp_path):
    pred = _folder(tmp_path / "pred", [16, 16, 12, 16])
    with pytest.raises(ValueError, match=rf"{tmp_path / 'pred' / '2.png'} is 12x12 but the other images "
                                         rf"in {tmp_path / 'pred'} are 16x16"):
        fid.read_pair(pred, _folder(tmp_path / "gt", [16, 16]))


def test_statistics_labkit_did_not_write_are_never_overwritten(tmp_path):
    calls = []
    images = np.random.default_rng(3).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    theirs = tmp_path / "theirs.npz"
    np.savez(theirs, mu=np.zeros(12), sigma=np.eye(12))                     # pytorch-fid's own format
    before = theirs.read_bytes()
    with pytest.raises(ValueError, match=rf"{theirs} holds statistics that labkit did not write .* "
                                         "never overwrites them: pass another --stats-cache"):
        fid.reference_statistics(_pooling_extractor(calls), images, theirs)
    assert theirs.read_bytes() == before and calls == []


def test_a_statistics_cache_that_is_a_folder_or_empty_is_refused_before_any_feature(tmp_path):
    calls = []
    images = np.random.default_rng(3).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path} is a folder, but labkit writes a file there"):
        fid.reference_statistics(_pooling_extractor(calls), images, tmp_path)
    with pytest.raises(ValueError, match=r"the statistics cache \(--stats-cache, stats_cache\) is an empty path"):
        fid.score_images(images, images, _pooling_extractor(calls), stats_cache="")
    assert calls == [] and list(tmp_path.iterdir()) == []
