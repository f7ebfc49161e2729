"""Scoring inpainting: the one inpaint-and-score routine, the pipeline's table, and sweeps.

Inpainting sweeps: one decode per (schedule, T) gives the same scores as decoding to each
t separately; baselines, floor and CSV are in the table; the per-image scores behind every
row give its noise and paired differences. A random smoke MaskGit and an untrained CatNet
are enough: the test is about bookkeeping, not about good images."""

import csv
import math

import numpy as np
import pytest
import torch

from labkit import MaskGit, get_config, toy_cats
from labkit.lab import pipeline
from labkit.eval.catnet import CatNet, catnet_extractor
from labkit.core.frechet import frechet_distance_batched as frechet
from labkit.core.masks import smooth_fill
from labkit.eval.scoring import BASELINES, METRICS, ROWS, inpaint_and_score, mean_scores
from labkit.data.holes import make_masks
from labkit.eval.metrics import masked_l1
from labkit.lab.pipeline import evaluate_inpainting, format_table
from labkit.teaching.plots import plot_sweep
from labkit.eval.sweep import COLUMNS, SweepPlan, sweep
from labkit.lab.run import RunOptions
from labkit.data.toycats import render_cats

CFG = get_config("smoke")
N = 12

pytestmark = pytest.mark.filterwarnings("ignore::labkit.core.frechet.SmallSampleWarning",
                                        "ignore::scipy.linalg.LinAlgWarning")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    maskgit = MaskGit(CFG).eval()
    net = CatNet(CFG).eval()
    images, _ = render_cats(21, range(2 * N), CFG.image_size)
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(make_masks(21, N, CFG.image_size))
    return maskgit, net, x[:N], masks, x[N:]


@pytest.fixture(scope="module")
def result(setup):
    maskgit, net, images, masks, floor = setup
    return sweep(maskgit, images, masks, plan=SweepPlan(schedules=("cosine", "linear"), total_iters=(1, 3), seed=7, chunk_size=N), extractors=[catnet_extractor(net)], floor_images=floor, catnet=net, progress=False)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_every_t_scores_like_stopping_there(setup, result, schedule):
    maskgit, net, images, masks, _ = setup
    extractor = catnet_extractor(net)
    reference = extractor.statistics(images)
    per_t = [result.value(method="maskgit", schedule=schedule, T=3, t=t, composite=False,
                          metric="FD_catnet") for t in (1, 2, 3)]
    assert len(set(per_t)) == 3                 # the images really differ from t to t
    for t in (1, 2, 3):
        stopped = maskgit.inpaint(images, masks, maskgit.decode_settings(gamma=schedule, total_iter=3, sweet_spot=t), torch.Generator().manual_seed(7))
        for composite in (False, True):
            decoded = stopped.steps(composite)[-1]
            where = dict(method="maskgit", schedule=schedule, T=3, t=t, composite=composite)
            assert result.value(metric="FD_catnet", **where) == pytest.approx(
                extractor.distance(decoded, reference), rel=1e-6)
            assert result.value(metric="hole_l1", **where) == pytest.approx(
                float(masked_l1(decoded, images, masks).mean()), rel=1e-6)


def test_each_setting_is_decoded_once(setup, monkeypatch):
    maskgit, net, images, masks, _ = setup
    calls = []
    original = MaskGit.inpaint

    def counting(self, images, masks, settings, *args, **kwargs):
        calls.append(settings.total_iter)
        return original(self, images, masks, settings, *args, **kwargs)

    monkeypatch.setattr(MaskGit, "inpaint", counting)
    sweep(maskgit, images, masks, plan=SweepPlan(schedules=("cosine", "square"), total_iters=(2, 4), chunk_size=8), extractors=[catnet_extractor(net)], progress=False)
    # 2 chunks x (the one-shot baseline + 2 schedules x 2 values of T), never once per t
    assert sorted(calls) == sorted([1, 2, 4, 2, 4] * 2)


