"""CatNet and FD_catnet: label-consistent augmentation, degradations that leave the labels
alone, deterministic training, and a distance that sits at its floor for real images,
rises with noise, holes and mode collapse, and counts a hole for more than a blur.

The FD tests train a small CatNet once for the module: 32x32 cats, catnet_channels
(16, 32, 32) instead of the smoke profile's (8, 16, 16), 512 training cats, 120 steps. The
smoke net also ranks the damage below, but with margins too thin for a test that must
not flake; this one trains in seconds and leaves clear margins.
"""

import math
import signal

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from labkit import ImageSet, get_config
import labkit.eval.catnet as catnet_module
from labkit.eval.catnet import (CATNET_FILE, CatNet, attribute_agreement, augment, catnet_extractor,
                           degrade, load_catnet, load_or_train_catnet, train_catnet)
from labkit.lab.checkpoint import CheckpointError
from labkit.core.frechet import frechet_distance
from labkit.lab.run import RunOptions, TrainingInterrupted, UnfinishedStageError
from labkit.core.train import lr_at
from labkit.data.toycats import ATTRIBUTES, draw_cat, mirror_attributes, render_cats, sample_attributes

SIZE = 32
CFG = get_config("smoke", catnet_channels=(16, 32, 32), catnet_batch_size=32)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, labels = render_cats(11, range(512), SIZE)
    run_dir = tmp_path_factory.mktemp("catnet_run")
    net = train_catnet(CFG.replace(catnet_steps=120), ImageSet(images, labels), run_dir=run_dir, options=RunOptions(progress=False))
    return net, run_dir


@pytest.fixture(scope="module")
def draws():
    """Three independent draws of 150 real cats: reference, another draw, a third."""
    images, _ = render_cats(12, range(450), SIZE)
    x = as_tensor(images)
    return x[:150], x[150:300], x[300:]


# ------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_changes_labels_like_the_renderer(flip):
    """Mirroring / shifting an image gives (up to rasterisation) the cat the renderer draws
    from the augmented labels."""
    attrs = sample_attributes(np.random.default_rng([99, 1]))
    image = as_tensor(draw_cat(attrs, SIZE)[None])
    labels = {name: np.array([attrs[name]]) if ATTRIBUTES[name][0] == "continuous"
              else np.array([ATTRIBUTES[name][1].index(attrs[name])]) for name in ATTRIBUTES}
    shift = torch.tensor([[2, 0]])                                     # 2 pixels to the right
    moved, new_labels = augment(image, labels, torch.tensor([flip]), shift)
    expected = mirror_attributes(attrs) if flip else dict(attrs)
    expected["offset_x"] = float(new_labels["offset_x"][0])
    assert new_labels["offset_x"][0] == pytest.approx((-1 if flip else 1) * attrs["offset_x"] + 2 / SIZE)
    redrawn = as_tensor(draw_cat(expected, SIZE)[None])
    inner = (..., slice(3, -3), slice(3, -3))                         # borders are padding
    error = (moved - redrawn)[inner].abs().mean()
    assert error < 0.02
    assert error < 0.25 * (image - redrawn)[inner].abs().mean()        # far closer than unmoved


def test_degradation_is_seeded_changes_every_chosen_image_and_draws_a_fixed_count():
    images = as_tensor(render_cats(5, range(8), SIZE)[0])
    first = degrade(images, torch.Generator().manual_seed(3), 1.0)
    assert torch.equal(first, degrade(images, torch.Generator().manual_seed(3), 1.0))
    assert not torch.equal(first, degrade(images, torch.Generator().manual_seed(4), 1.0))
    assert ((first - images).abs().flatten(1).mean(1) > 0.005).all()    # every image changed
    assert first.min() >= 0 and first.max() <= 1
    # share 0 changes nothing, yet draws as many numbers as share 1: the stream stays in step
    untouched, used = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(degrade(images, untouched, 0.0), images)
    degrade(images, used, 1.0)
    assert torch.equal(untouched.get_state(), used.get_state())


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), "half"])
def test_the_degraded_share_is_validated(share):
    with pytest.raises(ValueError, match=r"catnet_degrade=.*expected a number in \[0, 1\]"):
        get_config("smoke", catnet_degrade=share)


def test_a_net_trained_with_other_degradations_is_refused(tmp_path):
    images, labels = render_cats(5, range(32), SIZE)
    plain = get_config("smoke", catnet_degrade=0.0)
    train_catnet(plain.replace(catnet_steps=2), ImageSet(images, labels), run_dir=tmp_path, options=RunOptions(progress=False))
    assert load_catnet(tmp_path, plain).extra["degrade"] == 0.0
    with pytest.raises(CheckpointError, match="catnet_degrade=0.0 but the config asks for 0.5"):
        load_catnet(tmp_path, get_config("smoke"))
    with pytest.raises(CheckpointError, match="Delete it"):
        train_catnet(get_config("smoke").replace(catnet_steps=2), ImageSet(images, labels), run_dir=tmp_path, options=RunOptions(progress=False))


