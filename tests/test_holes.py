"""The hole families: each lies where it says (placed by the cats' own geometry), True = missing,
seeded, and the training mixture holds every family in its share."""

import numpy as np
import pytest
import torch

from labkit import get_config
from labkit.core.masks import pixel_to_token_mask
from labkit.data.datasets import toy_cats
from labkit.data.holes import (FAMILIES, TRAINING_HOLES, TRAINING_MIXTURE, border_mask, family_masks,
                               half_mask, part_box_mask, random_box_mask, training_token_holes)
from labkit.data.toycats import part_centres, render_cats
from labkit.eval.families import family_holes

SIZE = 64


@pytest.fixture(scope="module")
def cats():
    return render_cats(3, range(12), SIZE)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_seeded_and_true_means_missing(cats, family):
    _, labels = cats
    a = family_masks(family, labels, 5, SIZE)
    assert a.shape == (12, SIZE, SIZE) and a.dtype == bool
    assert np.array_equal(a, family_masks(family, labels, 5, SIZE))
    assert a.any(axis=(1, 2)).all() and not (family != "everything" and a.all())


def test_part_boxes_cover_their_parts_and_only_them(cats):
    _, labels = cats
    centres = part_centres(labels, SIZE)
    for i in range(12):
        for part, names in (("eyes", ("left_eye", "right_eye")), ("mouth", ("mouth",)),
                            ("ears", ("left_ear", "right_ear"))):
            mask = part_box_mask(centres, i, part, SIZE)
            for name in names:
                x, y = np.clip(centres[name][i].round().astype(int), 0, SIZE - 1)
                assert mask[y, x], (part, name, i)
            assert mask.mean() < 0.3                               # a box, not the face
        left = part_box_mask(centres, i, "eye", SIZE, side=-1)
        lx, ly = np.clip(centres["left_eye"][i].round().astype(int), 0, SIZE - 1)
        rx, ry = np.clip(centres["right_eye"][i].round().astype(int), 0, SIZE - 1)
        assert left[ly, lx] and not left[ry, rx]                   # one eye: the other stays visible


def test_the_geometry_follows_the_drawing():
    """The eyes' centres land on the darkest ring of the drawn eye (its outline), not on fur."""
    images, labels = render_cats(0, range(32), SIZE)
    centres = part_centres(labels, SIZE)
    eyes_closed = labels["eyes_closed"].astype(bool)
    for i in np.nonzero(~eyes_closed)[0]:
        x, y = centres["left_eye"][i].round().astype(int)
        patch = images[i, y - 1:y + 2, x - 1:x + 2].astype(int).sum(-1)
        face = images[i, int(centres["face"][i][1]), int(centres["face"][i][0])].astype(int).sum()
        assert patch.min() < face, i                               # the pupil is darker than the face


def test_half_border_and_random_boxes():
    halves = np.stack([half_mask(0, i, SIZE) for i in range(40)])
    assert np.all(halves.mean(axis=(1, 2)) == 0.5)
    sides = halves[:, :, 0].all(1)                                 # the left half hidden
    assert 0 < sides.sum() < 40                                    # both sides come up
    border = border_mask(SIZE)
    assert border[0].all() and border[:, -1].all() and not border[SIZE // 2, SIZE // 2]
    assert border.mean() == pytest.approx(1 - (48 / 64) ** 2)
    boxes = np.stack([random_box_mask(1, i, SIZE) for i in range(40)])
    areas = boxes.sum(axis=(1, 2))
    assert areas.min() >= 12 * 12 - 30 and areas.max() <= 28 * 28 + 60 and len(set(areas)) > 10


def test_unknown_family_and_part_name_the_choices(cats):
    with pytest.raises(ValueError, match="choose one of strokes"):
        family_masks("nose", cats[1], 0, SIZE)
    with pytest.raises(ValueError, match="eye, eyes, ears or mouth"):
        part_box_mask(part_centres(cats[1], SIZE), 0, "tail", SIZE)


def test_the_strokes_family_of_a_test_set_is_its_own_fixed_masks(tmp_path):
    cfg = get_config("smoke")
    test = toy_cats(cfg, "test", tmp_path, progress=False)
    assert torch.equal(family_holes(test, "strokes"), torch.from_numpy(test.masks))
    assert family_holes(test, "mouth").shape == (len(test), cfg.image_size, cfg.image_size)


def test_the_training_mixture_holds_every_family_in_its_share():
    cfg = get_config("cpu", train_mask="families")
    bank = training_token_holes(cfg, 400)
    assert bank.shape == (400, cfg.num_image_tokens) and bank.dtype == torch.bool
    everything = bank.all(1).float().mean()
    assert everything == pytest.approx(TRAINING_MIXTURE["everything"], abs=1 / 400)
    # the brush-stroke training holes ("holes") are another bank, and never the test's masks
    strokes = training_token_holes(cfg.replace(train_mask="holes"), 64)
    test = pixel_to_token_mask(torch.from_numpy(family_masks("strokes", {"x": np.zeros(64)}, 2, 64)), 4)
    assert not (strokes[:, None] == test[None]).all(-1).any()
    assert TRAINING_HOLES == 2048 and sum(TRAINING_MIXTURE.values()) == pytest.approx(1)