def test_baselines_and_floor_are_in_the_table(setup, result):
    maskgit, net, images, masks, floor = setup
    methods = {row["method"] for row in result.rows}
    assert methods == {"maskgit", "real_vs_real", *BASELINES}
    # T = 1 is the one-shot baseline, scored once (it is the same for every schedule)
    assert not result.select(method="maskgit", T=1)
    one_shot = maskgit.inpaint(images, masks, maskgit.decode_settings(total_iter=1)).steps(False)[-1]
    assert result.value(method="one_shot", metric="hole_l1", composite=False) == pytest.approx(
        float(masked_l1(one_shot, images, masks).mean()), rel=1e-6)
    grey_error = float(masked_l1(torch.full_like(images, 0.5), images, masks).mean())
    assert result.value(method="masked_input", metric="hole_l1") == pytest.approx(grey_error, rel=1e-6)
    smooth_error = float(masked_l1(smooth_fill(images, masks), images, masks).mean())
    assert result.value(method="smooth_fill", metric="hole_l1") == pytest.approx(smooth_error, rel=1e-6)
    floor_fd = catnet_extractor(net).distance(floor, images)
    assert result.value(method="real_vs_real", metric="FD_catnet") == pytest.approx(floor_fd, rel=1e-6)
    fd_rows = result.select(metric="FD_catnet")
    assert all(row["extractor"] == "catnet" and row["extractor_hash"] == "untrained" for row in fd_rows)
    assert all(row["n"] == N for row in result.rows)
    agreement = result.select(method="tokenizer_ceiling", metric="agree_fur_colour", composite=True)
    assert len(agreement) == 1 and 0 <= agreement[0]["value"] <= 1


