"""The family study: the same images and holes for every method, paired differences that match
the table, verdict sentences that follow from their numbers, and completions that vary."""

import pytest
import torch

from labkit import get_config, toy_cats
from labkit.eval.catnet import CatNet, catnet_extractor
from labkit.eval.families import HIDDEN, completions, family_holes, family_study, hidden_metrics, spread
from labkit.eval.verdicts import follows, parse_verdict
from labkit.lab.training import build_maskgit
from labkit.teaching.painter import HolePainter

pytestmark = pytest.mark.filterwarnings("ignore::labkit.core.frechet.SmallSampleWarning")
CFG = get_config("smoke")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    maskgit, net = build_maskgit(CFG).eval(), CatNet(CFG).eval()
    test = toy_cats(CFG, "test", tmp_path_factory.mktemp("data"), progress=False)
    study = family_study(maskgit, test, ("strokes", "eyes", "ears"), [catnet_extractor(net)], net, progress=False)
    return maskgit, net, test, study


def test_every_family_is_scored_for_every_method_on_the_same_images(setup):
    _, _, test, study = setup
    assert list(study.results) == ["strokes", "eyes", "ears"] and study.settings["n"] == len(test)
    for family, result in study.results.items():
        for method in ("smooth_fill", "one_shot", "argmax", "sampled"):
            for metric in ("FD_catnet", "hole_l1", *hidden_metrics(family)):
                assert result.value(method, metric) == result.value(method, metric)   # not NaN
        holes = family_holes(test, family)
        assert result.pixel_share == pytest.approx(float(holes.float().mean()))
    assert hidden_metrics("eyes") == [f"agree_{name}" for name in HIDDEN["eyes"]]
    assert hidden_metrics("ears") == ["abserr_ear_size", "abserr_ear_angle"] and hidden_metrics("eye") == []


def test_differences_are_paired_and_match_the_table(setup):
    _, _, _, study = setup
    result = study.results["eyes"]
    d = study.difference("eyes", "hole_l1", "smooth_fill", "sampled")
    assert d.value == pytest.approx(result.value("smooth_fill", "hole_l1") - result.value("sampled", "hole_l1"))
    fd = study.difference("eyes", "FD_catnet", "argmax", "sampled", n_boot=20)
    assert fd.value == pytest.approx(result.value("argmax", "FD_catnet") - result.value("sampled", "FD_catnet"), rel=1e-6)
    assert "bootstrap" in fd.how and fd.se > 0


def test_every_verdict_sentence_follows_from_its_numbers(setup):
    _, _, _, study = setup
    lines = study.verdict_lines()
    # per family: the fill in FD, one line per hidden attribute, one shot, argmax
    assert len(lines) == sum(3 + len(hidden_metrics(family)) for family in study.results)
    for line in lines:
        parsed = parse_verdict(line)
        assert parsed is not None and follows(parsed), line
    table = study.table()
    assert "unrelated cat" in table and "agree_pupil" in table and "abserr_ear_size" in table


def test_generation_is_not_a_family_of_the_inpainting_study(setup):
    maskgit, net, test, _ = setup
    with pytest.raises(ValueError, match="generation"):
        family_study(maskgit, test, ("everything",), [], net)


def test_sampled_completions_differ_and_their_spread_is_counted(setup):
    maskgit, net, test, _ = setup
    holes = family_holes(test, "mouth")
    samples = completions(maskgit, test.tensors(), holes, k=3, seed=1)
    assert samples.shape == (3, len(test), 3, CFG.image_size, CFG.image_size)
    assert not torch.equal(samples[0], samples[1])                          # sampled: another cat
    known = ~holes[:, None].expand_as(samples[0])
    assert torch.equal(samples[0][known], test.tensors()[known])            # composites
    varied = spread(net, samples, ("mouth", "pupil", "ear_size"))
    assert set(varied) == {"mouth", "pupil"} and all(1 <= v <= 3 for v in varied.values())


def test_the_painter_decodes_the_hole_it_was_given(setup):
    maskgit, _, test, _ = setup
    painter = HolePainter(maskgit, test.tensors([0])[0])
    assert painter.describe().startswith("no hole yet") and painter.inpaint() is None
    painter.paint_line((2, 4), (2, 28))                    # down the left edge
    tokens = painter.token_hole()
    assert "token rows 0-7, columns 0-0" in painter.describe()      # x 2 +- 2.5 px: the first column
    assert f"{int(tokens.sum())} of {CFG.num_image_tokens} tokens" in painter.describe()
    result = painter.inpaint()
    assert torch.equal(result.trace.initial_mask[0].cpu(), tokens)         # the decode follows the hole
    assert "decoded with" in painter.describe()
    painter.clear()
    assert not painter.mask.any() and painter.result is None
