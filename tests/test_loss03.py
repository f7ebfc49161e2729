"""Notebooks 02 and 03: one checkpoint name per run, a seed that drives training, and the
measurements of labkit.teaching.compare (short budgets, scores after every iteration, the injected bug)."""

import itertools
import json
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import torch
from safetensors.torch import load_file

from labkit import MaskGit, get_config, mvtm_loss
from labkit.teaching.compare import (N_SHOWN, LossOnVisibleTokens, score_inpainting, spread_over_iterations,
                            with_budget)
from labkit.eval.scoring import pixel_scores
from labkit.core.frechet import frechet_distance
from labkit.eval.features import Extractor
from labkit.lab.pipeline import prepare_data, stage_mvtm, stage_tokenizer
from labkit.lab.training import mvtm_name, train_mvtm
from labkit.core.vqgan import VQGAN
from labkit.lab.run import RunOptions

CFG = get_config("smoke", train_mask="random", condition=())   # the course's training masks, no condition
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ----------------------------------------------------------------------------- checkpoint names

def test_the_profiles_own_run_is_mvtm_and_every_other_run_names_what_distinguishes_it():
    cpu = get_config("cpu")
    assert mvtm_name(cpu) == "mvtm"                       # what notebooks 04-05 and the CLI load
    assert mvtm_name(cpu.replace(loss="full")) == "mvtm-full-seed0-steps1000"
    assert mvtm_name(cpu.replace(seed=2, label_smoothing=0.0)) == "mvtm-masked-seed2-steps1000-ls0"
    assert mvtm_name(with_budget(cpu, 80).replace(loss="full", seed=1)) == "mvtm-full-seed1-steps80-warmup8-floor0.1"
    assert mvtm_name(cpu.replace(mvtm_lr_floor=0.0)) == "mvtm-masked-seed0-steps1000-floor0"
    assert mvtm_name(cpu.replace(mvtm_lr_floor=0.1, mvtm_lr_hold=0.8)) == "mvtm-masked-seed0-steps1000-floor0.1-hold0.8"
    assert mvtm_name(cpu, variant="bug") == "mvtm-masked-seed0-steps1000-bug"
    # runs that train differently never share a file
    grid = [cpu.replace(loss=loss, seed=seed, mvtm_steps=steps, label_smoothing=smoothing)
            for loss, seed, steps, smoothing in itertools.product(("masked", "full"), (0, 1), (80, 1000), (0.0, 0.1))]
    assert len({mvtm_name(cfg) for cfg in grid}) == len(grid)


def test_notebook_02s_checkpoint_is_the_one_notebook_03_looks_for_at_the_same_budget():
    cpu = get_config("cpu")
    for loss in ("masked", "full"):
        written_by_02 = mvtm_name(cpu.replace(loss=loss, label_smoothing=cpu.label_smoothing))   # -p loss ...
        wanted_by_03 = mvtm_name(with_budget(cpu, cpu.mvtm_steps).replace(loss=loss, seed=0))   # -p steps 1000
        assert written_by_02 == wanted_by_03
    assert mvtm_name(cpu.replace(loss="full")) != "mvtm"


@pytest.mark.parametrize("name", ["02_train_mvtm", "03_loss_comparison"])
def test_notebooks_02_and_03_name_checkpoints_with_mvtm_name_only(name):
    code = "\n".join(cell.source for cell in nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
                     if cell.cell_type == "code")
    assert "mvtm_name(" in code
    assert '"mvtm-' not in code and "f\"mvtm-" not in code and "'mvtm-" not in code


