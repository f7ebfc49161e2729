"""The grader: the reference solutions are "done", and each known bug, injected by
monkeypatching, gets its named diagnosis (mutation tests). Instructor-only: the student copy
does not ship this file (its buggy versions are near the solutions)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import labkit
from labkit.teaching import grade as grade_module
from labkit.core import schedules
from labkit.core.attention import MultiHeadAttention
from labkit.teaching.exercises import EXERCISES, needed_by
from labkit.teaching.grade import ExerciseMissing, grade_one, require
from labkit.core.maskgit import MaskGit


def test_reference_solutions_are_done():
    for exercise in EXERCISES:
        assert grade_one(exercise.name) == ("done", ""), exercise.name


def test_cli_exit_code_and_notebook_call(capsys, monkeypatch):
    assert grade_module.main(["gamma_func"]) == 0
    assert "gamma_func   done" in capsys.readouterr().out
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - r * 2)
    assert grade_module.main(["gamma_func"]) == 1
    with pytest.raises(grade_module.GradeFailed) as caught:
        labkit.grade("gamma_func")                       # the notebooks' check cell
    assert caught.value._render_traceback_()[0].startswith("TODO2 step1-2  gamma_func   wrong")


def diagnosis(name):
    status, message = grade_one(name)
    assert status == "wrong", (status, message)
    return message


# ---- TODO2 step1-2: schedules

def test_square_written_1_minus_r_times_2(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - r * 2)
    assert ("gamma_square(0.75) = -0.5: a mask ratio can't be negative; did you write 1 - r*2 "
            "instead of 1 - r**2?") in diagnosis("gamma_func")


def test_square_written_1_minus_sqrt(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - xp.sqrt(r))
    assert "gamma_square gives the sqrt schedule's values" in diagnosis("gamma_func")


def test_schedule_ends_and_order(monkeypatch):
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: 0.9 * xp.cos(r * math.pi / 2))
    assert "gamma_cosine(0) = 0.9" in diagnosis("gamma_func")
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: xp.cos(r * math.pi / 2) + 0.1 * r)
    assert "gamma(1) must be 0" in diagnosis("gamma_func")
    monkeypatch.setitem(schedules.FORMULAS, "cosine", lambda r, xp: np.where(r == 0.5, 0.95, 1 - r ** 2))
    assert "gamma_cosine must decrease" in diagnosis("gamma_func")


def test_later_exercises_wait_for_the_schedules(monkeypatch):
    def stub(r, xp):
        raise NotImplementedError("TODO2 step1-2: hint")
    monkeypatch.setitem(schedules.FORMULAS, "linear", stub)
    assert grade_one("gamma_func") == ("not yet", "TODO2 step1-2: hint")
    assert grade_one("inpainting") == ("not yet", "needs TODO2 step1-2 (gamma_func) first")


# ---- TODO1: attention

def buggy_attention(scale=True, transpose=True):
    def forward(self, x):
        batch, tokens, _ = x.shape
        if transpose:
            split = self.split_heads
        else:
            def split(t):
                return t.reshape(batch, self.num_heads, tokens, self.head_dim)
        q, k, v = split(self.q_linear(x)), split(self.k_linear(x)), split(self.v_linear(x))
        scores = q @ k.transpose(-2, -1) / (math.sqrt(self.head_dim) if scale else 1.0)
        return self.out_linear(self.merge_heads(self.dropout(scores.softmax(-1)) @ v))
    return forward


def test_attention_without_scale(monkeypatch):
    monkeypatch.setattr(MultiHeadAttention, "forward", buggy_attention(scale=False))
    assert "WITHOUT the 1/sqrt(d_k) scale" in diagnosis("attention")


def test_attention_heads_split_without_transpose(monkeypatch):
    monkeypatch.setattr(MultiHeadAttention, "forward", buggy_attention(transpose=False))
    assert "split with a plain view" in diagnosis("attention")


# ---- TODO2 step1-1: encode_to_z

def test_encode_to_z_grid_shape(monkeypatch):
    original = MaskGit.encode_to_z

    def unflattened(self, x):
        z_q, z = original(self, x)
        return z_q, z.view(x.shape[0], z_q.shape[2], z_q.shape[3])
    monkeypatch.setattr(MaskGit, "encode_to_z", unflattened)
    assert "(B, h, w): flatten the grid" in diagnosis("encode_to_z")


# ---- TODO2 step1-3: training mask and forward

def test_inverted_training_mask(monkeypatch):
    original = MaskGit.random_token_mask
    monkeypatch.setattr(MaskGit, "random_token_mask",
                        lambda self, batch, generator=None, gamma=None: ~original(self, batch, generator, gamma))
    assert "the mask is inverted" in diagnosis("forward")


def test_fixed_half_training_mask(monkeypatch):
    def half(self, batch, generator=None, gamma=None):
        scores = torch.rand(batch, self.num_image_tokens, generator=generator)
        return scores.argsort(1).argsort(1) < self.num_image_tokens // 2
    monkeypatch.setattr(MaskGit, "random_token_mask", half)
    assert "not a fixed half" in diagnosis("forward")


def test_forward_returning_masked_targets(monkeypatch):
    original = MaskGit.forward_tokens

    def masked_targets(self, z, generator=None):
        logits, z, mask = original(self, z, generator)
        return logits, z.masked_fill(mask, self.mask_token_id), mask
    monkeypatch.setattr(MaskGit, "forward_tokens", masked_targets)
    assert "ORIGINAL ids as targets" in diagnosis("forward")


def region_mask(count_from_all: bool, outside: bool):
    """random_token_mask with one of two bugs of the training region (the cpu profile's holes)."""
    def random_token_mask(self, batch, generator=None, gamma=None):
        region = self.training_region(batch, generator)
        gamma = self.gamma_func(gamma or self.config.train_gamma)
        n = self.num_image_tokens
        r = torch.rand(batch, generator=generator)
        hideable = n if region is None or count_from_all else region.sum(1)
        n_masked = torch.ceil(gamma(r) * hideable).long().clamp(1, n)
        scores = torch.rand(batch, n, generator=generator)
        if region is not None and not outside:
            scores = scores.masked_fill(~region, 2.0)
        return scores.argsort(1).argsort(1) < n_masked[:, None]
    return random_token_mask


def test_region_counted_from_all_tokens(monkeypatch):
    monkeypatch.setattr(MaskGit, "random_token_mask", region_mask(count_from_all=True, outside=False))
    assert "from the region's n tokens" in diagnosis("forward")


def test_tokens_hidden_outside_the_region(monkeypatch):
    monkeypatch.setattr(MaskGit, "random_token_mask", region_mask(count_from_all=False, outside=True))
    assert "tokens outside the region were hidden" in diagnosis("forward")


# ---- TODO2 step2: the training step

def buggy_step(zero_grad=True, clip=True):
    def step(maskgit, optimizer, z, generator, grad_clip, check_finite):
        logits, z, mask = maskgit.forward_tokens(z, generator)
        loss = maskgit.loss(logits, z, mask)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(maskgit.transformer.parameters(),
                                              grad_clip if clip else math.inf)
        check_finite(loss, norm)
        optimizer.step()
        return loss, logits, z, mask
    return step


def test_step_without_zero_grad(monkeypatch):
    monkeypatch.setattr("labkit.core.train.mvtm_step", buggy_step(zero_grad=False))
    assert "gradients accumulate" in diagnosis("train_step")


def test_step_without_clipping(monkeypatch):
    monkeypatch.setattr("labkit.core.train.mvtm_step", buggy_step(clip=False))
    assert "clip it with nn.utils.clip_grad_norm_" in diagnosis("train_step")


# ---- TODO3: one decoding iteration

def wrap_inpainting(monkeypatch, change):
    original = MaskGit.inpainting

    def wrapped(self, token_ids, still_masked, n0, m_prev, t, settings, generator=None):
        return change(original, self, token_ids, still_masked, n0, m_prev, t, settings, generator)
    monkeypatch.setattr(MaskGit, "inpainting", wrapped)


def test_temperature_annealed_the_wrong_way(monkeypatch):
    def growing(original, self, ids, still, n0, m_prev, t, settings, gen):
        ratio = t / settings.total_iter                 # noise scaled by tau * t/T
        tau = settings.choice_temperature * ratio / max(1 - ratio, 1e-9)
        return original(self, ids, still, n0, m_prev, t, replace(settings, choice_temperature=tau), gen)
    wrap_inpainting(monkeypatch, growing)
    assert "must anneal to 0" in diagnosis("inpainting")


def test_no_gumbel_noise(monkeypatch):
    wrap_inpainting(monkeypatch, lambda original, self, ids, still, n0, m_prev, t, settings, gen:
                    original(self, ids, still, n0, m_prev, t, replace(settings, choice_temperature=0.0), gen))
    assert "add Gumbel noise" in diagnosis("inpainting")


def test_count_from_the_current_count(monkeypatch):
    wrap_inpainting(monkeypatch, lambda original, self, ids, still, n0, m_prev, t, settings, gen:
                    original(self, ids, still, m_prev, m_prev, t, settings, gen))
    assert "instead of n0 = 40" in diagnosis("inpainting")


def test_known_tokens_not_pinned(monkeypatch):
    def drifting(original, self, ids, still, *rest):
        prediction, mask, m_t = original(self, ids, still, *rest)
        return self.transformer(ids).argmax(-1), mask, m_t
    wrap_inpainting(monkeypatch, drifting)
    assert "known tokens are not pinned" in diagnosis("inpainting")


def test_mask_id_predicted(monkeypatch):
    def predicts_mask(original, self, ids, still, *rest):
        prediction, mask, m_t = original(self, ids, still, *rest)
        return prediction.masked_fill(still & (torch.arange(ids.shape[1]) % 7 == 0), self.mask_token_id), mask, m_t
    wrap_inpainting(monkeypatch, predicts_mask)
    assert "the mask id must never be predicted" in diagnosis("inpainting")


# ---- the gate

def test_require_names_the_missing_exercise(monkeypatch):
    assert [e.name for e in needed_by("04_inpaint")] == ["attention", "encode_to_z", "gamma_func",
                                                         "forward", "train_step"]
    require("04")                                          # all done: nothing
    monkeypatch.setitem(schedules.FORMULAS, "square", lambda r, xp: 1 - r * 2)
    with pytest.raises(ExerciseMissing) as caught:
        require("04")
    lines = caught.value._render_traceback_()
    assert len(lines) == 1 and "TODO2 step1-2 (gamma_func, labkit/core/schedules.py" in lines[0]
    assert "1 - r*2" in lines[0]