def test_csv_and_best_settings(result, tmp_path):
    path = result.to_csv(tmp_path / "sweep.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(result.rows)
    best = result.best("FD_catnet", composite=True)
    assert [row["schedule"] for row in best] == ["cosine", "linear"]
    for row in best:
        candidates = result.select(method="maskgit", schedule=row["schedule"], metric="FD_catnet",
                                   composite=True)
        assert row["value"] == min(c["value"] for c in candidates)
    text = result.table("FD_catnet")
    assert "real_vs_real" in text and "tokenizer_ceiling" in text and "untrained" in text


# ---------------------------------------------------------------- the one inpaint-and-score routine
def test_inpaint_and_score_rows_and_metric_names(setup):
    maskgit, _, images, masks, _ = setup
    scored, = inpaint_and_score(maskgit, images, masks, maskgit.decode_settings(choice_temperature=0.0))
    assert list(scored.rows) == list(ROWS) and scored.index == slice(0, N)
    result = maskgit.inpaint(images, masks, maskgit.decode_settings(choice_temperature=0.0))
    assert torch.equal(scored.rows["maskgit"], result.images)
    assert torch.equal(scored.rows["maskgit_raw"], result.raw_steps[-1])
    assert torch.equal(scored.rows["masked_input"], result.masked_input)
    ceiling = maskgit.vqgan.decode_indices(maskgit.encode_to_z(images)[1])
    assert torch.equal(scored.rows["tokenizer_ceiling"], ceiling)
    assert torch.equal(scored.rows["smooth_fill"], smooth_fill(images, masks))
    assert torch.equal(scored.rows["one_shot"], result.steps(True)[0])      # the first iteration
    assert scored.settings == maskgit.decode_settings(choice_temperature=0.0)
    scores = scored.scores()
    assert all(set(row) == set(METRICS) for row in scores.values())
    hole = masks[:, None].expand_as(images)
    grey = torch.stack([(0.5 - images[i][hole[i]]).abs().mean() for i in range(N)])
    torch.testing.assert_close(scores["masked_input"]["hole_l1"], grey)
    # the composite only differs from the truth inside the hole
    torch.testing.assert_close(scores["maskgit"]["image_l1"] * hole[0].numel(),
                               scores["maskgit"]["hole_l1"] * hole.flatten(1).sum(1))
    assert torch.equal(scores["maskgit"]["hole_l1"], scores["maskgit_raw"]["hole_l1"])
    only, = inpaint_and_score(maskgit, images, masks, maskgit.decode_settings(choice_temperature=0.0),
                              baselines=False)
    assert list(only.rows) == ["maskgit", "maskgit_raw"]


def test_smooth_fill_keeps_the_known_pixels_and_interpolates_the_hole():
    size = 32
    ramp = torch.linspace(0, 1, size).expand(size, size)                    # left to right
    images = torch.stack([ramp.expand(3, size, size), torch.full((3, size, size), 0.3),
                          torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))])
    masks = torch.zeros(3, size, size, dtype=torch.bool)
    masks[:, :, 10:14] = True                                                 # a vertical stroke
    masks[:, 20:23, :] = True                                                 # and a horizontal one
    filled = smooth_fill(images, masks)
    known = ~masks[:, None].expand_as(images)
    assert torch.equal(filled[known], images[known])                          # known pixels kept
    torch.testing.assert_close(filled[1], images[1])                          # a flat image: exact
    ramp_error = float(masked_l1(filled[:1], images[:1], masks[:1]))
    grey_error = float(masked_l1(torch.full_like(images[:1], 0.5), images[:1], masks[:1]))
    assert ramp_error < 0.025 and ramp_error < grey_error / 5                # a gradient: close
    alone = torch.cat([smooth_fill(images[i:i + 1], masks[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(filled, alone)                                 # per image
    everything = smooth_fill(images[:1], torch.ones(1, size, size, dtype=torch.bool))
    assert torch.equal(everything, torch.full_like(images[:1], 0.5))         # nothing known: grey


def test_mean_scores_pool_the_images_of_every_batch(setup):
    maskgit, _, images, masks, _ = setup
    settings = maskgit.decode_settings(choice_temperature=0.0)
    whole = mean_scores(list(inpaint_and_score(maskgit, images, masks, settings)))
    parts = list(inpaint_and_score(maskgit, images, masks, settings, batch_size=5))
    assert [scored.index for scored in parts] == [slice(0, 5), slice(5, 10), slice(10, N)]
    parts = mean_scores(parts)
    for row in ROWS:
        for metric in METRICS:
            assert parts[row][metric] == pytest.approx(whole[row][metric], rel=1e-5)


def test_pipeline_evaluation_records_its_settings_and_rows(tmp_path):
    cfg = CFG.replace(gamma_type="square", sweet_spot=3, choice_temperature=1.5)
    torch.manual_seed(0)
    maskgit = MaskGit(cfg).eval()
    test = toy_cats(cfg, "test", root=tmp_path / "data", progress=False)
    summary = evaluate_inpainting(cfg, maskgit, test, tmp_path / "runs", batch_size=6, progress=False)
    assert summary["settings"] == dict(gamma="square", total_iter=4, sweet_spot=3,
                                       choice_temperature=1.5, sample=False, fill=0.5, guidance=0.0)
    assert set(summary["rows"]) == set(ROWS) and summary["n_images"] == len(test)
    assert summary["rows"]["masked_input"]["hole_l1"] > 0
    hole_l1 = {row: scores["hole_l1"] for row, scores in summary["rows"].items()}
    assert summary["gap_closed"] == (hole_l1["masked_input"] - hole_l1["maskgit"]) / (
        hole_l1["masked_input"] - hole_l1["tokenizer_ceiling"])
    assert (tmp_path / "runs" / "smoke" / "inpaint_grid.png").is_file()
    table = format_table(summary)
    assert table.startswith("decoding: square schedule, T=4, t*=3, choice temperature 1.5, argmax")
    assert "(ceiling)" in table


@pytest.mark.parametrize("fresh", [False, True])
def test_fresh_trains_from_scratch(monkeypatch, tmp_path, fresh):
    seen = {}

    def fake_train(name):
        def train(*args, **kwargs):
            seen[name] = (args[-1].resume, args[-2])      # (..., run folder, options)
            raise StopIteration                     # enough: the call is what is checked
        return train

    monkeypatch.setattr(pipeline, "train_vqgan", fake_train("vqgan"))
    monkeypatch.setattr(pipeline, "train_mvtm", fake_train("mvtm"))
    with pytest.raises(StopIteration):
        pipeline.stage_tokenizer(CFG, {"train": None}, tmp_path, RunOptions(resume=not fresh))
    monkeypatch.setattr(pipeline, "extract_tokens", lambda *args, **kwargs: None)
    with pytest.raises(StopIteration):
        pipeline.stage_mvtm(CFG.replace(condition=()), None, {"train": None, "val": None}, tmp_path,
                            RunOptions(progress=False, resume=not fresh))
    assert seen == {"vqgan": (not fresh, tmp_path / "smoke"), "mvtm": (not fresh, tmp_path / "smoke")}


def test_decoded_rows_record_how_they_were_decoded(setup, result):
    maskgit = setup[0]
    for row in result.select(method="maskgit") + result.select(method="one_shot"):
        assert (row["choice_temperature"], row["sample"]) == (maskgit.config.choice_temperature, False)
    assert all(row.get("choice_temperature") is None for row in result.select(method="masked_input"))
    assert result.settings["choice_temperature"] == maskgit.config.choice_temperature
    assert "choice temperature 4.5, argmax tokens, seed 7" in result.table("hole_l1")


# ---------------------------------------------------------------- noise: per-image scores
def test_per_image_scores_give_back_every_row(result):
    where = dict(schedule="cosine", T=3, t=2, composite=False)
    values = result.scores("hole_l1", **where)
    assert values.shape == (N,)
    assert values.mean() == pytest.approx(result.value(method="maskgit", metric="hole_l1", **where), rel=1e-6)
    features = result.scores("FD_catnet", **where)
    assert features.shape[0] == N
    assert float(frechet(features, result.references["FD_catnet"])) == pytest.approx(
        result.value(method="maskgit", metric="FD_catnet", **where), rel=1e-6)
    one_shot = result.scores("hole_l1", method="one_shot", composite=False)
    assert one_shot.mean() == pytest.approx(result.value(method="one_shot", metric="hole_l1", composite=False))
    with pytest.raises(KeyError, match="no scored set"):
        result.scores("hole_l1", schedule="square", T=3, t=2)


def test_differences_are_paired_over_the_same_images(result):
    def row(metric, where):
        return result.value(metric=metric, **dict(dict(method="maskgit"), **where))

    t2 = dict(schedule="cosine", T=3, t=2, composite=False)
    t3 = dict(t2, t=3)
    one = dict(method="one_shot", composite=False)
    per_image = result.scores("hole_l1", **t2) - result.scores("hole_l1", **one)
    d = result.difference("hole_l1", t2, one)
    assert (d.value, d.n) == (pytest.approx(per_image.mean()), N)
    assert d.se == pytest.approx(per_image.std(ddof=1) / math.sqrt(N))
    fd = result.difference("FD_catnet", t2, one, n_boot=20)
    assert fd.value == pytest.approx(row("FD_catnet", t2) - result.value(method="one_shot", metric="FD_catnet",
                                                                         composite=False), rel=1e-6)
    assert fd.se > 0 and fd.n == N and "bootstrap" in fd.how
    # a difference of contrasts: (t=3 - one shot) - (t=2 - one shot) = t=3 - t=2, on the same draws
    both = result.difference("FD_catnet", (t3, one), (t2, one), n_boot=20)
    assert both.value == pytest.approx(row("FD_catnet", t3) - row("FD_catnet", t2), rel=1e-6)
    with pytest.raises(ValueError, match="contrast"):
        result.difference("FD_catnet", (t3, one), t2)


def test_standard_errors_resample_images_and_reference_together(result):
    ses = result.standard_errors("FD_catnet", composite=False, n_boot=6, seed=3)
    assert set(ses) == {(s, 3, t) for s in ("cosine", "linear") for t in (1, 2, 3)}
    features = result.scores("FD_catnet", schedule="linear", T=3, t=2, composite=False)
    reference = result.references["FD_catnet"]
    index = np.random.default_rng(3).integers(0, N, (6, N))
    draws = [float(frechet(features[i], reference[i])) for i in index]
    assert ses["linear", 3, 2] == pytest.approx(np.std(draws, ddof=1), rel=1e-6)
    l1 = result.standard_errors("hole_l1", composite=False)
    values = result.scores("hole_l1", schedule="linear", T=3, t=2, composite=False)
    assert l1["linear", 3, 2] == pytest.approx(values.std(ddof=1) / math.sqrt(N))


def test_a_sweet_spot_stops_the_rows_there_and_keeps_their_numbers(setup, result):
    maskgit, net, images, masks, _ = setup
    stopped = sweep(maskgit, images, masks, plan=SweepPlan(schedules=("linear",), total_iters=(3,), sweet_spot=2, baselines=False, seed=7, chunk_size=N), extractors=[catnet_extractor(net)], catnet=net, progress=False)
    assert sorted({row["t"] for row in stopped.rows}) == [1, 2]
    for t in (1, 2):
        for metric in ("FD_catnet", "hole_l1"):
            where = dict(method="maskgit", schedule="linear", T=3, t=t, composite=True, metric=metric)
            assert stopped.value(**where) == pytest.approx(result.value(**where), rel=1e-6)
    assert "stopped at t* = 2" in stopped.table("hole_l1")
    with pytest.raises(ValueError, match="sweet_spot"):
        sweep(maskgit, images, masks, plan=SweepPlan(total_iters=(3,), sweet_spot=0), progress=False)


def test_plot_sweep_is_linear_zoomed_to_the_curves_with_error_bars(result):
    errors = result.standard_errors("FD_catnet", composite=True, n_boot=10)
    fig = plot_sweep(result, "FD_catnet", composite=True, errors=errors)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    low, high = ax.get_ylim()
    for (schedule, total, t), se in errors.items():
        value = result.value(method="maskgit", schedule=schedule, T=total, t=t, composite=True,
                             metric="FD_catnet")
        assert low <= value - se and value + se <= high
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    for method in ("masked_input", "tokenizer_ceiling", "real_vs_real"):
        value = [row for row in result.select(method=method, metric="FD_catnet")
                 if row["composite"] in (True, None)][0]["value"]
        label = next(label for label in labels if label.endswith((f"{value:.4g}", f"{value:.4g} (off the axis)")))
        assert label.endswith("(off the axis)") == (not low <= value <= high)