def test_a_seed_other_than_the_profiles_trains_its_own_checkpoint_in_notebook_02(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    monkeypatch.setenv("LABKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    runs = tmp_path / "runs"
    splits = prepare_data(CFG, tmp_path / "data")
    vqgan, _ = stage_tokenizer(CFG, splits, runs, RunOptions(progress=False))
    stage_mvtm(CFG, vqgan, splits, runs, RunOptions(progress=False))       # the profile's run, seed 0: "mvtm"
    seed0 = runs / "smoke" / "mvtm.safetensors"
    before = seed0.read_bytes()
    papermill.execute_notebook(str(NOTEBOOKS / "02_train_mvtm.ipynb"), str(tmp_path / "02.ipynb"),
                               parameters={"seed": 1, "runs_root": str(runs)}, kernel_name="python3",
                               cwd=str(NOTEBOOKS), progress_bar=False)
    seed1 = runs / "smoke" / f"mvtm-masked-seed1-steps{CFG.mvtm_steps}.safetensors"
    assert seed1.is_file()                                  # trained, not the seed-0 file loaded
    assert seed0.read_bytes() == before
    summary = json.loads(seed1.with_suffix(".json").read_text())
    assert summary["config"]["seed"] == 1 and summary["step"] == CFG.mvtm_steps
    weights0, weights1 = load_file(str(seed0)), load_file(str(seed1))
    shared = [key for key in weights0 if key in weights1 and weights0[key].is_floating_point()
              and weights0[key].shape == weights1[key].shape and weights0[key].numel() > 1]
    assert shared and any(not torch.equal(weights0[key], weights1[key]) for key in shared)


# ----------------------------------------------------------------------------- budgets

def test_a_short_budget_keeps_the_warmups_share_and_refuses_nonsense():
    cpu = get_config("cpu")                                   # 1000 steps, warm-up 100
    short = with_budget(cpu, 80)
    assert (short.mvtm_steps, short.warmup_steps) == (80, 8)
    # cpu keeps its rate flat (floor 1.0); a short run decays to 10 % (compare.SHORT_RUN_FLOOR)
    assert (cpu.mvtm_lr_floor, short.mvtm_lr_floor) == (1.0, 0.1)
    assert with_budget(cpu.replace(mvtm_lr_floor=0.0), 80).mvtm_lr_floor == 0.0   # never raised
    assert with_budget(cpu, 2000).mvtm_lr_floor == 1.0       # a longer budget keeps the profile's
    assert with_budget(cpu, 5).warmup_steps == 1              # never 0
    assert with_budget(cpu, cpu.mvtm_steps) == cpu            # the profile's budget: its own run
    assert with_budget(cpu).mvtm_steps == 80                  # None: the profile's short budget
    for bad in (0, -3, 2.5, True, "80"):
        with pytest.raises(ValueError, match="steps"):
            with_budget(cpu, bad)


# ----------------------------------------------------------------------------- the injected bug

def test_the_bug_scores_the_visible_tokens_so_no_gradient_reaches_a_hidden_one():
    torch.manual_seed(0)
    model = LossOnVisibleTokens(CFG)
    logits = torch.randn(2, CFG.num_image_tokens, CFG.num_codebook_vectors, requires_grad=True)
    z = torch.randint(0, CFG.num_codebook_vectors, (2, CFG.num_image_tokens))
    mask = torch.zeros_like(z, dtype=torch.bool)
    mask[:, ::3] = True
    loss = model.loss(logits, z, mask)
    assert loss.item() == pytest.approx(mvtm_loss(logits, z, ~mask, "masked", CFG.label_smoothing).item())
    loss.backward()
    assert logits.grad[mask].abs().max() == 0               # hidden tokens: never asked for
    assert logits.grad[~mask].abs().max() > 0


def test_train_mvtm_trains_the_class_it_is_given_with_the_same_loop(tmp_path):
    tokens = torch.randint(0, CFG.num_codebook_vectors, (32, CFG.num_image_tokens))
    cfg = CFG.replace(mvtm_steps=2)
    vqgan = VQGAN(cfg)
    model, history = train_mvtm(cfg, vqgan, tokens, tmp_path, RunOptions(progress=False, name="bug"), maskgit_class=LossOnVisibleTokens)
    assert type(model) is LossOnVisibleTokens
    correct, correct_history = train_mvtm(cfg, vqgan, tokens, tmp_path, RunOptions(progress=False, name="ok"))
    assert type(correct) is MaskGit
    # the same seed, batches and masks: only the loss differs, so the first step's loss does
    assert history[0]["loss"] != correct_history[0]["loss"]
    reloaded, _ = train_mvtm(cfg, vqgan, tokens, tmp_path, RunOptions(progress=False, name="bug"), maskgit_class=LossOnVisibleTokens)              # the finished checkpoint
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(TypeError, match="subclass of it"):
        train_mvtm(cfg, vqgan, tokens, tmp_path, RunOptions(progress=False, name="x"), maskgit_class=dict)


# ----------------------------------------------------------------------------- scores after every t

def _mean_colour_extractor():
    return Extractor("FD_test", "mean-colour", "-", lambda x: torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1),
                     torch.device("cpu"))


def test_scores_after_every_iteration_match_the_decoding_and_the_distance():
    torch.manual_seed(0)
    maskgit = MaskGit(CFG).eval()
    n = 12
    images = torch.rand(n, 3, CFG.image_size, CFG.image_size)
    masks = torch.zeros(n, 1, CFG.image_size, CFG.image_size, dtype=torch.bool)
    masks[:, :, 8:20, 4:24] = True
    extractor = _mean_colour_extractor()
    reference = extractor.features(images)
    settings = maskgit.decode_settings(gamma="linear", total_iter=3)
    scores = score_inpainting(maskgit, images, masks, extractor, reference, settings, seed=0, batch_size=n)
    assert scores.hole_l1.shape == scores.hole_psnr.shape == (3, n) and scores.fd.shape == (3,)
    assert scores.shown.shape == (3, N_SHOWN, 3, CFG.image_size, CFG.image_size)
    # the same decoding, done by hand: the image after every t, its hole L1 and its distance
    result = maskgit.inpaint(images, masks, settings, torch.Generator().manual_seed(0))
    for t, image in enumerate(result.steps(True), start=1):
        assert np.allclose(scores.per_image("hole_l1", t), pixel_scores(image, images, masks)["hole_l1"].numpy())
        assert scores.mean("FD_test", t) == pytest.approx(frechet_distance(extractor.features(image), reference))
    assert np.allclose(scores.features, extractor.features(result.steps(True)[-1]))
    assert scores.mean("hole_l1") == pytest.approx(float(scores.hole_l1[-1].mean()))
    # in batches, every image is still scored once
    batched = score_inpainting(maskgit, images, masks, extractor, reference, settings, seed=0, batch_size=5)
    assert batched.hole_l1.shape == (3, n) and batched.features.shape == scores.features.shape


def test_the_spread_over_iterations_is_zero_for_a_flat_curve():
    flat = np.tile(np.array([0.2, 0.4, 0.1]), (5, 1))          # (T, n): the same score at every t
    moving = flat + np.arange(5)[:, None] * 0.01
    assert np.array_equal(spread_over_iterations(flat), np.zeros(3))
    assert np.allclose(spread_over_iterations(moving), 0.04)