# ------------------------------------------------------------------ training and checkpoint
def test_training_is_deterministic_and_the_checkpoint_reloads(tmp_path):
    cfg = get_config("smoke")
    images, labels = render_cats(5, range(32), SIZE)
    first = train_catnet(cfg.replace(catnet_steps=3), ImageSet(images, labels), run_dir=tmp_path / "a", options=RunOptions(progress=False))
    second = train_catnet(cfg.replace(catnet_steps=3), ImageSet(images, labels), run_dir=tmp_path / "b", options=RunOptions(progress=False))
    for (name, p), q in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(p, q), name
    loaded = load_catnet(tmp_path / "a", cfg)
    # The hash names the weights: the two runs' files differ (training times in the
    # metadata), their hashes must not; another net's hash must.
    assert (tmp_path / "a" / CATNET_FILE).read_bytes() != (tmp_path / "b" / CATNET_FILE).read_bytes()
    assert loaded.checkpoint_hash == first.checkpoint_hash == second.checkpoint_hash
    other = train_catnet(cfg.replace(catnet_steps=4), ImageSet(images, labels), options=RunOptions(progress=False))
    assert other.checkpoint_hash not in (first.checkpoint_hash, "untrained")
    x = as_tensor(images[:4])
    assert torch.equal(loaded.forward_features(x), first.eval().forward_features(x))
    assert loaded.forward_features(x).shape == (4, 2 * cfg.catnet_channels[-1])
    with pytest.raises(CheckpointError, match="catnet_channels"):
        load_catnet(tmp_path / "a", get_config("smoke", catnet_channels=(8, 16, 32)))


def test_trained_once_then_loaded(tmp_path, monkeypatch):
    cfg = get_config("smoke", catnet_steps=2)
    first = load_or_train_catnet(cfg, tmp_path / "run", progress=False, data=tmp_path / "data")
    assert (tmp_path / "run" / CATNET_FILE).is_file() and (tmp_path / "data").is_dir()
    assert "acc_fur_colour" in first.extra["val"]                    # validated on the val split

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the checkpoint exists")
    monkeypatch.setattr(catnet_module, "train_catnet", no_training)
    again = load_or_train_catnet(cfg, tmp_path / "run", progress=False, data=tmp_path / "data")
    assert again.checkpoint_hash == first.checkpoint_hash


def test_catnet_uses_the_shared_schedule_at_its_config_rate(monkeypatch):
    cfg = get_config("smoke", catnet_lr=1e-3, log_every=1)
    images, labels = render_cats(5, range(32), SIZE)
    seen = []

    def recording_lr_at(step, peak, warmup, total):
        seen.append((step, peak, warmup, total))
        return lr_at(step, peak, warmup, total)

    monkeypatch.setattr(catnet_module, "lr_at", recording_lr_at)
    net = train_catnet(cfg.replace(catnet_steps=4), ImageSet(images, labels), options=RunOptions(progress=False))
    assert seen == [(step, 1e-3, 0, 4) for step in range(4)]          # no warmup, 0-based steps
    lrs = [entry["lr"] for entry in net.metrics]
    assert lrs == [lr_at(step, 1e-3, 0, 4) for step in range(4)]
    # the cosine CatNet had before: from the peak down to 10 % of it, steps counted from 1
    assert lrs == pytest.approx([1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - 1) / 4)))
                                 for step in range(1, 5)], rel=1e-12)


def test_catnet_stopped_by_ctrl_c_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = get_config("smoke", ckpt_every=100)
    images, labels = render_cats(5, range(32), SIZE)
    full = train_catnet(cfg.replace(catnet_steps=6), ImageSet(images, labels), run_dir=tmp_path / "full", options=RunOptions(progress=False))

    def ctrl_c_during_step_3(step, *args):
        if step == 2:
            signal.raise_signal(signal.SIGINT)
        return lr_at(step, *args)

    monkeypatch.setattr(catnet_module, "lr_at", ctrl_c_during_step_3)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3 of 6"):
        train_catnet(cfg.replace(catnet_steps=6), ImageSet(images, labels), run_dir=tmp_path / "stopped", options=RunOptions(progress=False))
    monkeypatch.setattr(catnet_module, "lr_at", lr_at)
    with pytest.raises(UnfinishedStageError, match="stopped at step 3 of 6"):
        load_catnet(tmp_path / "stopped", cfg)
    resumed = train_catnet(cfg.replace(catnet_steps=6), ImageSet(images, labels), run_dir=tmp_path / "stopped", options=RunOptions(progress=False))
    assert resumed.checkpoint_hash == full.checkpoint_hash
    assert load_catnet(tmp_path / "stopped", cfg).checkpoint_hash == full.checkpoint_hash


