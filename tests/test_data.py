"""The toy cats (labkit.data.toycats) and the brush masks (labkit.core.masks)."""

import numpy as np
import pytest
import torch

from labkit.data.holes import brush_mask, make_masks
from labkit.core.masks import pixel_to_token_mask
from labkit.data.toycats import (ATTRIBUTES, draw_cat, mirror_attributes, mirror_labels, render_cat,
                            render_cats, sample_attributes)

SIZE = 32   # the smoke profile's image size


# ----------------------------------------------------------------------------- toy cats

def test_a_cat_depends_only_on_seed_and_index():
    image, attrs = render_cat(3, 5, SIZE)
    again, attrs_again = render_cat(3, 5, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, again)
    assert attrs == attrs_again
    # Same cat whatever else is rendered with it, and in whatever order.
    images, _ = render_cats(3, [7, 5, 1], SIZE)
    np.testing.assert_array_equal(images[1], image)


def test_worker_count_does_not_change_the_dataset():
    one_images, one_labels = render_cats(1, range(12), SIZE, workers=1)
    two_images, two_labels = render_cats(1, range(12), SIZE, workers=2)
    np.testing.assert_array_equal(one_images, two_images)
    assert one_labels.keys() == two_labels.keys()
    for name in one_labels:
        np.testing.assert_array_equal(one_labels[name], two_labels[name])


def test_cats_differ_across_indices_and_seeds():
    images, _ = render_cats(0, range(16), SIZE)
    flat = images.reshape(16, -1).astype(int)
    distance = np.abs(flat[:, None] - flat[None]).mean(-1)
    assert (distance[~np.eye(16, dtype=bool)] > 5).all()   # no near-duplicates
    other_seed, _ = render_cat(1, 0, SIZE)
    assert np.abs(other_seed.astype(int) - images[0]).mean() > 5


def test_labels_are_valid_and_every_value_occurs():
    _, labels = render_cats(0, range(300), SIZE)
    assert list(labels) == list(ATTRIBUTES)
    for name, (kind, values) in ATTRIBUTES.items():
        column = labels[name]
        assert column.shape == (300,)
        if kind == "categorical":
            assert column.dtype == np.int64
            assert set(column.tolist()) == set(range(len(values))), name
        else:
            lo, hi = values
            assert column.dtype == np.float32
            assert lo <= column.min() and column.max() <= hi, name
            assert column.max() - column.min() > 0.5 * (hi - lo), name   # really varies
    # An odd-eyed cat's other eye is never blue.
    odd = labels["odd_eyed"] != ATTRIBUTES["odd_eyed"][1].index("no")
    assert not (labels["eye_colour"][odd] == ATTRIBUTES["eye_colour"][1].index("blue")).any()


def test_any_size_renders_the_same_cat():
    small, _ = render_cat(0, 4, 16)
    large, _ = render_cat(0, 4, 64)
    shrunk = large.reshape(16, 4, 16, 4, 3).mean((1, 3))
    assert np.abs(shrunk - small).mean() < 8


def test_labels_change_the_picture():
    attrs = sample_attributes(np.random.default_rng([0, 0]))
    attrs.update(eyes_closed="no", pupil="round", mouth="w", whiskers="dark")
    base = draw_cat(attrs, SIZE).astype(int)
    for name, value in [("eyes_closed", "yes"), ("pupil", "slit"), ("mouth", "open"),
                        ("whiskers", "none"), ("tilt", -attrs["tilt"]),
                        ("offset_y", -attrs["offset_y"]), ("scale", attrs["scale"] * 0.9)]:
        changed = draw_cat(dict(attrs, **{name: value}), SIZE)
        assert (changed != base).any(-1).sum() >= 8, name    # at least a few pixels differ


def test_mirrored_image_is_the_cat_with_mirrored_labels():
    for index in range(6):
        attrs = sample_attributes(np.random.default_rng([0, index]))
        attrs["tilt"] = 15.0 if index % 2 else -15.0     # make the pose clearly asymmetric
        flipped = draw_cat(attrs, SIZE)[:, ::-1].astype(int)
        mirrored = draw_cat(mirror_attributes(attrs), SIZE).astype(int)
        unmirrored = draw_cat(attrs, SIZE).astype(int)
        assert np.abs(flipped - mirrored).mean() < 2.5            # rasterisation differences only
        assert np.abs(flipped - unmirrored).mean() > 4 * np.abs(flipped - mirrored).mean()