def test_the_default_run_folder_is_the_shared_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
    cfg = get_config("smoke", catnet_steps=2)
    net = load_or_train_catnet(cfg, progress=False, data=tmp_path / "data")
    assert load_catnet(tmp_path / "runs" / "smoke", cfg).checkpoint_hash == net.checkpoint_hash


def test_images_without_attribute_labels_are_refused():
    images, _ = render_cats(5, range(4), SIZE)
    with pytest.raises(ValueError, match="use FID"):
        train_catnet(get_config("smoke").replace(catnet_steps=1), ImageSet(images, {}), options=RunOptions(progress=False))


def test_the_trained_net_reads_attributes(trained, draws):
    net, _ = trained
    images, labels = render_cats(13, range(200), SIZE)
    predicted = net.predict(images)
    # 120 steps only: fur colour clearly above the majority class; the face's position far
    # better than guessing the middle of its range.
    majority = np.bincount(labels["fur_colour"]).max() / len(images)
    assert (predicted["fur_colour"] == labels["fur_colour"]).mean() > majority + 0.1
    lo, hi = ATTRIBUTES["offset_x"][1]
    guess_error = np.abs((lo + hi) / 2 - labels["offset_x"]).mean()
    assert np.abs(predicted["offset_x"] - labels["offset_x"]).mean() < 0.5 * guess_error


def test_attribute_agreement(trained, draws):
    net, _ = trained
    real, _, _ = draws
    same = attribute_agreement(net, real, real)
    assert all(v == 1 for k, v in same.items() if k.startswith("agree_"))
    assert all(v == 0 for k, v in same.items() if k.startswith("abserr_"))
    blurred = attribute_agreement(net, TF.gaussian_blur(real, 5, 2.0), real, per_image=True)
    assert blurred["agree_fur_colour"].shape == (len(real),)
    assert blurred["agree_pattern"].mean() < 1


# ------------------------------------------------------------------ FD_catnet
def with_grey_square(images, half):
    """A grey square hole of side 2 * half in the middle of every image."""
    out = images.clone()
    centre = SIZE // 2
    out[..., centre - half:centre + half, centre - half:centre + half] = 0.5
    return out


def _fd(extractor, images, reference):
    return frechet_distance(extractor.statistics(images), reference)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")   # collapse: a singular covariance
def test_fd_catnet_floor_and_damage(trained, draws):
    net, run_dir = trained
    extractor = catnet_extractor(net)
    assert extractor.metric == "FD_catnet" and extractor.checkpoint_hash == load_catnet(run_dir).checkpoint_hash
    reference, other, third = draws
    ref = extractor.statistics(reference)
    floor = _fd(extractor, other, ref)
    # An independent real draw sits at the floor: another one lands close to it.
    assert 0.5 < _fd(extractor, third, ref) / floor < 2
    generator = torch.Generator().manual_seed(0)
    damage = {
        "blur": [TF.gaussian_blur(other, 5, 1.0), TF.gaussian_blur(other, 9, 2.0)],
        "noise": [(other + s * torch.randn(other.shape, generator=generator)).clamp(0, 1)
                  for s in (0.15, 0.3)],
        "holes": [with_grey_square(other, half) for half in (5, 8)],
        "mode collapse": [other[torch.arange(150) % 10], other[torch.arange(150) % 2]],
    }
    fd = {kind: [_fd(extractor, images, ref) for images in pair] for kind, pair in damage.items()}
    for kind in ("noise", "holes", "mode collapse"):
        mild_fd, strong_fd = fd[kind]
        assert floor * 1.3 < mild_fd < strong_fd, (kind, floor, mild_fd, strong_fd)
    # Blur is what the net learnt to ignore (catnet_degrade): missing content counts for more.
    assert fd["blur"][0] < fd["holes"][0] and fd["blur"][1] < fd["holes"][1], (fd, floor)


def test_wrong_image_size_is_explained(trained):
    net, _ = trained
    with pytest.raises(ValueError, match="32x32"):
        net.forward_features(torch.rand(1, 3, 64, 64))


def test_untrained_net_is_labelled_untrained():
    assert catnet_extractor(CatNet(get_config("smoke"))).checkpoint_hash == "untrained"