def test_mirror_labels_on_encoded_arrays():
    _, labels = render_cats(0, range(200), SIZE)
    mirrored = mirror_labels(labels)
    np.testing.assert_array_equal(mirrored["tilt"], -labels["tilt"])
    np.testing.assert_array_equal(mirrored["offset_x"], -labels["offset_x"])
    values = ATTRIBUTES["odd_eyed"][1]
    left, right = values.index("blue_left"), values.index("blue_right")
    assert (labels["odd_eyed"] == left).any() and (labels["odd_eyed"] == right).any()
    np.testing.assert_array_equal(mirrored["odd_eyed"] == right, labels["odd_eyed"] == left)
    for name in set(ATTRIBUTES) - {"tilt", "offset_x", "odd_eyed"}:
        np.testing.assert_array_equal(mirrored[name], labels[name])
    twice = mirror_labels(mirrored)
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(twice[name], labels[name])


def test_mirror_labels_on_one_cat():
    _, attrs = render_cat(0, 0, SIZE)
    attrs["odd_eyed"] = "blue_left"
    mirrored = mirror_labels(attrs)
    assert mirrored["odd_eyed"] == "blue_right" and mirrored["tilt"] == -attrs["tilt"]


# ----------------------------------------------------------------------------- masks

def _coverage(masks: np.ndarray, patch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    pixels = masks.reshape(len(masks), -1).mean(1)
    tokens = pixel_to_token_mask(torch.from_numpy(masks), patch).float().mean(1).numpy()
    return pixels, tokens


def test_masks_depend_only_on_seed_and_index():
    masks = make_masks(7, 5, 64, start=10)
    assert masks.shape == (5, 64, 64) and masks.dtype == bool
    for k in range(5):
        np.testing.assert_array_equal(masks[k], brush_mask(7, 10 + k, 64))
    assert (masks[0] != masks[1]).any()
    assert (brush_mask(8, 10, 64) != masks[0]).any()


def test_mask_coverage_matches_the_course_at_64():
    pixels, tokens = _coverage(make_masks(0, 200, 64))
    # Course: about 21-26 % of pixels missing, 37-46 % of the 4x4 tokens.
    assert 0.20 <= pixels.min() and pixels.max() <= 0.28
    assert 0.22 <= pixels.mean() <= 0.25
    assert 0.37 <= tokens.mean() <= 0.46
    assert 0.33 <= np.percentile(tokens, 5) and np.percentile(tokens, 95) <= 0.50
    assert (tokens > pixels).all()   # a token is lost as soon as one of its pixels is


def test_masks_scale_to_the_smoke_size():
    masks = make_masks(0, 100, 32)
    pixels, tokens = _coverage(masks)
    assert 0.20 <= pixels.min() and pixels.max() <= 0.28
    assert (tokens > pixels).all() and (tokens < 1).all()
    assert masks.any((1, 2)).all() and (~masks).any((1, 2)).all()   # never all white / black


def test_pixel_to_token_mask_marks_a_token_iff_any_of_its_pixels_is_missing():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 16, 16)) < 0.03
    tokens = pixel_to_token_mask(torch.from_numpy(masks), 4)
    assert tokens.shape == (3, 16) and tokens.dtype == torch.bool
    expected = masks.reshape(3, 4, 4, 4, 4).any((2, 4)).reshape(3, 16)
    np.testing.assert_array_equal(tokens.numpy(), expected)
    # One missing pixel at row 5, column 9 loses exactly token (1, 2) in row-major order.
    single = np.zeros((1, 1, 16, 16), bool)
    single[0, 0, 5, 9] = True
    assert pixel_to_token_mask(torch.from_numpy(single), 4)[0].nonzero().flatten().tolist() == [6]


def test_pixel_to_token_mask_rejects_sizes_that_do_not_tile():
    with pytest.raises(ValueError, match="multiple"):
        pixel_to_token_mask(torch.zeros(1, 18, 18, dtype=torch.bool), 4)
